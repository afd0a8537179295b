"""The line-side runtime works on a machine without the training stack: torch/timm/sklearn/skimage blocked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
from runtime_fixtures import blob_image, build_package

BLOCKER = textwrap.dedent(
    """
    import sys
    BLOCKED = {"torch", "timm", "sklearn", "skimage", "torchvision", "tqdm", "onnxscript", "scipy", "safetensors"}

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r} (blocked in this test)", name=name)
            return None

    sys.meta_path.insert(0, Block())
    """
)

SCRIPT = BLOCKER + textwrap.dedent(
    """
    import json
    import cv2
    import edge_ad.runtime as rt
    import edge_ad.imageio, edge_ad.runtime.signing, edge_ad.plc.opcua_security, edge_ad.plc.inspector  # line side
    import edge_ad.traceability, edge_ad.pipeline.mqtt, edge_ad.cli.results, edge_ad.cli.serve  # station side
    import edge_ad.hmi.app, edge_ad.hmi.auth, edge_ad.capture, edge_ad.cli.capture, edge_ad.cli.hmi_user
    import edge_ad.station.config, edge_ad.station.recorders, edge_ad.services, edge_ad.pipeline.stream, edge_ad.cli.run
    from edge_ad.cli.main import main
    pkg_dir, image, out = sys.argv[1:4]
    det = rt.Detector.load(pkg_dir, backend="auto")
    res = det.predict(image)
    overlay = rt.render_overlay(cv2.imread(image), res)
    rc = main(["predict", pkg_dir, image, "--out", out])
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED | {"onnx", "jsonschema"})
    print(json.dumps({"status": res.status, "regions": len(res.regions), "rc": rc, "leaked": leaked,
                      "overlay": list(overlay.shape)}))
    """
)


def test_runtime_runs_with_training_stack_blocked(tmp_path: Path) -> None:
    pkg = build_package(tmp_path / "pkg")
    img = tmp_path / "part.png"
    cv2.imwrite(str(img), blob_image())
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(pkg), str(img), str(tmp_path / "out")],
                          check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report == {"status": "NG", "regions": 1, "rc": 0, "leaked": [], "overlay": [200, 300, 3]}


def test_blocker_really_blocks(tmp_path: Path) -> None:
    code = BLOCKER + "import numpy\ntry:\n    import torch\nexcept ImportError as e:\n    print('blocked', e)\n"
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("blocked"), proc.stdout + proc.stderr


def test_lab_commands_on_the_line_side_install_say_what_to_install(tmp_path: Path) -> None:
    """Without the training stack, lab commands exit 2 with the install hint instead of a traceback."""
    code = BLOCKER + textwrap.dedent(
        """
        from edge_ad.cli.main import main
        sys.exit(main(sys.argv[1:]))
        """
    )
    for cmd in (
        ["weights", "import", "dinomaly-s", str(tmp_path / "w.pth")],
        ["synth", str(tmp_path / "s")],
        ["demo", "--out", str(tmp_path / "d")],
        ["export", "--model", "dinomaly-tiny", "--out", str(tmp_path / "e")],
        ["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--data", str(tmp_path)],
    ):
        proc = subprocess.run([sys.executable, "-c", code, *cmd], check=False, capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 2, (cmd, proc.stderr)
        assert "needs the lab side" in proc.stderr and "edge-ad[train]" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr, proc.stderr
    helptext = subprocess.run([sys.executable, "-c", code, "--help"], check=False, capture_output=True, text=True,
                              timeout=60, env={**os.environ, "COLUMNS": "250"}).stdout
    assert helptext.count("needs edge-ad[train]") == 7 and "predict" in helptext
    models = subprocess.run([sys.executable, "-c", code, "models", "--json"], check=False, capture_output=True,
                            text=True, timeout=60)  # the catalogue needs no torch
    assert models.returncode == 0 and "dinomaly-s" in models.stdout, models.stderr
