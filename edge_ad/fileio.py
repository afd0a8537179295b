"""Atomic file writes (temp file in the same folder, then rename): readers and crashes never see a half-written
file. Standard library only, so the line-side runtime and the lab side share it."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def default_mode(directory: bool = False) -> int:
    """The mode a plain open()/mkdir() would give under the current umask (0o644 / 0o755 with umask 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, fsync: bool = False,
                       mode: int | None = None) -> None:
    """Write `data` to `path` atomically; `fsync` also forces it to disk before the rename (engines, indexes).
    The file gets `mode` (default: what the umask allows, as a plain open() would; 0o600 for secrets)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        os.chmod(tmp, default_mode() if mode is None else mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str, mode: int | None = None) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), mode=mode)


def atomic_write_json(path: str | os.PathLike[str], obj: Any, **dumps_kwargs: Any) -> None:
    """`obj` as indented JSON plus a newline (extra keyword arguments go to json.dumps)."""
    atomic_write_text(path, json.dumps(obj, indent=2, **dumps_kwargs) + "\n")


def read_text_file(path: str | os.PathLike[str], what: str, max_bytes: int = 64 << 20) -> str:
    """UTF-8 text of a config/metadata file; ConfigError naming the file when it is missing, too large, unreadable
    or not text (e.g. a binary or pickle file put in its place)."""
    from edge_ad.errors import ConfigError

    p = Path(path)
    try:
        if p.stat().st_size > max_bytes:
            raise ConfigError(f"{p}: {what} is larger than {max_bytes} bytes")
        return p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: {what} not found") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: {what} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read {what} ({e.strerror})") from None


def read_json_file(path: str | os.PathLike[str], what: str) -> Any:
    """Parsed JSON of a metadata file (run.json, thresholds.json, ...); ConfigError naming the file otherwise."""
    from edge_ad.errors import ConfigError

    try:
        return json.loads(read_text_file(path, what))
    except (ValueError, RecursionError) as e:
        raise ConfigError(f"{Path(path)}: {what} is not valid JSON ({e})") from None


def read_yaml_file(path: str | os.PathLike[str], what: str) -> Any:
    """Parsed YAML (safe loader: plain data only, never objects) of a config file; ConfigError naming the file."""
    import yaml

    from edge_ad.errors import ConfigError

    try:
        return yaml.safe_load(read_text_file(path, what))
    except (yaml.YAMLError, RecursionError) as e:
        raise ConfigError(f"{Path(path)}: {what} is not valid YAML ({e})") from None


def sha256_file(path: str | os.PathLike[str]) -> tuple[str, int]:
    """(hex sha256, size in bytes) of a file, read in 1 MiB chunks: the one file hash of edge-ad (packages,
    engines, weights)."""
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            n += len(chunk)
    return h.hexdigest(), n


@contextlib.contextmanager
def staged_directory(out: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary sibling folder of `out` to fill; on a clean exit it replaces `out` (an existing `out` is moved
    aside first and removed only after the rename worked), on an error it is deleted and `out` stays as it was."""
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    os.chmod(tmp, default_mode(directory=True))  # mkdtemp makes 0700: the folder gets the umask's mode
    try:
        yield tmp
        if not target.exists():
            os.replace(tmp, target)
            return
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.rmdir(old)
        os.replace(target, old)
        try:
            os.replace(tmp, target)
        except BaseException:
            os.replace(old, target)
            raise
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
