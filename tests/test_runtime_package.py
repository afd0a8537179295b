"""Model package: JSON Schema, the built-in validator, write/load round trip and every refusal of load_package."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest
from runtime_fixtures import build_package, make_manifest, make_onnx

from edge_ad.errors import PackageError
from edge_ad.runtime.package import load_package, package_summary, write_package
from edge_ad.runtime.schema import manifest_schema, validate, validate_manifest

GOOD_FILES = {"model.onnx": {"sha256": "0" * 64, "bytes": 10}}


def _good() -> dict:
    m = make_manifest()
    m["files"] = copy.deepcopy(GOOD_FILES)
    m["digest"] = "0" * 64
    return m


def _mutate(path: str, value: object) -> dict:
    """Good manifest with `path` (dotted) set to `value`, or deleted when value is ...."""
    m = _good()
    keys = path.split(".")
    node = m
    for k in keys[:-1]:
        node = node[k]
    if value is ...:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return m


BAD_CASES = [
    ("schema_version", 1),
    ("schema_version", 3),
    ("schema_version", ...),
    ("digest", ...),
    ("digest", "abc"),
    ("input.preprocess.resize", [40000, 40000]),
    ("input.preprocess.mean", [0.5, 1e9, 0.5]),
    ("input.preprocess.std", [0.2, 1e300, 0.2]),
    ("postprocess.mask_blur_sigma", 1e6),
    ("postprocess.morph_open_px", 100000),
    ("thresholds.image.value", 1e308),
    ("outputs.anomaly_map.height", 100000),
    ("created", "yesterday"),
    ("model.untrained", "no"),
    ("model.name", ""),
    ("categories", ["ok", 3]),
    ("precision", "fp64"),
    ("onnx.file", "model.pt"),
    ("onnx.opset", 17.5),
    ("input.dtype", "float32"),
    ("input.height", 0),
    ("input.batch", "any"),
    ("input.batch", 0),
    ("input.preprocess.crop", "abc"),
    ("input.preprocess.crop", [64]),
    ("input.preprocess.crop", [64, 64, 3]),
    ("input.preprocess.crop", [64, "64"]),
    ("input.preprocess.std", [0.2, 0.0, 0.2]),
    ("input.preprocess.color_order", "rgb"),
    ("outputs.score", ...),
    ("postprocess.min_region_area_px", -1),
    ("postprocess.mask_blur_sigma", True),
    ("thresholds.image.value", "0.5"),
    ("thresholds.normalization.pixel_max", ...),
    ("files", {"model.onnx": {"sha256": "XYZ", "bytes": 1}}),
    ("files", {"model.onnx": {"sha256": "0" * 64, "bytes": 1, "extra": 1}}),
    ("unknown_top_level", 1),
]
GOOD_CASES = [
    ("input.batch", 1),
    ("input.batch", "dynamic"),
    ("input.batch", ...),
    ("onnx.opset", 17.0),
    ("postprocess.mask_blur_sigma", ...),
    ("constants", {"k": [1, 2]}),
    ("engines", {}),
    ("categories", []),
    ("model.encoder_weights", "random-init"),
]


def test_schema_is_valid_draft_2020_12() -> None:
    jsonschema.Draft202012Validator.check_schema(manifest_schema())


@pytest.mark.parametrize("path,value", GOOD_CASES + BAD_CASES, ids=lambda v: str(v)[:30])
def test_validator_agrees_with_jsonschema(path: str, value: object) -> None:
    m = _mutate(path, value)
    ref_valid = jsonschema.Draft202012Validator(manifest_schema()).is_valid(m)
    ours = validate(m, manifest_schema())
    assert (not ours) == ref_valid, ours
    assert ref_valid == ((path, value) in GOOD_CASES)


def test_error_messages_name_field_expected_and_got() -> None:
    with pytest.raises(PackageError) as e:
        validate_manifest(_mutate("input.preprocess.crop", "abc"))
    assert str(e.value) == "manifest.json: input.preprocess.crop: expected array of 2 integers >= 1 <= 4096, got 'abc'"
    with pytest.raises(PackageError, match=r"thresholds\.pixel: missing required field"):
        validate_manifest(_mutate("thresholds.pixel", ...))
    precisions = r"\"fp32\", \"fp16\", \"bf16\", \"int8\""
    with pytest.raises(PackageError, match=rf"precision: expected one of {precisions}, got 'fp64'"):
        validate_manifest(_mutate("precision", "fp64"))


def test_write_load_round_trip(tmp_path: Path) -> None:
    pkg_dir = build_package(tmp_path / "pkg")
    assert sorted(p.name for p in pkg_dir.iterdir()) == ["manifest.json", "model.onnx"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temp dir left behind"
    pkg = load_package(pkg_dir)
    data = (pkg_dir / "model.onnx").read_bytes()
    assert pkg.manifest["files"]["model.onnx"]["bytes"] == len(data)
    assert pkg.onnx_path() == pkg_dir.resolve() / "model.onnx"
    assert pkg.preprocess.resize == (80, 80) and pkg.preprocess.crop == (64, 64)
    assert pkg.thresholds["image"]["value"] == 0.5
    assert load_package(pkg_dir / "manifest.json").manifest == pkg.manifest
    summary = package_summary(pkg)
    assert summary["model"] == "brightness-test" and summary["input"]["hw"] == [64, 64]
    json.dumps(summary)
    with pytest.raises(PackageError, match="no 'fp16' graph"):
        pkg.onnx_path("fp16")


def test_precision_variants(tmp_path: Path) -> None:
    man = make_manifest()
    man["onnx"]["variants"] = {"fp16": "model_fp16.onnx"}
    with pytest.raises(PackageError, match="model_fp16.onnx' is not listed in files"):
        write_package(tmp_path / "p", {"model.onnx": make_onnx()}, man)
    assert not (tmp_path / "p").exists()
    out = write_package(tmp_path / "p", {"model.onnx": make_onnx(), "model_fp16.onnx": make_onnx()}, man)
    assert load_package(out).onnx_path("fp16").name == "model_fp16.onnx"


def test_refuses_overwrite_unless_asked(tmp_path: Path) -> None:
    pkg_dir = build_package(tmp_path / "pkg")
    with pytest.raises(PackageError, match="already exists"):
        build_package(pkg_dir)
    man = make_manifest(image_threshold=0.7)
    write_package(pkg_dir, {"model.onnx": make_onnx()}, man, overwrite=True)
    assert load_package(pkg_dir).thresholds["image"]["value"] == 0.7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg"]


def test_write_validates_before_rename(tmp_path: Path) -> None:
    man = make_manifest()
    man["precision"] = "fp64"
    with pytest.raises(PackageError, match="precision"):
        write_package(tmp_path / "pkg", {"model.onnx": make_onnx()}, man)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(PackageError, match="relative path"):
        write_package(tmp_path / "pkg", {"../evil.onnx": b"x"}, make_manifest())


def test_flipped_byte_is_detected(tmp_path: Path) -> None:
    pkg_dir = build_package(tmp_path / "pkg")
    onnx_file = pkg_dir / "model.onnx"
    data = bytearray(onnx_file.read_bytes())
    data[len(data) // 2] ^= 0x01
    onnx_file.write_bytes(bytes(data))
    expected = json.loads((pkg_dir / "manifest.json").read_text())["files"]["model.onnx"]["sha256"]
    with pytest.raises(PackageError) as e:
        load_package(pkg_dir)
    msg = str(e.value)
    assert "model.onnx" in msg and "sha256 mismatch" in msg and expected in msg


def test_truncated_or_missing_file(tmp_path: Path) -> None:
    pkg_dir = build_package(tmp_path / "pkg")
    onnx_file = pkg_dir / "model.onnx"
    onnx_file.write_bytes(onnx_file.read_bytes()[:-5])
    with pytest.raises(PackageError, match="model.onnx: size mismatch"):
        load_package(pkg_dir)
    onnx_file.unlink()
    with pytest.raises(PackageError, match="model.onnx: listed in manifest.json but missing"):
        load_package(pkg_dir)


def _edit_manifest(pkg_dir: Path, fn) -> None:
    p = pkg_dir / "manifest.json"
    m = json.loads(p.read_text())
    fn(m)
    p.write_text(json.dumps(m))


def test_missing_field_is_named(tmp_path: Path) -> None:
    pkg_dir = build_package(tmp_path / "pkg")
    _edit_manifest(pkg_dir, lambda m: m["input"]["preprocess"].pop("crop"))
    with pytest.raises(PackageError, match=r"manifest.json: input\.preprocess\.crop: missing required field"):
        load_package(pkg_dir)


def test_newer_schema_version_is_refused(tmp_path: Path) -> None:
    pkg_dir = build_package(tmp_path / "pkg")
    _edit_manifest(pkg_dir, lambda m: m.update(schema_version=3))
    with pytest.raises(PackageError, match="schema version 3.*reads up to 2; upgrade edge-ad"):
        load_package(pkg_dir)
    _edit_manifest(pkg_dir, lambda m: m.update(schema_version=1))
    with pytest.raises(PackageError, match="without a package digest.*re-export it"):
        load_package(pkg_dir)
    _edit_manifest(pkg_dir, lambda m: m.update(schema_version="1"))
    with pytest.raises(PackageError, match="schema_version: expected integer, got '1'"):
        load_package(pkg_dir)


def test_crop_must_match_graph_input(tmp_path: Path) -> None:
    man = make_manifest()
    man["input"]["height"] = 48
    with pytest.raises(PackageError, match=r"input\.preprocess\.crop: expected the graph input size \[48, 64\]"):
        write_package(tmp_path / "pkg", {"model.onnx": make_onnx()}, man)


def test_not_a_package(tmp_path: Path) -> None:
    with pytest.raises(PackageError, match="model package not found"):
        load_package(tmp_path / "nope")
    with pytest.raises(PackageError, match="manifest.json: missing"):
        load_package(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(PackageError, match="invalid JSON at line 1"):
        load_package(tmp_path)
