"""Package integrity: the digest over manifest + files, bounded JSON, ranges with field names, symlinks and paths,
Ed25519 signing (keygen/sign CLI, trusted keys by argument and environment, unsigned / other key / re-signed)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from runtime_fixtures import blob_image, build_package

from edge_ad.cli.main import main
from edge_ad.errors import PackageError
from edge_ad.runtime import Detector
from edge_ad.runtime.package import load_package, manifest_digest

pytest.importorskip("cryptography")


@pytest.fixture
def pkg(tmp_path: Path) -> Path:
    return build_package(tmp_path / "pkg")


def edit(pkg: Path, change: Callable[[dict[str, Any]], None], redigest: bool = True) -> None:
    """Edit manifest.json as an attacker would; `redigest` also recomputes the digest so only the checks after it
    can catch the edit."""
    path = pkg / "manifest.json"
    man = json.loads(path.read_text())
    change(man)
    if redigest:
        man["digest"] = manifest_digest(man)
    path.write_text(json.dumps(man))


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(man: dict[str, Any]) -> None:
        *head, last = path.split(".")
        node = man
        for k in head:
            node = node[k]
        node[last] = value

    return change


def test_edited_manifest_fails_the_digest(pkg: Path) -> None:
    edit(pkg, _set("thresholds.image.value", 0.9), redigest=False)
    with pytest.raises(PackageError, match="digest mismatch: the manifest was changed after export"):
        load_package(pkg)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("thresholds.image.value", 1e308, "thresholds.image.value"),
    ("thresholds.image.value", -1.0, r"thresholds.image.value: expected within \[score_min, score_max\]"),
    ("thresholds.pixel.value", 0.0, None),  # 0 is inside the pixel range [0, 1] of the fixture: accepted
    ("thresholds.normalization.score_min", 2.0, "expected score_min < score_max"),
    ("input.preprocess.std", [0.2, 0.0, 0.2], "input.preprocess.std"),
    ("input.preprocess.mean", [0.5, 1e9, 0.5], "input.preprocess.mean"),
    ("input.preprocess.resize", [40000, 40000], "input.preprocess.resize"),
    ("postprocess.mask_blur_sigma", 1e6, "postprocess.mask_blur_sigma"),
    ("postprocess.morph_open_px", 100000, "postprocess.morph_open_px"),
    ("postprocess.min_region_area_px", -5, "postprocess.min_region_area_px"),
    ("schema_version", 1, "re-export"),
])
def test_out_of_range_values_are_refused_at_load_with_their_field(pkg: Path, field: str, value: Any,
                                                                  message: str | None) -> None:
    edit(pkg, _set(field, value))
    if message is None:
        load_package(pkg)
        return
    with pytest.raises(PackageError, match=message):
        load_package(pkg)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_literals_are_refused(pkg: Path, literal: str) -> None:
    path = pkg / "manifest.json"
    text = json.dumps(json.loads(path.read_text()))
    path.write_text(text.replace('"value": 0.5', f'"value": {literal}', 1))
    with pytest.raises(PackageError, match="NaN and Infinity are not allowed"):
        load_package(pkg)
    with pytest.raises(PackageError):
        Detector.load(pkg)


def test_deep_or_huge_manifest_is_refused_without_recursion(pkg: Path) -> None:
    path = pkg / "manifest.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(PackageError, match="nested deeper"):
        load_package(pkg)
    path.write_text('{"a": ' * 40 + "1" + "}" * 40)
    with pytest.raises(PackageError, match="nested deeper than 32"):
        load_package(pkg)
    with open(path, "w") as f:
        f.write('{"pad": "' + "x" * (5 << 20) + '"}')
    with pytest.raises(PackageError, match="larger than the limit"):
        load_package(pkg)


def test_symlinks_and_escaping_names_are_refused(pkg: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.onnx"
    outside.write_bytes((pkg / "model.onnx").read_bytes())  # identical bytes: only the link itself is wrong
    (pkg / "model.onnx").unlink()
    (pkg / "model.onnx").symlink_to(outside)
    with pytest.raises(PackageError, match="symbolic link"):
        load_package(pkg)
    (pkg / "model.onnx").unlink()
    os.replace(outside, pkg / "model.onnx")
    load_package(pkg)
    # the manifest itself as a link
    real = tmp_path / "manifest.json"
    os.replace(pkg / "manifest.json", real)
    (pkg / "manifest.json").symlink_to(real)
    with pytest.raises(PackageError, match="symbolic link"):
        load_package(pkg)
    (pkg / "manifest.json").unlink()
    os.replace(real, pkg / "manifest.json")
    # a directory link inside the package
    (tmp_path / "elsewhere").mkdir()
    os.replace(pkg / "model.onnx", tmp_path / "elsewhere" / "model.onnx")
    (pkg / "sub").symlink_to(tmp_path / "elsewhere")

    edit(pkg, _rename("model.onnx", "sub/model.onnx"))
    with pytest.raises(PackageError, match="symbolic link"):
        load_package(pkg)
    for bad in ("../outside.onnx", "/etc/x.onnx", "a\\b.onnx", "./model.onnx"):
        edit(pkg, _rename("sub/model.onnx", bad))
        with pytest.raises(PackageError, match="relative path inside the package"):
            load_package(pkg)
        edit(pkg, _rename(bad, "sub/model.onnx"))


def _rename(old: str, new: str) -> Callable[[dict[str, Any]], None]:
    def change(man: dict[str, Any]) -> None:
        man["files"][new] = man["files"].pop(old)
        man["onnx"]["file"] = new

    return change


# ---- signing -------------------------------------------------------------------------------------------------
@pytest.fixture
def keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Path]:
    out = {}
    for who in ("owner", "attacker"):
        assert main(["keygen", "--out", str(tmp_path / f"{who}.pem")]) == 0
        out[who], out[f"{who}_pub"] = tmp_path / f"{who}.pem", tmp_path / f"{who}.pub.pem"
    assert (out["owner"].stat().st_mode & 0o077) == 0
    assert "key id" in capsys.readouterr().out
    assert main(["keygen", "--out", str(out["owner"])]) == 2  # never overwrites a key silently
    return out


def test_signed_package_loads_only_with_a_trusted_signature(pkg: Path, keys: dict[str, Path],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from edge_ad.runtime.signing import load_public_key

    owner_pub, attacker_pub = keys["owner_pub"], keys["attacker_pub"]
    load_package(pkg)  # no trusted keys configured: signatures are optional
    with pytest.raises(PackageError, match="unsigned package"):
        load_package(pkg, trusted_keys=[owner_pub])
    assert main(["sign", str(pkg), "--key", str(keys["owner"])]) == 0
    loaded = load_package(pkg, trusted_keys=[owner_pub])
    assert loaded.signer == load_public_key(owner_pub).key_id
    with pytest.raises(PackageError, match="not one of the trusted keys"):
        load_package(pkg, trusted_keys=[attacker_pub])
    # the environment variable configures trust for every entry point
    monkeypatch.setenv("EDGE_AD_TRUSTED_KEYS", str(attacker_pub))
    with pytest.raises(PackageError, match="not one of the trusted keys"):
        Detector.load(pkg)
    monkeypatch.setenv("EDGE_AD_TRUSTED_KEYS", str(owner_pub))
    assert Detector.load(pkg).package.signer == loaded.signer
    # edited after signing (digest recomputed): the signature names the old digest
    edit(pkg, _set("thresholds.image.value", 0.9))
    with pytest.raises(PackageError, match="changed after it was signed"):
        load_package(pkg)
    # ... and re-signed by someone else: refused for the key, not for the digest
    assert main(["sign", str(pkg), "--key", str(keys["attacker"])]) == 0
    with pytest.raises(PackageError, match="not one of the trusted keys"):
        load_package(pkg)


def test_forged_signature_files_are_refused(pkg: Path, keys: dict[str, Path]) -> None:
    import base64

    assert main(["sign", str(pkg), "--key", str(keys["owner"])]) == 0
    sig_path = pkg / "signature.json"
    good = json.loads(sig_path.read_text())
    trusted = [keys["owner_pub"]]
    forged = dict(good, signature=base64.b64encode(b"\0" * 64).decode())
    cases: dict[str, str] = {json.dumps(forged): "does not verify", "[1, 2": "unreadable signature",
                             json.dumps([good]): "unreadable signature", json.dumps(dict(good, algorithm="rsa")):
                             "format/algorithm", "x" * 70_000: "unreadable signature"}
    for text, message in cases.items():
        sig_path.write_text(text)
        with pytest.raises(PackageError, match=message):
            load_package(pkg, trusted_keys=trusted)


def test_predict_cli_with_trusted_key(pkg: Path, keys: dict[str, Path], tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    import cv2

    img = tmp_path / "part.png"
    cv2.imwrite(str(img), blob_image())
    args = ["predict", str(pkg), str(img), "--out", str(tmp_path / "out"), "--trusted-key", str(keys["owner_pub"])]
    assert main(args) == 2 and "unsigned package" in capsys.readouterr().err
    assert main(["sign", str(pkg), "--key", str(keys["owner"])]) == 0
    assert main(args) == 0
    line = (tmp_path / "out" / "results.jsonl").read_text().splitlines()[0]
    assert json.loads(line)["status"] == "NG"
