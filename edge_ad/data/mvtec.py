"""MVTec-AD-layout datasets: discovery, loading, image/mask reading (edge_ad.imageio), fingerprints, hold-out splits.

Layout: `<root>/<category>/train/good/*`, `<root>/<category>/test/<defect>/*` ("good" = normal) and
`<root>/<category>/ground_truth/<defect>/<stem>_mask.png`. MVTec LOCO's per-image mask folders
(`ground_truth/<defect>/<stem>/*.png`) are accepted too. numpy/OpenCV only, so line-side tools may use it.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_ad.errors import ConfigError, DataError
from edge_ad.imageio import IMAGE_EXTENSIONS, read_raw

LOGICAL_DEFECTS = frozenset({"missing_part", "extra_part", "misplaced_part", "logical_anomalies"})
SPLITS = ("train", "test", "validation")


@dataclass(frozen=True)
class Sample:
    """One image of a dataset; `label` is 0 for good and 1 for anomalous, `mask_path` is None for good images."""

    path: Path
    category: str
    split: str
    label: int
    defect_type: str
    mask_path: Path | None = None


def _is_image(p: Path) -> bool:
    return p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if _is_image(p))


def _check_root(root: str | os.PathLike[str]) -> Path:
    r = Path(root)
    if not r.exists():
        raise DataError(
            f"dataset root {r}: does not exist (expected an MVTec-layout folder <root>/<category>/train/good)"
        )
    if not r.is_dir():
        raise DataError(f"dataset root {r}: expected a directory, got a file")
    return r


def discover_categories(root: str | os.PathLike[str]) -> list[str]:
    """Sorted names of the sub-folders of `root` that hold a `train/` or `test/` folder."""
    r = _check_root(root)
    cats = sorted(
        d.name
        for d in r.iterdir()
        if d.is_dir() and not d.name.startswith(".") and ((d / "train").is_dir() or (d / "test").is_dir())
    )
    if not cats:
        raise DataError(
            f"dataset root {r}: no categories found (expected sub-folders like {r}/<category>/train/good); "
            "is this the folder that contains the category folders?"
        )
    return cats


def _mask_for(cat_dir: Path, defect: str, image: Path) -> Path:
    """Ground-truth mask of an anomalous test image: `<stem>_mask.png`, or a LOCO folder `<stem>/`."""
    gt = cat_dir / "ground_truth" / defect
    expected = gt / f"{image.stem}_mask.png"
    if expected.is_file():
        return expected
    loco = gt / image.stem
    if loco.is_dir() and _images_in(loco):
        return loco
    raise DataError(f"anomalous test image {image}: ground-truth mask missing, expected {expected}")


def _optional_mask(cat_dir: Path, defect: str, image: Path) -> Path | None:
    """The mask of a labelled validation image if it has one (validation masks are not required)."""
    try:
        return _mask_for(cat_dir, defect, image)
    except DataError:
        return None


def load_samples(
    root: str | os.PathLike[str], categories: Sequence[str] | None = None, split: str = "train"
) -> list[Sample]:
    """All samples of `split` for the given categories (all by default), as one multi-class set in sorted order.

    "validation" is optional (`<cat>/validation/<defect>/`, as MVTec LOCO): categories without it contribute
    nothing, and its masks are optional (validation is only used for image-level threshold selection).
    """
    if split not in SPLITS:
        raise ConfigError(f"split: expected one of {list(SPLITS)}, got {split!r}")
    r = _check_root(root)
    known = discover_categories(r)
    if isinstance(categories, str):
        categories = [categories]
    wanted = known if categories is None else sorted(dict.fromkeys(categories))
    if not wanted:
        raise ConfigError("categories: expected at least one category name, got an empty list")
    unknown = [c for c in wanted if c not in known]
    if unknown:
        raise DataError(
            f"dataset root {r}: unknown categor{'y' if len(unknown) == 1 else 'ies'} {unknown}; known: {known}"
        )
    samples: list[Sample] = []
    for cat in wanted:
        cat_dir = r / cat
        if split == "train":
            good = cat_dir / "train" / "good"
            images = _images_in(good) if good.is_dir() else []
            if not images:
                raise DataError(
                    f"category {cat!r}: empty, no train images in {good} (expected {', '.join(IMAGE_EXTENSIONS)} files)"
                )
            samples += [Sample(p, cat, "train", 0, "good", None) for p in images]
            continue
        test = cat_dir / split
        defects = (
            sorted(d.name for d in test.iterdir() if d.is_dir() and not d.name.startswith(".")) if test.is_dir() else []
        )
        n_before = len(samples)
        for defect in defects:
            for p in _images_in(test / defect):
                if defect == "good":
                    samples.append(Sample(p, cat, split, 0, "good", None))
                elif split == "validation":
                    samples.append(Sample(p, cat, split, 1, defect, _optional_mask(cat_dir, defect, p)))
                else:
                    samples.append(Sample(p, cat, split, 1, defect, _mask_for(cat_dir, defect, p)))
        if len(samples) == n_before and split == "test":
            raise DataError(f"category {cat!r}: no test images in {test}/<defect>/ (expected e.g. {test}/good/000.png)")
    return samples


def read_mask_values(path: str | os.PathLike[str]) -> np.ndarray:
    """Mask file (or LOCO folder of masks, united by max) -> HxW uint8 grey values as stored (colour masks: max over
    channels); the official protocols threshold these values their own way."""
    p = Path(path)
    files = _images_in(p) if p.is_dir() else [p]
    if not files:
        raise DataError(f"mask folder {p}: contains no mask images")
    out: np.ndarray | None = None
    for f in files:
        m = read_raw(f, "mask")
        m = m.max(axis=2) if m.ndim == 3 else m
        if out is not None and out.shape != m.shape:
            raise DataError(f"mask {f}: size {m.shape[::-1]} differs from {out.shape[::-1]} of the other masks in {p}")
        out = m if out is None else np.maximum(out, m)
    assert out is not None
    return out


def read_mask(path: str | os.PathLike[str]) -> np.ndarray:
    """Mask file (or LOCO folder of masks, united) -> HxW uint8 in {0,1}; any non-zero pixel is anomalous."""
    return (read_mask_values(path) > 0).astype(np.uint8)


def defect_kind(defect_type: str) -> str:
    """"good", "logical" (missing/extra/misplaced part, LOCO logical_anomalies) or "structural" (everything else)."""
    if defect_type == "good":
        return "good"
    return "logical" if defect_type in LOGICAL_DEFECTS else "structural"


def fingerprint(samples: Iterable[Sample], root: str | os.PathLike[str]) -> str:
    """sha256 hex over the relative paths and byte sizes of images and masks; independent of sample order."""
    r = Path(root)
    lines: set[str] = set()
    for s in samples:
        files = [s.path]
        if s.mask_path is not None:
            files += _images_in(s.mask_path) if s.mask_path.is_dir() else [s.mask_path]
        for f in files:
            try:
                size = f.stat().st_size
            except OSError as e:
                raise DataError(f"dataset file {f}: cannot stat ({e.strerror})") from None
            lines.add(f"{Path(os.path.relpath(f, r)).as_posix()}\t{size}")
    h = hashlib.sha256()
    for line in sorted(lines):
        h.update(line.encode("utf-8") + b"\n")
    return h.hexdigest()


def split_holdout(samples: Sequence[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Per-category random hold-out (>= 1 per category of >= 2 images when fraction > 0); input order is kept."""
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"holdout fraction: expected 0 <= fraction < 1, got {fraction}")
    by_cat: dict[str, list[Sample]] = {}
    for s in samples:
        by_cat.setdefault(s.category, []).append(s)
    held: set[Path] = set()
    for cat, items in by_cat.items():
        n = len(items)
        k = round(n * fraction)
        if fraction > 0 and n >= 2:
            k = min(max(k, 1), n - 1)
        if k == 0:
            continue
        ordered = sorted(items, key=lambda s: str(s.path))
        rng = np.random.default_rng([seed & 0xFFFFFFFF, zlib.crc32(cat.encode("utf-8"))])
        held.update(ordered[i].path for i in rng.permutation(n)[:k])
    train = [s for s in samples if s.path not in held]
    holdout = [s for s in samples if s.path in held]
    return train, holdout
