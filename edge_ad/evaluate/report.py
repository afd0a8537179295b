"""Evaluation reports: metrics.json + metrics.md, aligned text tables, and heatmap overlay grids (OpenCV only)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge_ad.errors import ConfigError, DataError
from edge_ad.fileio import atomic_write_bytes

COLUMNS = (("image_auroc", "I-AUROC"), ("image_ap", "I-AP"), ("image_f1max", "I-F1max"), ("pixel_auroc", "P-AUROC"),
           ("pixel_ap", "P-AP"), ("pixel_f1max", "P-F1max"), ("aupro", "AUPRO"))
KIND_COLUMNS = (("image_auroc", "I-AUROC"), ("pixel_auroc", "P-AUROC"), ("pixel_ap", "P-AP"),
                ("pixel_f1max", "P-F1max"), ("aupro", "AUPRO"))
_KNOWN = {"categories", "mean", "defect_types", "defect_kinds", "notes"}


def _json_safe(x: Any) -> Any:
    """NaN/inf -> None and numpy scalars/arrays -> Python, so the file is strict JSON."""
    if isinstance(x, Mapping):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, np.ndarray)):
        return [_json_safe(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _pct(v: Any) -> str:
    """0..1 -> percent with one decimal; "n/a" for undefined (None/NaN)."""
    if v is None or (isinstance(v, (float, np.floating)) and math.isnan(v)):
        return "n/a"
    return f"{100.0 * float(v):.1f}"


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return cell == "n/a"
    return True


def format_table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """Aligned markdown-style table (readable in a terminal and valid markdown); numbers right-aligned."""
    cells = [[str(c) for c in r] for r in rows]
    for i, r in enumerate(cells):
        if len(r) != len(headers):
            raise ConfigError(f"format_table row {i}: expected {len(headers)} cells (one per header), got {len(r)}")
    cols = list(zip(*([list(map(str, headers))] + cells))) if headers else []
    widths = [max(len(c) for c in col) for col in cols]
    numeric = [bool(cells) and all(_is_number(r[j]) for r in cells) for j in range(len(widths))]

    def line(r: Sequence[str]) -> str:
        return "| " + " | ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(r, widths, numeric)) + " |"

    sep = "|" + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2)) for w, num in zip(widths, numeric)) + "|"
    return "\n".join([line(list(map(str, headers))), sep] + [line(r) for r in cells])


def _markdown(report: Mapping[str, Any], title: str) -> str:
    out = [f"# {title}", ""]
    extra = {k: v for k, v in report.items() if k not in _KNOWN}
    for k, v in extra.items():
        if isinstance(v, Mapping):
            v = ", ".join(f"{kk}={vv}" for kk, vv in v.items())
        out.append(f"- {k}: {v}")
    if extra:
        out.append("")
    rows = [[c] + [_pct(m.get(k)) for k, _ in COLUMNS] for c, m in report["categories"].items()]
    rows.append(["**mean**"] + [_pct(report["mean"].get(k)) for k, _ in COLUMNS])
    out += ["## Metrics per category (%)", "", format_table(rows, ["Category"] + [h for _, h in COLUMNS]), ""]
    kinds = report.get("defect_kinds") or {}
    if kinds:
        rows = [[kind, m.get("n_categories", ""), m.get("n_images", "")] + [_pct(m.get(k)) for k, _ in KIND_COLUMNS]
                for kind, m in kinds.items()]
        out += ["## Defect kinds (%, anomalous images of that kind vs the category's good images)", "",
                format_table(rows, ["Kind", "Categories", "Images"] + [h for _, h in KIND_COLUMNS]), ""]
    types = report.get("defect_types") or {}
    rows = [[cat, dt, m.get("n", ""), _pct(m.get("image_auroc"))] for cat, d in types.items() for dt, m in d.items()]
    if rows:
        out += ["## Image AUROC per defect type (%)", "",
                format_table(rows, ["Category", "Defect type", "Images", "I-AUROC"]), ""]
    notes = report.get("notes") or []
    if notes:
        out += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(out)


def write_report(report: Mapping[str, Any], out_dir: str | os.PathLike[str], title: str) -> tuple[Path, Path]:
    """Write `metrics.json` (strict JSON, undefined values as null) and `metrics.md` into `out_dir`.

    `report` is `evaluate_categories`' dict (extra top-level keys are kept and listed in the markdown).
    Returns (json_path, md_path).
    """
    missing = [k for k in ("categories", "mean") if not isinstance(report.get(k), Mapping)]
    if missing:
        raise ConfigError(
            f"report: expected dict entries {missing} (from evaluate_categories), got keys {sorted(report)}"
        )
    out = Path(out_dir)
    js, md = out / "metrics.json", out / "metrics.md"
    atomic_write_bytes(js, (json.dumps(_json_safe(report), indent=2, allow_nan=False) + "\n").encode("utf-8"))
    atomic_write_bytes(md, _markdown(report, title).encode("utf-8"))
    return js, md


def _caption(width: int, text: str, height: int = 24) -> np.ndarray:
    strip = np.zeros((height, width, 3), np.uint8)
    cv2.putText(strip, text, (6, height - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return strip


def save_overlay_grid(
    path: str | os.PathLike[str],
    rows: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray | None, str]],
    vmin: float | None = None,
    vmax: float | None = None,
    alpha: float = 0.5,
) -> Path:
    """PNG grid, one row per (image_rgb uint8 HxWx3, anomaly_map HxW, gt_mask HxW or None, caption):
    "image | heatmap overlay | ground truth".

    Maps are scaled by the same vmin/vmax (default: min/max over all rows) so rows are comparable, coloured
    with JET and blended with `alpha`. Maps/masks of another size are resized to the row's image; every
    row is resized to the first row's image size.
    """
    if not rows:
        raise DataError("overlay rows: expected at least one (image, map, mask, caption) row, got none")
    checked = []
    for i, row in enumerate(rows):
        if len(row) != 4:
            raise DataError(f"overlay row {i}: expected (image, map, mask, caption), got {len(row)} items")
        img, amap, gt, cap = np.asarray(row[0]), np.asarray(row[1], np.float32), row[2], str(row[3])
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise DataError(f"overlay row {i}: image: expected uint8 HxWx3, got {img.dtype} {img.shape}")
        if amap.ndim != 2:
            raise DataError(f"overlay row {i}: anomaly map: expected HxW, got shape {amap.shape}")
        if gt is not None and np.ndim(gt) != 2:
            raise DataError(f"overlay row {i}: gt mask: expected HxW or None, got shape {np.shape(gt)}")
        checked.append((img, amap, gt, cap))
    lo = float(min(a.min() for _, a, _, _ in checked)) if vmin is None else float(vmin)
    hi = float(max(a.max() for _, a, _, _ in checked)) if vmax is None else float(vmax)
    span = hi - lo if hi > lo else 1.0
    h, w = checked[0][0].shape[:2]
    strips = [_caption(3 * w, "image | heatmap overlay | ground truth")]
    for img, amap, gt, cap in checked:
        bgr = cv2.resize(np.ascontiguousarray(img[..., ::-1]), (w, h), interpolation=cv2.INTER_AREA)
        heat = cv2.resize(np.nan_to_num(amap, nan=lo), (w, h), interpolation=cv2.INTER_LINEAR)
        heat = np.clip((heat - lo) / span * 255.0, 0, 255).astype(np.uint8)
        overlay = cv2.addWeighted(bgr, 1.0 - alpha, cv2.applyColorMap(heat, cv2.COLORMAP_JET), alpha, 0.0)
        if gt is None:
            truth = np.full_like(bgr, 64)
            cv2.putText(truth, "no mask", (6, h // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
        else:
            m = cv2.resize((np.asarray(gt) > 0).astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
            truth = (bgr * 0.5).astype(np.uint8)
            truth[m > 0] = (0.5 * bgr[m > 0] + (0, 0, 127)).astype(np.uint8)
            contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(truth, contours, -1, (0, 0, 255), 1)
        strips += [_caption(3 * w, cap), np.hstack([bgr, overlay, truth])]
    ok, buf = cv2.imencode(".png", np.vstack(strips))
    if not ok:
        raise DataError(f"overlay {path}: OpenCV could not encode the PNG")
    out = Path(path)
    atomic_write_bytes(out, buf.tobytes())
    return out
