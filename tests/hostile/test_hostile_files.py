"""Pickle and symlink attacks on every file edge-ad reads. Each file is replaced by a pickle whose unpickling would
create a marker file: every reader refuses it with a clear error (or, where the file is a cache, ignores it), and
the marker never appears, so nothing the project reads is ever unpickled."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import pytest
from hostile_tally import Tally
from runtime_fixtures import blob_image

MARKER = Path("/tmp/edge-ad-hostile-pickle-ran")


class Payload:
    """Unpickling this creates MARKER (harmless stand-in for arbitrary code)."""

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(MARKER), "w"))


EVIL = pickle.dumps(Payload())
YAML_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi"))


@pytest.fixture(autouse=True)
def _no_marker() -> Any:
    MARKER.unlink(missing_ok=True)
    yield
    assert not MARKER.exists(), "a pickle was unpickled"


def _copy(package: Path, dst: Path) -> Path:
    shutil.copytree(package, dst)
    return dst


def test_every_reader_refuses_a_pickle(package: Path, tmp_path: Path, tally: Tally,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from edge_ad.evaluate import rundir
    from edge_ad.export.calibration import load_calibration_config
    from edge_ad.export.int8 import load_scales
    from edge_ad.export.profile import load_profile
    from edge_ad.imageio import read_image
    from edge_ad.models import weights
    from edge_ad.plc.opcua_security import load_users
    from edge_ad.runtime import Detector
    from edge_ad.runtime.package import load_package, sign_package
    from edge_ad.runtime.signing import keygen, load_public_key
    from edge_ad.train.options import resolve_config
    from edge_ad.train.resume_state import load_state

    def evil_file(name: str) -> Path:
        p = tmp_path / "evil" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(EVIL)
        return p

    # a run directory whose every file is a pickle
    run = tmp_path / "run"
    run.mkdir()
    for n in (rundir.CONFIG, rundir.RUN_INFO, rundir.THRESHOLDS, rundir.VAL_SPLIT, rundir.WEIGHTS, rundir.CHECKPOINT,
              rundir.LEGACY_CHECKPOINT):
        (run / n).write_bytes(EVIL)
    monkeypatch.setenv("EDGE_AD_HOME", str(tmp_path / "home"))
    (tmp_path / "home" / "weights").mkdir(parents=True)
    (tmp_path / "home" / "weights" / "index.json").write_bytes(EVIL)
    priv, pub = keygen(tmp_path / "k.pem")
    signed = _copy(package, tmp_path / "signed")
    sign_package(signed, priv)
    (signed / "signature.json").write_bytes(EVIL)
    pkg_manifest = _copy(package, tmp_path / "pkg_manifest")
    (pkg_manifest / "manifest.json").write_bytes(EVIL)

    readers: dict[str, Callable[[], Any]] = {
        "manifest.json": lambda: load_package(pkg_manifest),
        "signature.json": lambda: load_package(signed, trusted_keys=[pub]),
        "image": lambda: read_image(evil_file("part.png")),
        "int8 scales": lambda: load_scales(evil_file("x.scales.json")),
        "export profile": lambda: load_profile("dinomaly-s", evil_file("profile.yaml")),
        "calibration manifest": lambda: load_calibration_config("dinomaly-s", evil_file("calib.yaml")),
        "training config": lambda: resolve_config({}, evil_file("train.yaml"), {}),
        "run config.yaml": lambda: rundir.read_config(run),
        "run (load_run)": lambda: rundir.load_run(run),
        "run val_split.json": lambda: rundir.holdout(run),
        "resume state": lambda: load_state(run / rundir.CHECKPOINT),
        "weights .pth": lambda: weights.load_state_dict_file(evil_file("enc.pth")),
        "weights .pt": lambda: weights.load_state_dict_file(evil_file("enc.pt")),
        "weights .safetensors": lambda: weights.load_state_dict_file(evil_file("enc.safetensors")),
        "weights index": lambda: weights.list_weights(),
        "OPC UA users": lambda: load_users(evil_file("users.yaml")),
        "trusted public key": lambda: load_public_key(evil_file("pub.pem")),
        "private key": lambda: sign_package(package, evil_file("priv.pem")),
        "Detector.load manifest": lambda: Detector.load(pkg_manifest, backend="onnxruntime"),
    }
    for name, fn in readers.items():
        tally.attempt("pickle-attack", name, fn)
    # YAML alias bombs in the YAML readers
    for name, fn in {"training config": lambda: resolve_config({}, _yaml_bomb(tmp_path / "b1.yaml"), {}),
                     "export profile": lambda: load_profile("dinomaly-s", _yaml_bomb(tmp_path / "b2.yaml")),
                     "OPC UA users": lambda: load_users(_yaml_bomb(tmp_path / "b3.yaml"))}.items():
        tally.attempt("yaml-bomb", name, fn)
    tally.check("pickle-attack", "yaml-bomb")


def _yaml_bomb(p: Path) -> Path:
    p.write_text(YAML_BOMB)
    return p


def test_caches_ignore_a_pickle(package: Path, tmp_path: Path, tally: Tally) -> None:
    """Caches are rebuilt, not trusted: an engine index, a client allow-list or a certificate that is a pickle."""
    from edge_ad.runtime.trt.cache import list_engines

    pkg = _copy(package, tmp_path / "pkg")
    (pkg / "engines").mkdir()
    (pkg / "engines" / "index.json").write_bytes(EVIL)

    def engines_ignored() -> None:
        assert list_engines(pkg) == []

    tally.attempt("cache-pickle", "engine index", engines_ignored, bad=False)
    pytest.importorskip("asyncua")
    from edge_ad.plc.opcua_security import (
        SERVER_URI,
        certificate_allow_list,
        ensure_certificate,
    )

    trust = tmp_path / "trust"
    trust.mkdir()
    (trust / "evil.der").write_bytes(EVIL)
    tally.attempt("cache-pickle", "OPC UA trust dir", lambda: certificate_allow_list(trust), bad=False)
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "server_cert.der").write_bytes(EVIL)
    (certs / "server_key.pem").write_bytes(EVIL)
    tally.attempt("cache-pickle", "OPC UA certificate", lambda: ensure_certificate(certs, "server", SERVER_URI),
                  bad=False)
    assert (certs / "server_cert.der").read_bytes() != EVIL  # replaced by a fresh certificate
    tally.check("cache-pickle")


def test_symlink_attacks_on_inputs(package: Path, tmp_path: Path, tally: Tally,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Input folders with a link loop, links to devices and to a directory outside: nothing hangs or escapes."""
    from edge_ad.cli.main import main
    from edge_ad.sources.folder import FolderSource

    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / "good.png"), blob_image())
    (folder / "loop").symlink_to(folder)  # a directory link back to itself
    (folder / "zero.png").symlink_to("/dev/zero")
    (folder / "urandom.jpg").symlink_to("/dev/urandom")
    outside = tmp_path / "secret"
    outside.mkdir()
    cv2.imwrite(str(outside / "secret.png"), blob_image())
    (folder / "elsewhere").symlink_to(outside)

    def folder_source() -> None:
        frames = list(FolderSource(folder))
        assert [Path(f.meta()["file"]).name for f in frames] == ["good.png"], frames

    tally.attempt("symlink-attack", "folder source", folder_source, bad=False)
    out = tmp_path / "out"

    def predict() -> None:
        assert main(["predict", str(package), str(folder), "--out", str(out)]) == 0, capsys.readouterr().err
        lines = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
        assert [Path(x["file"]).name for x in lines] == ["good.png"], lines

    tally.attempt("symlink-attack", "edge-ad predict on the folder", predict, bad=False)
    # an earlier results.jsonl that lists paths outside OUT: cleaning never deletes them
    victim = tmp_path / "victim.png"
    victim.write_bytes(b"keep me")
    (out / "results.jsonl").write_text(json.dumps({"overlay": str(victim)}) + "\n" +
                                       json.dumps({"overlay": "../victim.png"}) + "\n")
    tally.attempt("symlink-attack", "stale results naming outside files", predict, bad=False)
    assert victim.read_bytes() == b"keep me"
    tally.check("symlink-attack")
    assert os.path.exists(outside / "secret.png")
