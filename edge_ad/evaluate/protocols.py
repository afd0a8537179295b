"""Evaluation/training protocols: edge-ad's own (the default) and each model family's official one, exactly.

A protocol fixes what differs between the official codes around the model: the image resize (the package
manifest records it, so the runtime reproduces it), how ground-truth masks are brought to the map size, the metric
variants (`MetricVariants`), and training-data use (hold-out, one model per category, epochs and batch).
Sources: Dinomaly `dataset.py`/`utils.py::evaluation_batch`; MambaAD `configs/mambaad/mambaad_mvtec.py` + ADer
`data/ad_dataset.py`/`util/metric.py`; DualAD `datasets/mvtec_dataset.py`/`utils/eval_helper.py`; ULSAD
`anomalib/models/ulsad/mvtec.yaml` + its anomalib 0.x data and metrics (torchmetrics 0.10.3).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from edge_ad.errors import ConfigError
from edge_ad.evaluate.metrics import MetricVariants
from edge_ad.runtime.preprocess import Preprocess
from edge_ad.runtime.resample import pil_bilinear

PROTOCOLS = ("edge-ad", "official")


@dataclass(frozen=True)
class Protocol:
    """One protocol. `resize`: the image interpolation to train/evaluate with (None = the model's own); `mask`:
    the mask method (see `protocol_mask`); `holdout`: hold good training images out for thresholds;
    `per_category`: one model per category; `epochs`/`batch`/`drop_last`: the official training length (epochs
    None = the paper configuration's iteration count); `calibrate_on_test_good`: output normalisation fitted on the test
    split's good images (ULSAD's official code does this; a leak that edge-ad's protocol never has)."""

    name: str
    family: str
    source: str
    resize: str | None
    mask: str
    variants: MetricVariants
    holdout: bool = True
    per_category: bool = False
    epochs: int | None = None
    batch: int | None = None
    drop_last: bool = True
    calibrate_on_test_good: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)

    def describe(self) -> dict[str, Any]:
        """What a report records: protocol, source, resize, mask handling, metric variants, training-data use."""
        return {"name": self.name, "family": self.family, "source": self.source,
                "image_resize": self.resize or "model default", "mask": self.mask,
                "metric_variants": self.variants.to_dict(), "holdout": self.holdout,
                "per_category": self.per_category, "epochs": self.epochs, "batch": self.batch,
                "calibrate_on_test_good": self.calibrate_on_test_good, "notes": list(self.notes)}

    def train_iters(self, n_images: int, default_iters: int) -> int:
        """Optimiser steps of the official length for `n_images` training images (the paper's if no epochs)."""
        if self.epochs is None or self.batch is None:
            return default_iters
        per_epoch = n_images // self.batch if self.drop_last else math.ceil(n_images / self.batch)
        return self.epochs * max(per_epoch, 1)


EDGE_AD = Protocol("edge-ad", "any", "edge-ad", None, "edge-ad", MetricVariants())

_OFFICIAL = {
    "dinomaly": Protocol(
        "official", "dinomaly", "github.com/guojiajeremy/Dinomaly dataset.py, utils.py::evaluation_batch",
        "pil-bilinear", "dinomaly", MetricVariants(image_f1="eps", pixel_f1="eps", aupro="max-200"),
        holdout=False),
    "mambaad": Protocol(
        "official", "mambaad", "github.com/lewandofskee/MambaAD configs/mambaad/mambaad_mvtec.py + "
        "github.com/zhangzjn/ADer data/ad_dataset.py, util/metric.py (use_adeval off, as MambaAD's configs)",
        "pil-bilinear", "mambaad",
        MetricVariants(image_f1="finite", pixel_f1="ader-21", aupro="minmax-100", image_labels="mask"),
        holdout=False, epochs=1000, batch=16, drop_last=True,
        notes=("ADer logs each metric's maximum over the evaluations during training; edge-ad evaluates the "
               "final weights",)),
    "dualad": Protocol(
        "official", "dualad", "github.com/cyhaan/DualAD datasets/mvtec_dataset.py, utils/eval_helper.py",
        "linear", "dualad", MetricVariants(image_f1="finite", pixel_f1="finite", aupro="minmax-200"),
        holdout=False, epochs=1200, batch=16, drop_last=False,
        notes=("the official code keeps the checkpoint with the best test image AUROC; edge-ad evaluates the "
               "final weights",)),
    "ulsad": Protocol(
        "official", "ulsad", "github.com/sukanyapatra1997/ULSAD-2024 anomalib/models/ulsad/mvtec.yaml, "
        "anomalib/utils/metrics/{auroc,aupro}.py (torchmetrics 0.10.3)",
        "linear", "ulsad",
        MetricVariants(auroc="anomalib", aupro="anomalib", keys=("image_auroc", "pixel_auroc", "aupro")),
        holdout=False, per_category=True, epochs=200, batch=8, drop_last=False, calibrate_on_test_good=True,
        notes=("map quantiles are fitted on the test split's good images (official: validation = test set)",
               "the official code keeps the checkpoint with the best test image AUROC; edge-ad evaluates the "
               "final weights")),
}


def family_of(model_name: str) -> str:
    """Model family of a registered name: dinomaly-s -> dinomaly, ulsad-tiny -> ulsad."""
    for fam in _OFFICIAL:
        if model_name == fam or model_name.startswith(fam + "-"):
            return fam
    raise ConfigError(f"protocol: no official protocol is known for model {model_name!r}; "
                      f"families with one: {sorted(_OFFICIAL)}")


def get_protocol(name: str, model_name: str) -> Protocol:
    """The protocol `name` ("edge-ad" or "official") for `model_name`; ConfigError for anything else."""
    if name == "edge-ad":
        return EDGE_AD
    if name == "official":
        return _OFFICIAL[family_of(model_name)]
    raise ConfigError(f"protocol: expected one of {PROTOCOLS}, got {name!r}")


def use_resize(model: Any, protocol: Protocol) -> str | None:
    """Give `model` the protocol's image resize; returns the interpolation it had if that changed, else None."""
    before = model.preprocess.interpolation
    if not protocol.resize or protocol.resize == before:
        return None
    model.preprocess = dataclasses.replace(model.preprocess, interpolation=protocol.resize)
    return str(before)


def _grey(raw: np.ndarray) -> np.ndarray:
    return raw.max(axis=2) if raw.ndim == 3 else raw


def _nearest_torch(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """F.interpolate(mode="nearest") of an HxW array (src index = floor(dst * in/out) in float32)."""
    ys = np.minimum(np.floor(np.arange(size[0], dtype=np.float32) * np.float32(m.shape[0] / size[0])),
                    m.shape[0] - 1).astype(np.int64)
    xs = np.minimum(np.floor(np.arange(size[1], dtype=np.float32) * np.float32(m.shape[1] / size[1])),
                    m.shape[1] - 1).astype(np.int64)
    return m[ys][:, xs]


def protocol_mask(protocol: Protocol, raw: np.ndarray | None, pre: Preprocess, map_hw: tuple[int, int]) -> np.ndarray:
    """Ground truth as the protocol's official code builds it: raw mask file pixels (uint8, HxW or HxWxC; None
    for good images) -> uint8 {0,1} at the map size.

    edge-ad: > 0, cv2 bilinear to the resize, crop, > 0, nearest to the map. dinomaly: PIL bilinear on the raw
    values to the resize, crop, nearest to the map, > 0. mambaad: > 0 -> 255, PIL bilinear, crop, / 255 > 0.5.
    dualad: cv2 INTER_NEAREST to the input, / 255 truncated to int (= 255). ulsad: / 255, cv2 INTER_NEAREST, int().
    """
    if raw is None:
        return np.zeros(map_hw, np.uint8)
    g = _grey(np.asarray(raw))
    top, left, ch, cw = pre.crop_box
    rh, rw = pre.resize
    if protocol.mask == "edge-ad":
        m = pre.apply_mask(g)
        return (_nearest_torch(m, map_hw) > 0).astype(np.uint8)
    if protocol.mask == "dinomaly":
        m = pil_bilinear(g, (rh, rw))[top:top + ch, left:left + cw]
        return (_nearest_torch(m, map_hw) > 0).astype(np.uint8)
    if protocol.mask == "mambaad":
        m = pil_bilinear(((g > 0) * 255).astype(np.uint8), (rh, rw))[top:top + ch, left:left + cw]
        m = (m.astype(np.float32) / np.float32(255.0)) > 0.5
        return _nearest_torch(m.astype(np.uint8), map_hw)
    if protocol.mask in ("dualad", "ulsad"):
        m = cv2.resize(g, (rw, rh), interpolation=cv2.INTER_NEAREST)[top:top + ch, left:left + cw]
        return _nearest_torch((m == 255).astype(np.uint8), map_hw)
    raise ConfigError(f"protocol {protocol.name}: unknown mask method {protocol.mask!r}")
