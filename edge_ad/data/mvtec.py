"""Datasets: discovery, loading, image/mask reading (edge_ad.imageio), fingerprints, hold-out splits.

Layouts (`layout_of` tells them apart; every one loads into the same `Sample`s):
- MVTec AD (and LOCO, and `edge-ad synth`): below.
- MVTec AD 2: `<cat>/train/good`, `<cat>/validation/good`, `<cat>/test_public/good|bad`, masks in
  `<cat>/test_public/ground_truth/bad/<stem>_mask.png`; split "test" is test_public.
- VisA: `split_csv/1cls.csv` (object,split,label,image,mask; paths relative to the root), split train/test.
- Real-IAD: `realiad_jsons/<cat>.json` ({"train": [...], "test": [...]} entries with category, anomaly_class
  ("OK" = good), image_path, mask_path; paths relative to the root or `meta.prefix`).
- A folder dataset without masks: `<cat>/good/*` and optional `<cat>/bad/*`; every 4th good image and every bad one
  form the test split (image metrics only).


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
from typing import Any

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


def layout_of(root: str | os.PathLike[str]) -> str:
    """"mvtec", "mvtec_ad2", "visa", "realiad" or "folder" (see the module docstring)."""
    r = _check_root(root)
    if (r / "split_csv" / "1cls.csv").is_file():
        return "visa"
    if (r / "realiad_jsons").is_dir():
        return "realiad"
    subs = [d for d in r.iterdir() if d.is_dir() and not d.name.startswith(".")]
    if any((d / "test_public").is_dir() for d in subs):
        return "mvtec_ad2"
    if subs and not any((d / "train").is_dir() or (d / "test").is_dir() for d in subs) and any(
            (d / "good").is_dir() for d in subs):
        return "folder"
    return "mvtec"


def _visa_rows(r: Path) -> list[dict[str, str]]:
    import csv

    with open(r / "split_csv" / "1cls.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    need = {"object", "split", "label", "image"}
    if not rows or not need <= set(rows[0]):
        raise DataError(f"{r / 'split_csv' / '1cls.csv'}: expected the columns {sorted(need)} (+ mask)")
    return rows


def _realiad_entries(r: Path, category: str, split: str) -> list[dict[str, Any]]:
    import json

    path = r / "realiad_jsons" / f"{category}.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        prefix = str((doc.get("meta") or {}).get("prefix") or "")
        entries = list(doc["train" if split == "train" else "test"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path}: not a Real-IAD split file ({e})") from None
    return [{**e, "_prefix": prefix} for e in entries]


def discover_categories(root: str | os.PathLike[str]) -> list[str]:
    """Sorted category names of a dataset in any layout (`layout_of`)."""
    r = _check_root(root)
    layout = layout_of(r)
    if layout == "visa":
        return sorted({row["object"] for row in _visa_rows(r)})
    if layout == "realiad":
        return sorted(p.stem for p in (r / "realiad_jsons").glob("*.json"))
    if layout == "folder":
        return sorted(d.name for d in r.iterdir() if d.is_dir() and (d / "good").is_dir())
    if layout == "mvtec_ad2":
        return sorted(d.name for d in r.iterdir() if d.is_dir() and (d / "train").is_dir())
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
    layout = layout_of(r)
    if layout != "mvtec":
        others = _load_other(r, layout, wanted, split)
        if split == "train" and not others:
            raise DataError(f"dataset root {r} ({layout}): no training images for {wanted}")
        return others
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


def _file(r: Path, rel: str, what: str) -> Path:
    p = (r / rel).resolve()
    if r.resolve() not in p.parents or not p.is_file():
        raise DataError(f"dataset {r}: {what} {rel!r} is missing or outside the dataset")
    return p


def _load_other(r: Path, layout: str, cats: Sequence[str], split: str) -> list[Sample]:
    """Samples of the MVTec AD 2, VisA, Real-IAD and folder layouts (module docstring)."""
    out: list[Sample] = []
    if layout == "visa":
        for row in _visa_rows(r):
            if row["object"] not in cats or row["split"] != ("train" if split == "train" else "test"):
                continue
            bad = row["label"].strip().lower() not in ("normal", "good", "0")
            mask = _file(r, row["mask"], "mask") if bad and row.get("mask") else None
            out.append(Sample(_file(r, row["image"], "image"), row["object"], split, int(bad),
                              "anomaly" if bad else "good", mask))
        return sorted(out, key=lambda s: (s.category, str(s.path)))
    if layout == "realiad":
        for cat in cats:
            for e in _realiad_entries(r, cat, split):
                base = r / e["_prefix"]
                bad = str(e.get("anomaly_class", "OK")) != "OK"
                mask = _file(base, str(e["mask_path"]), "mask") if bad and e.get("mask_path") else None
                out.append(Sample(_file(base, str(e["image_path"]), "image"), cat, split, int(bad),
                                  str(e.get("anomaly_class", "OK")) if bad else "good", mask))
        return out
    if layout == "mvtec_ad2":
        for cat in cats:
            c = r / cat
            if split in ("train", "validation"):
                folder = c / split / "good"
                out += [Sample(p, cat, split, 0, "good", None) for p in (_images_in(folder) if folder.is_dir()
                                                                          else [])]
                continue
            test = c / "test_public"
            for p in _images_in(test / "good") if (test / "good").is_dir() else []:
                out.append(Sample(p, cat, "test", 0, "good", None))
            for p in _images_in(test / "bad") if (test / "bad").is_dir() else []:
                m = test / "ground_truth" / "bad" / f"{p.stem}_mask.png"
                if not m.is_file():
                    raise DataError(f"anomalous test image {p}: ground-truth mask missing, expected {m}")
                out.append(Sample(p, cat, "test", 1, "bad", m))
        return out
    for cat in cats:  # folder: every 4th good image is held for the test split, with every bad one
        good = _images_in(r / cat / "good")
        if split == "train":
            out += [Sample(p, cat, "train", 0, "good", None) for i, p in enumerate(good) if i % 4 != 3]
        elif split == "test":
            out += [Sample(p, cat, "test", 0, "good", None) for i, p in enumerate(good) if i % 4 == 3]
            bad_dir = r / cat / "bad"
            out += [Sample(p, cat, "test", 1, "bad", None) for p in (_images_in(bad_dir) if bad_dir.is_dir()
                                                                     else [])]
    return out


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
