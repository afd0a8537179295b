"""Model packages: a directory with ONNX graph(s) and a `manifest.json` that says how to feed and read them.

`write_package` assembles the directory in a temporary sibling and renames it into place, so a reader never sees a
half-written package. `load_package` refuses anything it cannot trust: a newer schema major version, a schema
violation, a listed file that is missing or whose sha256 differs (corruption, tampering, partial copy).
Line-side module: json, hashlib and numpy-free standard library only.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from edge_ad import __version__
from edge_ad.errors import PackageError
from edge_ad.runtime.preprocess import Preprocess
from edge_ad.runtime.schema import validate_manifest

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
_CHUNK = 1 << 20

FileSource = str | Path | bytes


@dataclass(frozen=True)
class ModelPackage:
    """A verified model package: its root directory, the manifest, and the parsed thresholds/preprocess."""

    root: Path
    manifest: dict[str, Any]
    thresholds: dict[str, Any]
    preprocess: Preprocess

    def onnx_path(self, precision: str | None = None) -> Path:
        """Path of the ONNX graph for `precision` (None = the package's own precision, `manifest.precision`)."""
        onnx = self.manifest["onnx"]
        if precision is None or precision == self.manifest["precision"]:
            return self.root / onnx["file"]
        variants = onnx.get("variants", {})
        if precision not in variants:
            have = [self.manifest["precision"], *variants]
            raise PackageError(f"{self.root / MANIFEST_NAME}: onnx: no {precision!r} graph in this package, "
                               f"available precisions: {have}")
        return self.root / variants[precision]

    def cpu_onnx_path(self) -> Path | None:
        """The package's graph for CPU runtimes (`onnx.cpu.file`), or None when the main graph is the CPU graph too.

        int8 packages carry one: their main graph quantises on top of FP16 for TensorRT, which a CPU runs through
        casts; the CPU graph is the same quantisation between FP32 ops, which CPU runtimes fuse into integer GEMMs.
        """
        cpu = self.manifest["onnx"].get("cpu")
        return self.root / cpu["file"] if cpu else None

    @property
    def name(self) -> str:
        return str(self.manifest["model"]["name"])

    @property
    def precision(self) -> str:
        return str(self.manifest["precision"])

    @property
    def input_name(self) -> str:
        return str(self.manifest["input"]["name"])

    @property
    def input_hw(self) -> tuple[int, int]:
        """(height, width) of the graph input, equal to the preprocess crop."""
        return int(self.manifest["input"]["height"]), int(self.manifest["input"]["width"])

    @property
    def map_hw(self) -> tuple[int, int]:
        """(height, width) of the `anomaly_map` output."""
        m = self.manifest["outputs"]["anomaly_map"]
        return int(m["height"]), int(m["width"])

    @property
    def postprocess(self) -> dict[str, Any]:
        return dict(self.manifest["postprocess"])


def sha256_file(path: Path) -> tuple[str, int]:
    """(hex sha256, size in bytes) of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            n += len(chunk)
    return h.hexdigest(), n


def _check_rel_name(name: str, where: str) -> None:
    p = PurePosixPath(name)
    if not name or p.is_absolute() or ".." in p.parts or "\\" in name or name != str(p):
        raise PackageError(f"{where}: file name {name!r}: expected a relative path inside the package "
                           "(no '..', no absolute path, '/' separators)")
    if name == MANIFEST_NAME:
        raise PackageError(f"{where}: {MANIFEST_NAME!r} is written by edge-ad and cannot be listed as a file")


def _check_consistency(manifest: dict[str, Any], where: str) -> None:
    """Cross-field rules the JSON Schema cannot express."""
    files = manifest["files"]
    graphs = [manifest["onnx"]["file"], *manifest["onnx"].get("variants", {}).values()]
    if manifest["onnx"].get("cpu"):
        graphs.append(manifest["onnx"]["cpu"]["file"])
    for g in graphs:
        if g not in files:
            raise PackageError(f"{where}: onnx graph {g!r} is not listed in files (listed: {sorted(files)})")
    for name in files:
        _check_rel_name(name, where)
    pre = manifest["input"]["preprocess"]
    hw = [manifest["input"]["height"], manifest["input"]["width"]]
    if list(pre["crop"]) != hw:
        raise PackageError(f"{where}: input.preprocess.crop: expected the graph input size {hw} (input.height, "
                           f"input.width), got {pre['crop']}")
    if pre["crop"][0] > pre["resize"][0] or pre["crop"][1] > pre["resize"][1]:
        raise PackageError(f"{where}: input.preprocess.crop: expected at most resize {pre['resize']}, got {pre['crop']}")


def write_package(out_dir: str | Path, files: dict[str, FileSource], manifest: dict[str, Any],
                  overwrite: bool = False) -> Path:
    """Write a model package atomically and return its path.

    `files` maps package-relative names ("model.onnx") to a source file path or the bytes to write; their sha256 and
    size fill `manifest["files"]` (replacing what was there). The manifest is validated before anything is renamed
    into place. An existing `out_dir` is only replaced when `overwrite` is True.
    """
    out = Path(out_dir).resolve()
    where = str(out / MANIFEST_NAME)
    if out.exists() and not overwrite:
        raise PackageError(f"{out}: already exists; choose another directory or pass overwrite=True (--overwrite)")
    if out.exists() and not out.is_dir():
        raise PackageError(f"{out}: expected a directory for the package, got an existing file")
    out.parent.mkdir(parents=True, exist_ok=True)
    man = copy.deepcopy(manifest)
    man.setdefault("schema_version", SCHEMA_VERSION)
    man.setdefault("edge_ad_version", __version__)
    for name in files:
        _check_rel_name(name, where)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        listed: dict[str, dict[str, Any]] = {}
        for name, src in files.items():
            dst = tmp / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(src, (bytes, bytearray, memoryview)):
                dst.write_bytes(bytes(src))
            else:
                src_path = Path(src)
                if not src_path.is_file():
                    raise PackageError(f"{where}: files[{name!r}]: source file {src_path} does not exist")
                shutil.copyfile(src_path, dst)
            digest, size = sha256_file(dst)
            listed[name] = {"sha256": digest, "bytes": size}
        man["files"] = listed
        validate_manifest(man, where)
        _check_consistency(man, where)
        tmp_manifest = tmp / MANIFEST_NAME
        with open(tmp_manifest, "w", encoding="utf-8") as f:
            json.dump(man, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote model package %s (%d files)", out, len(files) + 1)
    return out


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Rename `tmp` to `out`; an existing `out` is moved aside first and removed only after the rename worked."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.rmdir(old)
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _read_manifest(path: Path) -> tuple[Path, dict[str, Any]]:
    root = path.parent if path.is_file() and path.name == MANIFEST_NAME else path
    mpath = root / MANIFEST_NAME
    if not root.exists():
        raise PackageError(f"{path}: model package not found (expected a directory containing {MANIFEST_NAME})")
    if path.is_file() and path.name != MANIFEST_NAME:
        raise PackageError(f"{path}: expected a package directory or its {MANIFEST_NAME}, got another file")
    if not mpath.is_file():
        raise PackageError(f"{mpath}: missing; {root} is not an edge-ad model package")
    try:
        with open(mpath, encoding="utf-8") as f:
            manifest = json.load(f)
    except json.JSONDecodeError as e:
        raise PackageError(f"{mpath}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from e
    except UnicodeDecodeError as e:
        raise PackageError(f"{mpath}: expected UTF-8 JSON text, got undecodable bytes ({e.reason})") from e
    if not isinstance(manifest, dict):
        raise PackageError(f"{mpath}: expected a JSON object, got {type(manifest).__name__}")
    return root, manifest


def _check_schema_version(manifest: dict[str, Any], where: str) -> None:
    if "schema_version" not in manifest:
        raise PackageError(f"{where}: schema_version: missing required field")
    v = manifest["schema_version"]
    if isinstance(v, bool) or not isinstance(v, int):
        raise PackageError(f"{where}: schema_version: expected integer, got {v!r}")
    if v > SCHEMA_VERSION:
        raise PackageError(f"{where}: schema_version: package uses schema version {v}, this edge-ad {__version__} "
                           f"reads up to {SCHEMA_VERSION}; upgrade edge-ad on this machine")
    if v < 1:
        raise PackageError(f"{where}: schema_version: expected {SCHEMA_VERSION}, got {v}")


def load_package(path: str | Path, verify: bool = True) -> ModelPackage:
    """Read and check a model package (directory or its manifest.json).

    With `verify` (default) every listed file is hashed and compared with the manifest; turn it off only for
    packages already verified on this machine (hashing a large graph costs about a second on a Jetson).
    """
    root, manifest = _read_manifest(Path(path))
    root = root.resolve()
    where = str(root / MANIFEST_NAME)
    _check_schema_version(manifest, where)
    validate_manifest(manifest, where)
    _check_consistency(manifest, where)
    for name, entry in manifest["files"].items():
        fpath = root / name
        if not fpath.is_file():
            raise PackageError(f"{fpath}: listed in {MANIFEST_NAME} but missing from the package")
        size = fpath.stat().st_size
        if size != entry["bytes"]:
            raise PackageError(f"{fpath}: size mismatch, expected {entry['bytes']} bytes, got {size} "
                               "(truncated or modified file)")
        if verify:
            digest, _ = sha256_file(fpath)
            if digest != entry["sha256"]:
                raise PackageError(f"{fpath}: sha256 mismatch, expected {entry['sha256']}, got {digest} "
                                   "(corrupted or modified file)")
    try:
        pre = Preprocess.from_dict(manifest["input"]["preprocess"])
    except ValueError as e:
        raise PackageError(f"{where}: input.preprocess: {e}") from e
    return ModelPackage(root=root, manifest=manifest, thresholds=manifest["thresholds"], preprocess=pre)


def package_summary(pkg: ModelPackage) -> dict[str, Any]:
    """Short JSON-safe description for CLIs and logs: model, precision, sizes, thresholds, files."""
    m = pkg.manifest
    th = pkg.thresholds
    return {
        "path": str(pkg.root),
        "model": m["model"]["name"],
        "family": m["model"]["family"],
        "untrained": bool(m["model"]["untrained"]),
        "categories": list(m["categories"]),
        "precision": m["precision"],
        "precisions": [m["precision"], *m["onnx"].get("variants", {})],
        "input": {"name": pkg.input_name, "hw": list(pkg.input_hw), "resize": list(pkg.preprocess.resize),
                  "color_order": pkg.preprocess.color_order},
        "anomaly_map_hw": list(pkg.map_hw),
        "image_threshold": th["image"]["value"],
        "pixel_threshold": th["pixel"]["value"],
        "created": m["created"],
        "edge_ad_version": m["edge_ad_version"],
        "files": {k: v["bytes"] for k, v in m["files"].items()},
    }
