"""Anomalib 0.x's AUROC and AUPRO (torchmetrics 0.10.3 arithmetic, float32 on the CPU), as official ULSAD reports.

Re-implemented from the semantics of `anomalib/utils/metrics/{auroc,aupro}.py` in the official ULSAD repository
and torchmetrics 0.10.3's `_binary_clf_curve`/`binary_roc`/`auc`: the AUPRO averages per-region ROC curves
resampled onto the global curve's points up to FPR 0.3 (linear interpolation at the limit) and divides the area
by the last FPR. `binary_roc` squashes scores through a sigmoid whenever one lies outside [0, 1] (per call, as
torchmetrics does); the AUROC path does not. Lab side only (needs torch).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch


def _clf_curve(preds: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(false positives, true positives) at each distinct score, highest first (torchmetrics' _binary_clf_curve)."""
    order = torch.argsort(preds, descending=True)
    preds, target = preds[order], target[order]
    distinct = torch.where(preds[1:] - preds[:-1])[0]
    idx = torch.nn.functional.pad(distinct, [0, 1], value=target.numel() - 1)
    tps = torch.cumsum((target == 1).to(torch.long), dim=0)[idx]
    return 1 + idx - tps, tps


def _roc(preds: torch.Tensor, target: torch.Tensor, *, squash: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(fpr, tpr) from (0, 0); `squash`: binary_roc's sigmoid when a score lies outside [0, 1]."""
    if squash and not torch.all((preds >= 0) * (preds <= 1)):
        preds = preds.sigmoid()
    fps, tps = _clf_curve(preds, target)
    zero = torch.zeros(1, dtype=fps.dtype)
    fps, tps = torch.cat([zero, fps]), torch.cat([zero, tps])
    return fps / fps[-1], tps / tps[-1]


def _auc(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """torchmetrics.functional.auc(x, y, reorder=True): stable sort by x, then the trapezoid rule."""
    x, order = torch.sort(x, stable=True)
    return torch.trapz(y[order], x)


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """anomalib `AUROC` (torchmetrics legacy `ROC` + `auc(reorder=True)`) over flat labels/scores."""
    fpr, tpr = _roc(torch.as_tensor(np.ascontiguousarray(scores).reshape(-1), dtype=torch.float32),
                    torch.as_tensor(np.asarray(labels).reshape(-1).astype(np.int64)), squash=False)
    return float(_auc(fpr, tpr))


def _interp1d(old_x: torch.Tensor, old_y: torch.Tensor, new_x: torch.Tensor) -> torch.Tensor:
    eps = torch.finfo(old_y.dtype).eps
    slope = (old_y[1:] - old_y[:-1]) / (eps + (old_x[1:] - old_x[:-1]))
    idx = torch.clamp(torch.searchsorted(old_x, new_x) - 1, 0, old_x.size(0) - 2)
    return old_y[idx] + slope[idx] * (new_x - old_x[idx])


def _components(masks: np.ndarray) -> torch.Tensor:
    """Region labels unique across images (cv2.connectedComponents, 8-connected), as anomalib's CPU path."""
    out = np.zeros(masks.shape, np.int64)
    nxt = 1
    for i, m in enumerate(masks):
        _, comps = cv2.connectedComponents(m.astype(np.uint8))
        for lab in np.unique(comps)[1:]:
            out[i][comps == lab] = nxt
            nxt += 1
    return torch.from_numpy(out.reshape(-1))


def aupro(masks: np.ndarray, maps: np.ndarray, fpr_limit: float = 0.3) -> float:
    """anomalib `AUPRO(fpr_limit=0.3)` over masks [N,h,w] (> 0 = defect) and maps [N,h,w]; NaN where undefined."""
    gt = np.asarray(masks) > 0
    cca = _components(gt)
    target = torch.from_numpy(gt.reshape(-1))
    preds = torch.as_tensor(np.ascontiguousarray(maps).reshape(-1), dtype=torch.float32)
    labels = cca.unique()[1:]
    if labels.numel() == 0 or bool(target.all()):
        return float("nan")
    lim = torch.tensor(fpr_limit)
    size = int(torch.where(_roc(preds, target, squash=True)[0] <= lim)[0].size(0))
    tpr = torch.zeros(size, dtype=torch.float)
    fpr = torch.zeros(size, dtype=torch.float)
    new_idx = torch.arange(0, size, dtype=torch.float)
    background = cca == 0
    for label in labels:
        interp = False
        new_idx[-1] = size - 1
        region = cca == label
        keep = background | region
        f, t = _roc(preds[keep], region[keep], squash=True)
        f_lim = f[f > lim].min() if f[f <= lim].max() == 0 else lim
        f_idx = torch.where(f <= f_lim)[0]
        if not torch.allclose(f[f_idx].max(), lim):
            tmp = torch.searchsorted(f, lim)
            f_idx = torch.cat([f_idx, tmp.unsqueeze(0)])
            slope = 1 - ((f[tmp] - lim) / (f[tmp] - f[tmp - 1]))
            interp = True
        f, t = f[f_idx], t[f_idx]
        x = f_idx.float()
        x /= x.max()
        x *= new_idx.max()
        if interp:
            new_idx[-1] = x[-2] + ((x[-1] - x[-2]) * slope)
        tpr += _interp1d(x, t, new_idx)
        fpr += _interp1d(x, f, new_idx)
    tpr /= labels.size(0)
    fpr /= labels.size(0)
    return float(_auc(fpr, tpr) / fpr[-1])
