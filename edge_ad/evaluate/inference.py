"""Run a PyTorch model over a list of samples and collect scores, maps and masks per category.

One place for dataset inference, shared by threshold derivation, `edge-ad eval`, export parity and the
precision gate, so every consumer sees identical numbers.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from edge_ad.data.mvtec import Sample
from edge_ad.data.torch_dataset import ImageDataset
from edge_ad.models.base import AnomalyModel


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
    """Score every sample with `model.forward` in eval mode (batched, no grad)."""
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
