"""About a hundred broken model packages: manifest edits with a stale digest, edits an attacker re-digests (every
field deleted, of the wrong type or out of range), damaged files, hostile JSON, and self-consistent packages whose
graph is garbage, a pickle, the wrong shape or reads external data from outside the package. Every one is refused
by `Detector.load` with a clear error; none is loaded, none crashes."""

from __future__ import annotations

import copy
import hashlib
import json
import pickle
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import onnx
from hostile_tally import Tally
from onnx import TensorProto, helper
from runtime_fixtures import make_onnx

from edge_ad.runtime import Detector
from edge_ad.runtime.package import manifest_digest

Edit = Callable[[Path], None]


def _load(p: Path) -> dict[str, Any]:
    return json.loads((p / "manifest.json").read_text())


def _save(p: Path, man: dict[str, Any], redigest: bool = True) -> None:
    if redigest:
        man["digest"] = manifest_digest(man)
    (p / "manifest.json").write_text(json.dumps(man))


def _field(path: str, value: Any = ..., redigest: bool = True) -> Edit:
    """Set (or with value ... delete) a dotted manifest field."""
    def edit(p: Path) -> None:
        man = _load(p)
        *head, last = path.split(".")
        node = man
        for k in head:
            node = node[k]
        if value is ...:
            del node[last]
        else:
            node[last] = copy.deepcopy(value)
        _save(p, man, redigest)

    return edit


def _graph(data: bytes) -> Edit:
    """Replace model.onnx and re-list it consistently (correct sha256, size and digest): only the graph is bad."""
    def edit(p: Path) -> None:
        (p / "model.onnx").write_bytes(data)
        man = _load(p)
        man["files"]["model.onnx"] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        _save(p, man)

    return edit


def _raw_manifest(text: str | bytes) -> Edit:
    def edit(p: Path) -> None:
        (p / "manifest.json").write_bytes(text.encode() if isinstance(text, str) else text)

    return edit


def _external_data_graph() -> bytes:
    """A valid graph whose constant lives in an 'external data' file outside the package (../../etc/passwd)."""
    model = onnx.load_from_string(make_onnx())
    init = model.graph.initializer[0]
    init.ClearField("float_data")
    init.ClearField("raw_data")
    init.data_location = TensorProto.EXTERNAL
    for k, v in (("location", "../../../../etc/passwd"), ("offset", "0"), ("length", "4")):
        init.external_data.add(key=k, value=v)
    return model.SerializeToString()


def _wrong_graph(**kw: Any) -> bytes:
    return make_onnx(**kw)


def _no_score_graph() -> bytes:
    model = onnx.load_from_string(make_onnx())
    del model.graph.output[1]
    return model.SerializeToString()


def _float_input_graph() -> bytes:
    nodes = [helper.make_node("Identity", ["image"], ["anomaly_map"]),
             helper.make_node("ReduceMax", ["image"], ["score"], axes=[1, 2, 3], keepdims=0)]
    graph = helper.make_graph(nodes, "float-in", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                                               ["b", 64, 64, 3])],
                              [helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, ["b", 64, 64, 3]),
                               helper.make_tensor_value_info("score", TensorProto.FLOAT, ["b"])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


class _Payload:
    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, ("/tmp/edge-ad-hostile-pwned-pkg", "w"))


def _symlink_model(p: Path) -> None:
    outside = p.parent / f"{p.name}-outside.onnx"
    shutil.copy(p / "model.onnx", outside)
    (p / "model.onnx").unlink()
    (p / "model.onnx").symlink_to(outside)


def _symlink_manifest(p: Path) -> None:
    real = p.parent / f"{p.name}-manifest.json"
    shutil.move(p / "manifest.json", real)
    (p / "manifest.json").symlink_to(real)


def _truncate(name: str, keep: int) -> Edit:
    def edit(p: Path) -> None:
        data = (p / name).read_bytes()
        (p / name).write_bytes(data[:keep] if keep >= 0 else data[:len(data) + keep])

    return edit


def _flip(name: str, pos: int) -> Edit:
    def edit(p: Path) -> None:
        data = bytearray((p / name).read_bytes())
        data[pos % len(data)] ^= 0x04
        (p / name).write_bytes(bytes(data))

    return edit


def _model_entry(entry: dict[str, Any]) -> Edit:
    def edit(p: Path) -> None:
        man = _load(p)
        man["files"]["model.onnx"] = entry
        _save(p, man)

    return edit


def _files_entry(name: str) -> Edit:
    def edit(p: Path) -> None:
        man = _load(p)
        man["files"][name] = dict(man["files"]["model.onnx"])
        _save(p, man)

    return edit


def broken() -> Iterator[tuple[str, Edit]]:
    required = ["schema_version", "digest", "edge_ad_version", "created", "model", "categories", "precision", "onnx",
                "input", "outputs", "postprocess", "thresholds", "files", "input.name", "input.height",
                "input.preprocess", "input.preprocess.mean", "input.preprocess.std", "input.preprocess.resize",
                "input.preprocess.crop", "input.preprocess.color_order", "thresholds.image", "thresholds.pixel.value",
                "thresholds.normalization", "thresholds.normalization.score_max", "outputs.anomaly_map",
                "postprocess.min_region_area_px", "onnx.file"]
    for f in required:
        yield f"missing {f}", _field(f, redigest=f != "digest")
    wrong = {"schema_version": "2", "precision": 5, "categories": "widget", "input.height": "64",
             "thresholds.image.value": "0.5", "files": [], "model": "name", "input.preprocess.mean": [0.5, 0.5],
             "input.preprocess.resize": [80, 80, 80], "onnx.opset": 17.5,
             "postprocess.morph_open_px": True, "input.batch": "many"}
    for f, v in wrong.items():
        yield f"wrong type {f}={v!r}", _field(f, v)
    ranges = {"thresholds.image.value": 1e308, "thresholds.pixel.value": -1e13,
              "thresholds.normalization.score_min": 5.0, "thresholds.normalization.pixel_max": -1.0,
              "input.preprocess.resize": [40000, 40000], "input.preprocess.crop": [32, 32],
              "input.preprocess.std": [0.2, 0.0, 0.2], "input.preprocess.mean": [1e9, 0.0, 0.0],
              "postprocess.mask_blur_sigma": 1e6, "postprocess.morph_open_px": 100000,
              "postprocess.min_region_area_px": -1, "onnx.opset": 99, "input.batch": 0, "input.height": 100000,
              "input.dtype": "float64", "input.layout": "NCHW", "input.preprocess.color_order": "XYZ",
              "precision": "int4", "onnx.file": "../../x.onnx", "schema_version": 3, "edge_ad_version": "latest",
              "outputs.anomaly_map.height": 0, "input.preprocess.interpolation": "lanczos"}
    for f, v in ranges.items():
        yield f"out of range {f}={v!r}", _field(f, v)
    yield "unknown top-level field", _field("payload", {"cmd": "rm -rf /"})
    yield "file entry with bad sha256", _model_entry({"sha256": "zz", "bytes": 1})
    yield "file entry with negative size", _model_entry({"sha256": "0" * 64, "bytes": -1})
    yield "file entry with an extra key", _model_entry({"sha256": "0" * 64, "bytes": 1, "exec": "x"})
    yield "unlisted graph", _field("onnx.file", "other.onnx")
    yield "listed file escapes", _files_entry("../escape.onnx")
    yield "listed file absolute", _files_entry("/etc/x.onnx")
    yield "listed file missing", _files_entry("ghost.onnx")
    yield "signature listed as a file", _files_entry("signature.json")
    # stale digest: the edits an operator might try by hand
    for f, v in {"thresholds.image.value": 0.99, "postprocess.min_region_area_px": 1000, "categories": []}.items():
        yield f"hand edit {f} (stale digest)", _field(f, v, redigest=False)
    # damaged files
    yield "model truncated to 0", _truncate("model.onnx", 0)
    yield "model truncated by 1", _truncate("model.onnx", -1)
    yield "model bit flip at 40", _flip("model.onnx", 40)
    yield "model bit flip at the end", _flip("model.onnx", -3)
    yield "model removed", lambda p: (p / "model.onnx").unlink()
    yield "model is a directory", lambda p: ((p / "model.onnx").unlink(), (p / "model.onnx").mkdir())
    yield "model is a symlink", _symlink_model
    yield "manifest is a symlink", _symlink_manifest
    yield "manifest removed", lambda p: (p / "manifest.json").unlink()
    yield "package is a file", lambda p: (shutil.rmtree(p), p.write_text("{}"))
    # hostile JSON
    for name, text in {"empty": "", "garbage": "\x00\xff garbage", "array": "[]", "string": '"manifest"',
                       "NaN": '{"schema_version": NaN}', "Infinity": '{"x": Infinity}', "-Infinity": '{"x": -Infinity}',
                       "deep": "[" * 100_000 + "]" * 100_000, "depth-40": '{"a":' * 40 + "1" + "}" * 40,
                       "utf16": '{"a": 1}'.encode("utf-16"), "truncated": '{"schema_version": 2, "files": {',
                       "huge": '{"pad": "' + "x" * (5 << 20) + '"}', "bom": b"\xef\xbb\xbf{}",
                       "big-number": '{"schema_version": 1' + "0" * 5000 + "}"}.items():
        yield f"manifest {name}", _raw_manifest(text)
    # self-consistent packages whose graph is hostile (only signing stops an attacker from shipping these;
    # they must still fail cleanly, not crash or read outside the package)
    yield "graph is garbage", _graph(b"\x08\x07garbage" * 10)
    yield "graph is a pickle", _graph(pickle.dumps(_Payload()))
    yield "graph is empty protobuf", _graph(b"")
    yield "graph reads external data outside the package", _graph(_external_data_graph())
    yield "graph has another input size", _graph(_wrong_graph(input_hw=(48, 48)))
    yield "graph has another input name", _graph(_wrong_graph(input_name="pixels"))
    yield "graph lacks the score output", _graph(_no_score_graph())
    yield "graph takes float input", _graph(_float_input_graph())
    yield "graph has opset 99", _graph(_opset99())


def _opset99() -> bytes:
    model = onnx.load_from_string(make_onnx())
    model.opset_import[0].version = 99
    return model.SerializeToString()


CASES = list(broken())


def test_about_a_hundred_broken_packages_are_all_refused(package: Path, tmp_path: Path, tally: Tally) -> None:
    assert len(CASES) >= 100, len(CASES)
    for i, (name, edit) in enumerate(CASES):
        p = tmp_path / f"p{i:03d}"
        shutil.copytree(package, p)
        edit(p)
        tally.attempt("package", name, lambda p=p: Detector.load(p, backend="onnxruntime"))
    tally.check("package")
    assert not Path("/tmp/edge-ad-hostile-pwned-pkg").exists()
    Detector.load(package, backend="onnxruntime")  # the untouched package still loads
