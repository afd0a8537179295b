"""What a model of a geometry run (`--align`, `--roi`, `--tile`) trains on: the references and ROIs chosen from the
options and the good training images, and the dataset of its views (aligned ROI crops or their tiles). The per-frame
work is `edge_ad.runtime.geometry`, the same code the runtime runs."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from edge_ad.data.mvtec import Sample
from edge_ad.data.torch_dataset import ImageDataset
from edge_ad.errors import AlignmentError, ConfigError, DataError
from edge_ad.imageio import read_image
from edge_ad.runtime.geometry import AlignSpec, Geometry, Reference, TileSpec, choose_reference
from edge_ad.runtime.preprocess import Preprocess

log = logging.getLogger(__name__)


def wants_geometry(cfg: dict[str, Any]) -> bool:
    return str(cfg.get("align") or "none") != "none" or bool(cfg.get("roi")) or bool(cfg.get("tile"))


def _per_category(option: str, value: str, category: str, kind: str) -> Path:
    """A file for every category, or the category's file in a folder (<cat>.png or <cat>/<kind>.png)."""
    p = Path(value)
    if p.is_file():
        return p
    if p.is_dir():
        for cand in (p / f"{category}.png", p / category / f"{kind}.png"):
            if cand.is_file():
                return cand
        raise ConfigError(f"--{option} {value}: no {category}.png or {category}/{kind}.png in this folder")
    raise ConfigError(f"--{option} {value}: no such file or folder")


def roi_from_polygons(path: Path, category: str, hw: tuple[int, ...]) -> np.ndarray:
    """An ROI drawn as polygons in YAML: `{category or "all": [{"points": [[x, y], ...], "weight": 0..255}, ...]}`
    (a bare list of points is a polygon of weight 255; later polygons paint over earlier ones, weight 0 cuts a hole,
    e.g. a label)."""
    from edge_ad.fileio import read_yaml_file

    doc = read_yaml_file(path, "ROI polygons")
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping {{category or all: [polygons]}}")
    key = category if category in doc else "all"
    polys = doc.get(key)
    if not isinstance(polys, list) or not polys:
        raise ConfigError(f"{path}: no polygons for category {category!r} (nor for 'all')")
    roi = np.zeros(hw[:2], np.uint8)
    for i, poly in enumerate(polys):
        spec = poly if isinstance(poly, dict) else {"points": poly}
        try:
            pts = np.asarray(spec["points"], np.float64)
            weight = int(spec.get("weight", 255))
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"{path}: {key}[{i}]: expected points [[x, y], ...] and an optional weight") from None
        if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 3 or not np.isfinite(pts).all() or not 0 <= weight <= 255:
            raise ConfigError(f"{path}: {key}[{i}]: expected >= 3 finite [x, y] points and a weight 0..255")
        cv2.fillPoly(roi, [np.round(pts).astype(np.int32)], int(weight))
    return roi


def build_geometry(cfg: dict[str, Any], samples: Sequence[Sample]) -> Geometry:
    """References and ROIs per category of the training samples, with the run's alignment and tiling."""
    by_cat: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        by_cat[s.category].append(s)
    align = str(cfg.get("align") or "none")
    refs: dict[str, Reference] = {}
    for cat, items in sorted(by_cat.items()):
        if align == "auto":
            imgs = [read_image(s.path) for s in items[:64]]
            ref_img = imgs[choose_reference(imgs)]
        elif align != "none":
            ref_img = read_image(_per_category("align", align, cat, "reference"))
        else:
            ref_img = read_image(items[0].path)  # the frame itself is the reference frame
        if cfg.get("roi") and str(cfg["roi"]).lower().endswith((".yaml", ".yml")):
            roi = roi_from_polygons(Path(str(cfg["roi"])), cat, ref_img.shape[:2])
        elif cfg.get("roi"):
            roi = read_image(_per_category("roi", str(cfg["roi"]), cat, "roi"))
            roi = cv2.cvtColor(roi, cv2.COLOR_BGR2GRAY) if roi.ndim == 3 else roi
            if roi.shape != ref_img.shape[:2]:
                raise DataError(f"--roi for {cat!r}: mask {roi.shape[1]}x{roi.shape[0]} differs from the reference "
                                f"frame {ref_img.shape[1]}x{ref_img.shape[0]}")
        else:
            roi = np.full(ref_img.shape[:2], 255, np.uint8)
        refs[cat] = Reference(cat, ref_img, roi)
    tiles = None
    if cfg.get("tile"):
        size = int(cfg["tile"])
        tiles = TileSpec(size, int(cfg.get("tile_stride") or max(1, size * 3 // 4)))
    geo = Geometry(refs, AlignSpec() if align != "none" else None, tiles)
    log.info("geometry: %d reference(s) %s, alignment %s, tiles %s", len(refs),
             {c: r.box for c, r in refs.items()}, "on" if geo.align else "off",
             f"{tiles.size}/{tiles.stride}" if tiles else "none")
    return geo


def views_dataset(samples: Sequence[Sample], preprocess: Preprocess,
                  geometry: Geometry | None) -> GeometryDataset | ImageDataset:
    """What a model of this run sees of `samples`: every view of every aligned image, or the whole images."""
    return GeometryDataset(samples, preprocess, geometry) if geometry is not None else ImageDataset(samples,
                                                                                                      preprocess)


class GeometryDataset(Dataset[dict[str, Any]]):
    """Every view (tile) of every aligned training image, as `ImageDataset` items (normalised CHW tensors)."""

    def __init__(self, samples: Sequence[Sample], preprocess: Preprocess, geometry: Geometry) -> None:
        self.preprocess, self.geometry = preprocess, geometry
        self.samples = list(samples)
        self.items: list[tuple[int, int]] = []
        self._views: list[list[np.ndarray]] = []
        for i, s in enumerate(self.samples):
            img = read_image(s.path)
            try:
                placement = geometry.locate(img, s.category)
            except AlignmentError as e:
                raise DataError(f"{s.path}: a good training image cannot be aligned ({e}); remove it or widen the "
                                "alignment bounds") from None
            views = [preprocess.apply(v) for v in geometry.views(img, placement)]
            self._views.append(views)
            self.items += [(i, k) for k in range(len(views))]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        i, k = self.items[index]
        s = self.samples[i]
        return {"image": torch.from_numpy(self.preprocess.normalize(self._views[i][k])), "label": int(s.label),
                "category": s.category, "defect_type": s.defect_type, "path": str(s.path)}
