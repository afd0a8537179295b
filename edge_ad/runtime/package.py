"""Model packages: a directory with ONNX graph(s) and a `manifest.json` that says how to feed and read them.

`write_package` assembles the directory in a temporary sibling and renames it into place, so a reader never sees a
half-written package. Integrity: `manifest.files` holds the sha256 of every file and `manifest.digest` is the
sha256 of the canonical manifest without the digest itself, so one hex string stands for the whole package (an
edited threshold changes it; `signing.py` signs it). `load_package` refuses anything it cannot trust: a manifest
that is not plain bounded JSON (NaN/Infinity literals, nesting deeper than 32, larger than 4 MiB), a schema
violation or an out-of-range number (named by field), a digest mismatch, a listed file that is missing, a symlink,
outside the package, or whose sha256 differs, an unsigned or untrusted package when trusted keys are configured.
Line-side module: standard library only.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from edge_ad import __version__
from edge_ad.errors import PackageError
from edge_ad.fileio import sha256_file, staged_directory
from edge_ad.runtime.geometry import Geometry
from edge_ad.runtime.preprocess import Preprocess
from edge_ad.runtime.schema import validate_manifest
from edge_ad.runtime.signing import (
    SIGNATURE_NAME,
    resolve_trusted_keys,
    sign_digest,
    verify_signature,
)

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
MANIFEST_NAME = "manifest.json"
MAX_MANIFEST_BYTES = 4 << 20
MAX_JSON_DEPTH = 32

FileSource = str | Path | bytes
#: engines with an entry in the manifest's `onnx.backends`
GRAPH_BACKENDS = ("onnxruntime", "openvino", "tensorrt")


@dataclass(frozen=True)
class GraphChoice:
    """Which of the package's graphs one engine runs (`file`, package-relative), at which inference precision
    (OpenVINO's INFERENCE_PRECISION_HINT "f32"/"bf16"; None where the graph's own types decide), and what checked
    that choice against the fp32 reference (`checked`: the gate that ran it, or why none was needed)."""

    backend: str
    file: str
    inference_precision: str | None
    checked: str

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"file": self.file, "checked": self.checked}
        if self.inference_precision is not None:
            d["inference_precision"] = self.inference_precision
        return d


def default_graph_choices(manifest: dict[str, Any], checked: str) -> dict[str, GraphChoice]:
    """Each engine's graph by the rule packages followed before `onnx.backends` existed: ONNX Runtime and OpenVINO
    on the CPU graph where there is one (int8), TensorRT on the main (strongly typed) graph; OpenVINO computes in f32
    unless the package is bf16. Export starts from this and replaces OpenVINO's entry with the one its gate ran."""
    onnx = manifest["onnx"]
    main = str(onnx["file"])
    cpu = str(onnx["cpu"]["file"]) if onnx.get("cpu") else main
    ov_precision = "bf16" if manifest["precision"] == "bf16" else "f32"
    return {"onnxruntime": GraphChoice("onnxruntime", cpu, None, checked),
            "openvino": GraphChoice("openvino", cpu, ov_precision, checked),
            "tensorrt": GraphChoice("tensorrt", main, None, checked)}


@dataclass(frozen=True)
class ModelPackage:
    """A verified model package: its root directory, the manifest, the parsed thresholds/preprocess, and the id
    of the trusted key that signed it (None when no trusted keys were configured)."""

    root: Path
    manifest: dict[str, Any]
    thresholds: dict[str, Any]
    preprocess: Preprocess
    signer: str | None = None

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

    def graph_for(self, backend: str) -> GraphChoice:
        """The graph `backend` runs (manifest `onnx.backends`); packages written before that field follow
        `default_graph_choices`, the rule they were gated under."""
        if backend not in GRAPH_BACKENDS:
            raise PackageError(f"{self.root / MANIFEST_NAME}: onnx.backends: expected one of {list(GRAPH_BACKENDS)}, "
                               f"got {backend!r}")
        entry = (self.manifest["onnx"].get("backends") or {}).get(backend)
        if entry is None:
            return default_graph_choices(self.manifest, "package without onnx.backends: edge-ad's former rule")[backend]
        return GraphChoice(backend, str(entry["file"]), entry.get("inference_precision"), str(entry["checked"]))

    def geometry(self) -> Geometry | None:
        """The package's inspection geometry (references, ROIs, alignment, tiling), or None for whole-image
        packages. Its files were verified with the package."""
        section = self.manifest.get("geometry")
        if section is None:
            return None
        try:
            return Geometry.from_dict(section, self.root)
        except (KeyError, TypeError, ValueError) as e:
            raise PackageError(f"{self.root / MANIFEST_NAME}: geometry: {type(e).__name__}: {e}") from None

    @property
    def digest(self) -> str:
        """sha256 of the canonical manifest (and so of every file it lists): the package's identity."""
        return str(self.manifest["digest"])

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


def _check_rel_name(name: str, where: str) -> None:
    p = PurePosixPath(name)
    if not name or p.is_absolute() or ".." in p.parts or "\\" in name or name != str(p):
        raise PackageError(f"{where}: file name {name!r}: expected a relative path inside the package "
                           "(no '..', no absolute path, '/' separators)")
    if name in (MANIFEST_NAME, SIGNATURE_NAME):
        raise PackageError(f"{where}: {name!r} is written by edge-ad and cannot be listed as a file")


def _check_consistency(manifest: dict[str, Any], where: str) -> None:
    """Cross-field rules the JSON Schema cannot express."""
    files = manifest["files"]
    graphs = [manifest["onnx"]["file"], *manifest["onnx"].get("variants", {}).values()]
    if manifest["onnx"].get("cpu"):
        graphs.append(manifest["onnx"]["cpu"]["file"])
    for g in graphs:
        if g not in files:
            raise PackageError(f"{where}: onnx graph {g!r} is not listed in files (listed: {sorted(files)})")
    for backend, entry in (manifest["onnx"].get("backends") or {}).items():
        if entry["file"] not in graphs:
            raise PackageError(f"{where}: onnx.backends.{backend}.file: expected one of the package's graphs "
                               f"{sorted(set(graphs))}, got {entry['file']!r}")
        if backend == "tensorrt" and entry["file"] != manifest["onnx"]["file"]:
            raise PackageError(f"{where}: onnx.backends.tensorrt.file: TensorRT builds the main graph "
                               f"{manifest['onnx']['file']!r} (strongly typed), got {entry['file']!r}")
        if "inference_precision" in entry and backend != "openvino":
            raise PackageError(f"{where}: onnx.backends.{backend}.inference_precision: only OpenVINO takes a "
                               f"precision hint, got one for {backend}")
    for name in files:
        _check_rel_name(name, where)
    pre = manifest["input"]["preprocess"]
    hw = [manifest["input"]["height"], manifest["input"]["width"]]
    if list(pre["crop"]) != hw:
        raise PackageError(f"{where}: input.preprocess.crop: expected the graph input size {hw} (input.height, "
                           f"input.width), got {pre['crop']}")
    if pre["crop"][0] > pre["resize"][0] or pre["crop"][1] > pre["resize"][1]:
        raise PackageError(
            f"{where}: input.preprocess.crop: expected at most resize {pre['resize']}, got {pre['crop']}"
        )
    th = manifest["thresholds"]
    norm = th["normalization"]
    for kind, value in (("score", th["image"]["value"]), ("pixel", th["pixel"]["value"])):
        lo, hi = norm[f"{kind}_min"], norm[f"{kind}_max"]
        if not lo < hi:
            raise PackageError(
                f"{where}: thresholds.normalization: expected {kind}_min < {kind}_max, got {lo} and {hi}"
            )
        if not lo <= value <= hi:
            field = "image" if kind == "score" else "pixel"
            raise PackageError(f"{where}: thresholds.{field}.value: expected within [{kind}_min, {kind}_max] = "
                               f"[{lo}, {hi}], got {value}")


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
    man = copy.deepcopy(manifest)
    man.setdefault("edge_ad_version", __version__)
    for name in files:
        _check_rel_name(name, where)
    with staged_directory(out) as tmp:
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
        man["schema_version"] = SCHEMA_VERSION
        man["digest"] = manifest_digest(man)
        validate_manifest(man, where)
        _check_consistency(man, where)
        tmp_manifest = tmp / MANIFEST_NAME
        with open(tmp_manifest, "w", encoding="utf-8") as f:
            json.dump(man, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
    log.info("wrote model package %s (%d files)", out, len(files) + 1)
    return out


def manifest_digest(manifest: dict[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of the manifest without its `digest` field: sorted keys, no spaces,
    ASCII; through `files` (every file's sha256) it covers the whole package."""
    body = {k: v for k, v in manifest.items() if k != "digest"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


class _NonFinite(ValueError):
    """A NaN/Infinity literal in JSON."""


def _no_constants(token: str) -> Any:
    raise _NonFinite(f"{token} is not a JSON number")


def _depth(obj: Any, limit: int) -> int:
    """Nesting depth of parsed JSON, stopping once `limit` is exceeded."""
    stack = [(obj, 1)]
    deepest = 0
    while stack:
        node, d = stack.pop()
        deepest = max(deepest, d)
        if deepest > limit:
            return deepest
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((c, d + 1) for c in children if isinstance(c, (dict, list)))
    return deepest


def read_json_bounded(path: Path, what: str, max_bytes: int = MAX_MANIFEST_BYTES) -> Any:
    """Plain JSON from a hostile file: at most `max_bytes`, nesting <= MAX_JSON_DEPTH, no NaN/Infinity literals;
    PackageError naming the file and the problem otherwise."""
    try:
        size = path.stat().st_size
    except OSError as e:
        raise PackageError(f"{path}: cannot read {what} ({e.strerror})") from None
    if size > max_bytes:
        raise PackageError(f"{path}: {what} is {size} bytes, larger than the limit of {max_bytes}")
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.loads(f.read(), parse_constant=_no_constants)
    except json.JSONDecodeError as e:
        raise PackageError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except UnicodeDecodeError as e:
        raise PackageError(f"{path}: expected UTF-8 JSON text, got undecodable bytes ({e.reason})") from None
    except _NonFinite as e:
        raise PackageError(f"{path}: {e} (NaN and Infinity are not allowed: every number must be finite)") from None
    except ValueError as e:  # e.g. an integer literal with thousands of digits
        raise PackageError(f"{path}: invalid JSON: {e}") from None
    except RecursionError:
        raise PackageError(f"{path}: JSON nested deeper than Python can parse") from None
    if _depth(doc, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise PackageError(f"{path}: JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return doc


def _read_manifest(path: Path) -> tuple[Path, dict[str, Any]]:
    root = path.parent if path.is_file() and path.name == MANIFEST_NAME else path
    mpath = root / MANIFEST_NAME
    if not root.exists():
        raise PackageError(f"{path}: model package not found (expected a directory containing {MANIFEST_NAME})")
    if path.is_file() and path.name != MANIFEST_NAME:
        raise PackageError(f"{path}: expected a package directory or its {MANIFEST_NAME}, got another file")
    if mpath.is_symlink():
        raise PackageError(f"{mpath}: is a symbolic link; a package's files must be regular files inside it")
    if not mpath.is_file():
        raise PackageError(f"{mpath}: missing; {root} is not an edge-ad model package")
    manifest = read_json_bounded(mpath, "the manifest")
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
    if v < SCHEMA_VERSION:
        raise PackageError(f"{where}: schema_version: {v} is a package format without a package digest (edge-ad "
                           f"< 0.2); it cannot be verified: re-export it with edge-ad {__version__}")


def _check_file(root: Path, name: str, entry: dict[str, Any], verify: bool) -> None:
    fpath = root / name
    if fpath.is_symlink() or any(p.is_symlink() for p in fpath.parents if p != root and root in p.parents):
        raise PackageError(f"{fpath}: is (or lies below) a symbolic link; a package's files must be regular files "
                           "inside it")
    try:
        inside = fpath.resolve().is_relative_to(root)
    except OSError:
        inside = False
    if not inside:
        raise PackageError(f"{fpath}: resolves outside the package {root}")
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


def load_package(path: str | Path, verify: bool = True, trusted_keys: list[Any] | None = None,
                 check_signature: bool = True) -> ModelPackage:
    """Read and check a model package (directory or its manifest.json).

    With `verify` (default) every listed file is hashed and compared with the manifest; turn it off only for
    packages already verified on this machine (hashing a large graph costs about a second on a Jetson). The
    manifest digest is always checked. `trusted_keys` (public key files or `signing.PublicKey`s, plus those of
    $EDGE_AD_TRUSTED_KEYS): when any is configured the package must carry a valid signature by one of them.
    `check_signature=False` skips that (only for `edge-ad sign`, which replaces the signature).
    """
    root, manifest = _read_manifest(Path(path))
    root = root.resolve()
    where = str(root / MANIFEST_NAME)
    _check_schema_version(manifest, where)
    validate_manifest(manifest, where)
    _check_consistency(manifest, where)
    digest = manifest_digest(manifest)
    if manifest["digest"] != digest:
        raise PackageError(f"{where}: digest mismatch: the manifest was changed after export (digest "
                           f"{manifest['digest'][:16]}..., content {digest[:16]}...); re-export the package, or "
                           "change thresholds at run time (--threshold, --sensitivity) instead of in the file")
    for name, entry in manifest["files"].items():
        _check_file(root, name, entry, verify)
    signer = None
    trusted = resolve_trusted_keys(trusted_keys) if check_signature else []
    if trusted:
        signer = verify_signature(root, digest, trusted)
    try:
        pre = Preprocess.from_dict(manifest["input"]["preprocess"])
    except ValueError as e:
        raise PackageError(f"{where}: input.preprocess: {e}") from e
    return ModelPackage(root=root, manifest=manifest, thresholds=manifest["thresholds"], preprocess=pre,
                        signer=signer)


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


def sign_package(package_dir: str | Path, private_key: str | Path) -> Path:
    """Sign a package's digest with the private key (after verifying its files and digest); returns
    signature.json."""
    pkg = load_package(package_dir, check_signature=False)
    return sign_digest(pkg.root, str(pkg.manifest["digest"]), private_key)
