"""Packaging: the wheel carries the export profiles and calibration manifests (read with importlib.resources), the
package list in pyproject is complete, every registered model has both files, and a wheel installed outside the
source tree exports with them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge_ad.errors import ConfigError
from edge_ad.export.profile import load_profile
from edge_ad.models.catalog import CARDS

pytestmark = pytest.mark.slow  # trains/exports models or starts real peers: not in `make test-fast`

ROOT = Path(__file__).resolve().parents[1]
tomllib = pytest.importorskip("tomllib")


def test_pyproject_lists_every_package() -> None:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {".".join(p.relative_to(ROOT).parent.parts) for p in (ROOT / "edge_ad").rglob("__init__.py")}
    mapped = set(cfg["package-dir"])
    assert set(cfg["packages"]) == found | mapped | {"edge_ad.schemas"}
    assert {cfg["package-dir"]["edge_ad.export_profiles"], cfg["package-dir"]["edge_ad.calibration_manifests"]} == \
        {"export_profiles", "calibration"}


def test_every_model_ships_a_profile_and_a_calibration_manifest() -> None:
    for name in CARDS:
        assert (ROOT / "export_profiles" / f"{name}.yaml").is_file(), name
        assert (ROOT / "calibration" / f"{name}.yaml").is_file(), name
    with pytest.raises(ConfigError, match="no export profile"):
        load_profile("dinomaly-xxl")


@pytest.mark.slow
def test_an_installed_wheel_exports_with_its_bundled_profiles(tmp_path: Path) -> None:
    wheels, target, work = tmp_path / "wheels", tmp_path / "site", tmp_path / "work"
    work.mkdir()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
                    str(ROOT)], check=True, capture_output=True, timeout=300)
    wheel = next(wheels.glob("edge_ad-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    env = {**os.environ, "PYTHONPATH": str(target)}  # the wheel, not the source tree (cwd is elsewhere)
    probe = ("import json, edge_ad; from edge_ad.export.profile import load_profile; "
             "from edge_ad.export.calibration import load_calibration_config as c; r = load_profile('mambaad-tiny'); "
             "print(json.dumps({'file': edge_ad.__file__, 'profile': r['source'], 'keep': r['fp16']['keep_fp32'], "
             "'calib': c('mambaad-tiny').source, 'exclude': list(c('mambaad-tiny').exclude)}))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=work, env=env, capture_output=True, text=True,
                         timeout=120, check=True)
    got = json.loads(out.stdout)
    assert got["file"].startswith(str(target))
    assert got["profile"].startswith(str(target / "edge_ad" / "export_profiles"))
    assert got["keep"] == ["/self_attention/scan/"] and got["calib"].startswith(str(target))
    assert got["exclude"], "the int8 exclusion list of the shipped manifest was lost"
    run = subprocess.run([sys.executable, "-m", "edge_ad.cli.main", "export", "--model", "dinomaly-tiny", "--out",
                          str(work / "pkg")], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    man = json.loads((work / "pkg" / "manifest.json").read_text())
    assert man["training"]["profile"].startswith(str(target / "edge_ad" / "export_profiles"))
