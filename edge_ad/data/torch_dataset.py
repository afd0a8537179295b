"""PyTorch dataset over `Sample`s that feeds the model exactly the pixels the line-side runtime produces."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from edge_ad.data.mvtec import Sample, read_mask
from edge_ad.errors import DataError
from edge_ad.imageio import read_image
from edge_ad.runtime.preprocess import Preprocess


class ImageDataset(Dataset):
    """Reads, preprocesses (`Preprocess.apply` + `normalize`) and returns one sample dict per index."""

    def __init__(self, samples: Sequence[Sample], preprocess: Preprocess, with_masks: bool = False) -> None:
        self.samples = list(samples)
        self.preprocess = preprocess
        self.with_masks = with_masks

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        s = self.samples[index]
        bgr = read_image(s.path)
        item: dict[str, Any] = {
            "image": torch.from_numpy(self.preprocess.normalize(self.preprocess.apply(bgr))),
            "label": int(s.label),
            "category": s.category,
            "defect_type": s.defect_type,
            "path": str(s.path),
        }
        if self.with_masks:
            item["mask"] = torch.from_numpy(self._mask(s, bgr.shape[:2])[None])
        return item

    def _mask(self, s: Sample, image_hw: tuple[int, ...]) -> np.ndarray:
        """Ground-truth mask aligned with the image crop; all zeros for good images."""
        if s.mask_path is None:
            if s.label:
                raise DataError(f"anomalous image {s.path}: no ground-truth mask path, cannot evaluate pixel metrics")
            return np.zeros(self.preprocess.crop, np.uint8)
        m = read_mask(s.mask_path)
        if m.shape[:2] != tuple(image_hw):
            raise DataError(
                f"mask {s.mask_path}: size {m.shape[1]}x{m.shape[0]} differs from image {s.path} "
                f"size {image_hw[1]}x{image_hw[0]}"
            )
        return self.preprocess.apply_mask(m)
