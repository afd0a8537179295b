"""TensorRT engine cache inside a model package: `<package>/engines/<readable-key>-<hash>.engine` + `index.json`.

TensorRT engines are tied to the TensorRT version and the GPU they were built on (JetPack has no hardware
compatibility mode), so the package ships ONNX and each device builds and caches its own engine. An engine is keyed by
everything that makes it valid: the ONNX graph (sha256 from the manifest), precision and typing mode, input shape,
TensorRT version, GPU name + compute capability + SM count + memory (Orin Nano, NX and AGX all report "Orin", sm 8.7,
but differ in SMs and memory, and tactics are timed per chip), DLA core, workspace limit, builder flags and the
package digest. `engines/index.json` records the full key and the sha256 of every engine file; `find_engine`
returns an engine only when both match exactly, so a stale engine (new model, TensorRT upgrade) or a foreign one
(copied from another device, truncated, tampered) is never loaded but rebuilt.

`engines/` is deliberately *not* listed in the manifest's `files`: the manifest (and its checksums) describe what was
exported in the lab and are never modified on the device; `load_package` ignores files it does not list.
All writes are atomic (temporary file, fsync, os.replace) and index updates hold an exclusive lock on
`engines/.index.lock`, so two processes building at once cannot corrupt the index.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edge_ad import __version__
from edge_ad.errors import PackageError
from edge_ad.fileio import atomic_write_bytes, sha256_file
from edge_ad.runtime.package import ModelPackage

log = logging.getLogger(__name__)

ENGINES_DIR = "engines"
INDEX_NAME = "index.json"
INDEX_VERSION = 4  # 4: TF32 cleared unless the key's builder_flags list it (3's engines had it on)

PackageLike = ModelPackage | str | Path


def device_tag(gpu: str, compute_capability: str, tensorrt: str, sm_count: int) -> str:
    """Filesystem-safe "gpu-name_smNN-xSMs_trtX.Y.Z" naming what a plan or timing cache is valid for."""
    name = re.sub(r"[^a-z0-9]+", "-", gpu.lower()).strip("-")[:32] or "gpu"
    sm = compute_capability.replace(".", "")
    trt = re.sub(r"[^0-9A-Za-z.]+", "-", tensorrt)
    return f"{name}_sm{sm}-x{sm_count}_trt{trt}"


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine's validity depends on. Two keys are equal only if every field is."""

    model_sha256: str  # sha256 of the ONNX graph the engine was built from (manifest files[...].sha256)
    package_digest: str  # the package's manifest digest: a re-exported or edited package never reuses an engine
    precision: str  # fp32 | fp16 | int8
    typing: str  # "strong" (strongly typed network) | "weak" | "weak-fp16" (TensorRT 10 BuilderFlag.FP16)
    input_shape: tuple[int, ...]  # the static shape the engine was optimised for, e.g. (1, 224, 224, 3)
    tensorrt: str  # full TensorRT version, e.g. "10.3.0.30"
    gpu: str  # CUDA device name, e.g. "Orin (nvgpu)"
    compute_capability: str  # e.g. "8.7"
    sm_count: int  # multiprocessors: Orin Nano 8 GB has 8, NX 16 GB 8, AGX 64 GB 16
    memory_mib: int  # total device memory (on Jetson the shared RAM): tactics that fit differ with it
    dla_core: int | None = None
    workspace_mib: int | None = None  # builder workspace limit (None = TensorRT's default)
    builder_flags: tuple[str, ...] = ()  # e.g. ("GPU_FALLBACK",) for DLA builds, "TF32" when allowed

    def to_dict(self) -> dict[str, Any]:
        """JSON form as stored in index.json (tuples as lists)."""
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        d["builder_flags"] = list(self.builder_flags)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EngineKey:
        """Inverse of to_dict; raises KeyError/TypeError/ValueError on a malformed entry."""
        dla, ws = d.get("dla_core"), d.get("workspace_mib")
        return cls(model_sha256=str(d["model_sha256"]), package_digest=str(d["package_digest"]),
                   precision=str(d["precision"]), typing=str(d["typing"]),
                   input_shape=tuple(int(v) for v in d["input_shape"]), tensorrt=str(d["tensorrt"]),
                   gpu=str(d["gpu"]), compute_capability=str(d["compute_capability"]), sm_count=int(d["sm_count"]),
                   memory_mib=int(d["memory_mib"]), dla_core=None if dla is None else int(dla),
                   workspace_mib=None if ws is None else int(ws),
                   builder_flags=tuple(str(f) for f in d.get("builder_flags", ())))

    def digest(self) -> str:
        """sha256 of the canonical JSON of the key."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def file_name(self) -> str:
        """Readable, filesystem-safe engine file name ending in a short hash of the full key.

        e.g. `3fa2b1c4_fp16-strong_1x224x224x3_orin-nvgpu_sm87-x8_trt10.3.0.30_9c1d2e3f4a5b.engine`.
        """
        shape = "x".join(str(v) for v in self.input_shape)
        device = device_tag(self.gpu, self.compute_capability, self.tensorrt, self.sm_count)
        dla = f"_dla{self.dla_core}" if self.dla_core is not None else ""
        return (
            f"{self.model_sha256[:8]}_{self.precision}-{self.typing}_{shape}_{device}{dla}_{self.digest()[:12]}.engine"
        )

    def describe(self) -> str:
        """One line for logs and CLI output."""
        dla = f", DLA core {self.dla_core}" if self.dla_core is not None else ""
        ws = f", workspace {self.workspace_mib} MiB" if self.workspace_mib is not None else ""
        return (f"model {self.model_sha256[:12]}, {self.precision} ({self.typing} typing), input "
                f"{list(self.input_shape)}, TensorRT {self.tensorrt}, {self.gpu} (sm {self.compute_capability}, "
                f"{self.sm_count} SMs, {self.memory_mib} MiB){dla}{ws}")


@dataclass(frozen=True)
class EngineEntry:
    """One engine recorded in index.json."""

    path: Path
    key: EngineKey
    sha256: str
    bytes: int
    created: str
    build_seconds: float | None


def package_root(package: PackageLike) -> Path:
    """Root directory of a package given as a ModelPackage or a path."""
    return package.root if isinstance(package, ModelPackage) else Path(package).resolve()


def engines_dir(package: PackageLike) -> Path:
    """`<package>/engines`, where engines and index.json live."""
    return package_root(package) / ENGINES_DIR


def model_sha256(package: ModelPackage, onnx_path: Path) -> str:
    """sha256 of `onnx_path` as recorded in the manifest (the file itself was verified by load_package)."""
    try:
        rel = onnx_path.resolve().relative_to(package.root).as_posix()
    except ValueError as e:
        raise PackageError(f"{onnx_path}: expected an ONNX graph inside the package {package.root}") from e
    entry = package.manifest["files"].get(rel)
    if entry is None:
        raise PackageError(f"{package.root / 'manifest.json'}: files: {rel!r} is not listed, so it cannot be "
                           "used to build a cached engine")
    return str(entry["sha256"])


def _read_index(root: Path) -> dict[str, Any]:
    """Parsed index.json; an absent, unreadable or foreign index reads as empty (its engines will be rebuilt)."""
    path = root / ENGINES_DIR / INDEX_NAME
    empty: dict[str, Any] = {"version": INDEX_VERSION, "engines": {}}
    if not path.is_file():
        return empty
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        log.warning("%s: unreadable engine index (%s); cached engines will be rebuilt", path, e)
        return empty
    if not isinstance(data, dict) or data.get("version") != INDEX_VERSION or not isinstance(data.get("engines"), dict):
        log.warning("%s: unexpected engine index format; cached engines will be rebuilt", path)
        return empty
    return data


def list_engines(package: PackageLike) -> list[EngineEntry]:
    """Every well-formed entry of index.json (whether or not its file is still there and intact)."""
    root = package_root(package)
    out = []
    for name, rec in _read_index(root)["engines"].items():
        try:
            out.append(EngineEntry(path=root / ENGINES_DIR / name, key=EngineKey.from_dict(rec["key"]),
                                   sha256=str(rec["sha256"]), bytes=int(rec["bytes"]), created=str(rec["created"]),
                                   build_seconds=rec.get("build_seconds")))
        except (KeyError, TypeError, ValueError):
            log.warning("%s: malformed engine index entry %r ignored", root / ENGINES_DIR / INDEX_NAME, name)
    return out


def find_engine(package: PackageLike, key: EngineKey) -> Path | None:
    """Path of a cached engine for exactly `key` whose file still has its recorded sha256, else None."""
    root = package_root(package)
    name = key.file_name()
    for entry in list_engines(root):
        if entry.path.name != name:
            continue
        if entry.key != key:
            log.info("engine %s: index key differs from the requested one; rebuilding", name)
            return None
        if not entry.path.is_file():
            log.info("engine %s: listed in the index but missing; rebuilding", name)
            return None
        digest, size = sha256_file(entry.path)
        if digest != entry.sha256 or size != entry.bytes:
            log.warning("engine %s: sha256 mismatch with the index (corrupt or replaced); rebuilding", entry.path)
            return None
        return entry.path
    return None


def _write_index(directory: Path, index: dict[str, Any]) -> None:
    text = json.dumps(index, indent=2, sort_keys=True) + "\n"
    atomic_write_bytes(directory / INDEX_NAME, text.encode(), fsync=True)


@contextlib.contextmanager
def _index_lock(directory: Path) -> Iterator[None]:
    """Exclusive advisory lock around index read-modify-write (a no-op where fcntl does not exist)."""
    try:
        import fcntl
    except ImportError:  # not on Linux/Jetson: concurrent builders are not supported there
        yield
        return
    with open(directory / ".index.lock", "a+b") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def store_engine(package: PackageLike, key: EngineKey, plan: bytes, build_seconds: float | None = None) -> Path:
    """Write `plan` as the engine for `key` and record it in index.json (both atomically); return its path."""
    directory = engines_dir(package)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PackageError(f"{directory}: cannot create the engine cache ({e.strerror}); make the package "
                           "directory writable") from e
    path = directory / key.file_name()
    digest = hashlib.sha256(plan).hexdigest()
    with _index_lock(directory):
        atomic_write_bytes(path, plan, fsync=True)
        index = _read_index(directory.parent)
        index["engines"][path.name] = {
            "key": key.to_dict(),
            "sha256": digest,
            "bytes": len(plan),
            "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "build_seconds": None if build_seconds is None else round(float(build_seconds), 3),
            "edge_ad_version": __version__,
        }
        _write_index(directory, index)
    log.info("cached TensorRT engine %s (%d bytes)", path, len(plan))
    return path


def set_default(package: PackageLike, device: str, options: dict[str, Any], engine: Path, digest: str) -> None:
    """Record `options` (EngineOptions.to_dict()) as what a run on `device` (a device_tag) uses when it names none:
    what `edge-ad build` built last there, for the package of manifest digest `digest`."""
    directory = engines_dir(package)
    with _index_lock(directory):
        index = _read_index(directory.parent)
        defaults = index.setdefault("defaults", {})
        if not isinstance(defaults, dict):
            defaults = index["defaults"] = {}
        defaults[device] = {"options": dict(options), "engine": engine.name, "package_digest": digest}
        _write_index(directory, index)


def get_default(package: PackageLike, device: str, digest: str) -> dict[str, Any] | None:
    """The options recorded by set_default for `device` and this package digest, or None (none recorded, another
    package's, or malformed)."""
    rec = _read_index(package_root(package)).get("defaults", {})
    rec = rec.get(device) if isinstance(rec, dict) else None
    if not isinstance(rec, dict) or rec.get("package_digest") != digest or not isinstance(rec.get("options"), dict):
        return None
    return dict(rec["options"])


def prune_engines(package: ModelPackage) -> list[Path]:
    """Delete cached engines that can never be loaded again; return their paths.

    That is engines of another package digest (a re-export or an edit changes it) and engine files the index does not
    list (e.g. from an older index format); on a Jetson with a small disk they should not linger. Engines of the
    current package for other devices are kept.
    """
    directory = engines_dir(package)
    if not directory.is_dir():
        return []
    removed: list[Path] = []
    with _index_lock(directory):
        index = _read_index(directory.parent)
        for name, rec in list(index["engines"].items()):
            key = rec.get("key") if isinstance(rec, dict) else None
            if isinstance(key, dict) and key.get("package_digest") == package.digest:
                continue
            del index["engines"][name]
            with contextlib.suppress(FileNotFoundError):
                (directory / name).unlink()
            removed.append(directory / name)
        for path in sorted(directory.glob("*.engine")):
            if path.name not in index["engines"]:
                path.unlink()
                removed.append(path)
        if removed:
            _write_index(directory, index)
    for path in removed:
        log.info("removed stale engine %s (its ONNX graph is no longer in the package)", path)
    return removed
