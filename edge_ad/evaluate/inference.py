"""Run a PyTorch model over a list of samples and collect scores, maps and masks per category.

One place for dataset inference, shared by threshold derivation, `edge-ad eval`, export parity and the
precision gate, so every consumer sees identical numbers.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from edge_ad.data.mvtec import Sample
from edge_ad.data.torch_dataset import ImageDataset
from edge_ad.models.base import AnomalyModel
from edge_ad.runtime.geometry import Geometry
from edge_ad.runtime.preprocess import Preprocess

log = logging.getLogger(__name__)


@dataclass
class DatasetPredictions:
    """Flat per-image predictions in sample order (maps at the model's output size)."""

    samples: list[Sample]
    scores: np.ndarray  # [N] float32
    maps: np.ndarray  # [N,h,w] float32
    masks: np.ndarray | None = None  # [N,h,w] uint8, ground truth resized to the map size
    extras: dict[str, Any] = field(default_factory=dict)

    def by_category(self) -> dict[str, np.ndarray]:
        """category -> indices into the flat arrays (sorted by category name)."""
        idx: dict[str, list[int]] = defaultdict(list)
        for i, s in enumerate(self.samples):
            idx[s.category].append(i)
        return {c: np.asarray(v) for c, v in sorted(idx.items())}


def resize_masks_nearest(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """GT masks at crop size -> map size with nearest neighbour, then > 0 (the reference evaluation)."""
    if tuple(masks.shape[-2:]) == tuple(size):
        return (masks > 0).to(torch.uint8)
    m = torch.nn.functional.interpolate(masks.float(), size=size, mode="nearest")
    return (m > 0).to(torch.uint8)


@torch.no_grad()
def predict_samples(
    model: AnomalyModel,
    samples: Sequence[Sample],
    *,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    with_masks: bool = False,
    workers: int = 0,
    desc: str = "inference",
    progress: bool = True,
) -> DatasetPredictions:
    """Score every sample with `model.forward` in eval mode (batched, no grad). A model with an inspection geometry
    is scored the way the runtime scores frames (`predict_geometry`)."""
    if model.geometry is not None:
        return predict_geometry(model, samples, device=device, with_masks=with_masks, desc=desc, progress=progress)
    model.eval()
    ds = ImageDataset(list(samples), model.preprocess, with_masks=with_masks)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers)
    scores, maps, masks = [], [], []
    for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
        amap, score = model(batch["image"].to(device))
        scores.append(score.float().cpu().numpy())
        maps.append(amap[:, 0].float().cpu().numpy())
        if with_masks:
            masks.append(resize_masks_nearest(batch["mask"], tuple(amap.shape[-2:]))[:, 0].numpy())
    n = len(ds)
    return DatasetPredictions(
        samples=list(samples),
        scores=np.concatenate(scores) if n else np.zeros(0, np.float32),
        maps=np.concatenate(maps) if n else np.zeros((0, 1, 1), np.float32),
        masks=np.concatenate(masks) if with_masks and n else None,
    )


#: evaluation maps of geometry runs: the ROI box map resized to this size (height, width)
GEOMETRY_EVAL_HW = (256, 256)


@torch.no_grad()
def predict_geometry(model: AnomalyModel, samples: Sequence[Sample], *, device: torch.device | str = "cpu",
                     with_masks: bool = False, desc: str = "inference", progress: bool = True) -> DatasetPredictions:
    """`frame_predictions` with the PyTorch model as the engine."""
    geo, pre = model.geometry, model.preprocess
    assert geo is not None
    model.eval()

    def infer(crops: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.stack([pre.normalize(c) for c in crops])).to(device)
        amap, _ = model(x)
        return np.asarray(amap[:, 0].float().cpu().numpy())

    return frame_predictions(geo, pre, samples, infer, with_masks=with_masks, desc=desc, progress=progress)


def frame_predictions(geo: Geometry, pre: Preprocess, samples: Sequence[Sample],
                      infer: Callable[[np.ndarray], np.ndarray], *, with_masks: bool = False,
                      desc: str = "inference", progress: bool = True) -> DatasetPredictions:
    """Frames through a geometry as the runtime does (align, views, `infer` on every tile of a frame at once,
    stitch, score from the stitched map); maps and masks in the ROI box, resized to GEOMETRY_EVAL_HW. One
    implementation for thresholds, `edge-ad eval` (PyTorch) and the precision gate (ONNX Runtime). A frame that
    cannot be aligned is inspected at the reference pose here (the runtime refuses it) and counted in
    `extras["alignment_failures"]`."""
    import cv2

    from edge_ad.data.mvtec import read_mask
    from edge_ad.errors import AlignmentError
    from edge_ad.imageio import read_image
    from edge_ad.runtime.geometry import Placement
    from edge_ad.runtime.postprocess import map_to_source

    scores, maps, masks, failed = [], [], [], []
    eh, ew = GEOMETRY_EVAL_HW
    for s in tqdm(list(samples), desc=desc, disable=not progress, leave=False):
        img = read_image(s.path)
        try:
            placement = geo.locate(img, s.category if s.category in geo.references else None)
        except AlignmentError as e:
            failed.append(f"{s.path}: {e}")
            cat = s.category if s.category in geo.references else next(iter(geo.references))
            placement = Placement(cat, np.eye(2, 3), 0.0, (int(img.shape[0]), int(img.shape[1])))
        views = geo.views(img, placement)
        tile_maps = infer(np.stack([pre.apply(v) for v in views]))
        tiles = [map_to_source(m, pre, (int(v.shape[0]), int(v.shape[1]))) for m, v in zip(tile_maps, views)]
        box = geo.stitch(tiles, placement)
        scores.append(geo.score(box, placement))
        maps.append(cv2.resize(box, (ew, eh), interpolation=cv2.INTER_LINEAR))
        if with_masks:
            if s.mask_path is None:
                masks.append(np.zeros((eh, ew), np.uint8))
            else:
                m = geo.mask_to_box((read_mask(s.mask_path) > 0).astype(np.uint8), placement)
                masks.append((cv2.resize(m, (ew, eh), interpolation=cv2.INTER_NEAREST) > 0).astype(np.uint8))
    if failed:
        log.warning("%d frame(s) could not be aligned (the runtime would refuse them): %s", len(failed), failed[:3])
    n = len(scores)
    return DatasetPredictions(
        samples=list(samples), scores=np.asarray(scores, np.float32),
        maps=np.stack(maps).astype(np.float32) if n else np.zeros((0, eh, ew), np.float32),
        masks=np.stack(masks) if with_masks and n else None, extras={"alignment_failures": len(failed)})
