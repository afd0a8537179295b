"""Datasets: MVTec-layout loading (`mvtec`), the synthetic generator (`synth`) and PyTorch datasets (`torch_dataset`).

Importing this package pulls in numpy/OpenCV only; `torch_dataset` is imported explicitly where torch is wanted.
"""

from edge_ad.data.mvtec import (
    Sample,
    defect_kind,
    discover_categories,
    fingerprint,
    load_samples,
    read_mask,
    split_holdout,
)
from edge_ad.imageio import read_image

__all__ = [
    "Sample",
    "defect_kind",
    "discover_categories",
    "fingerprint",
    "load_samples",
    "read_image",
    "read_mask",
    "split_holdout",
]
