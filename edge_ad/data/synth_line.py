"""Line-like synthetic frames (`edge-ad synth --line`): what a line camera sees, not an MVTec close-up.

A machined plate on a moving conveyor, anywhere within +-`shift` px and +-`rotate` degrees of its nominal pose, with
a printed label whose serial number changes on every part, and small defects (scratches, pits, stains of 20-70 px on
a 1600x1200 frame, scaled with the frame). Written in the MVTec layout (train/good, test/good, test/<defect>,
ground_truth) plus, per category, the nominal-pose good frame (`<cat>/reference.png`) and the region of interest in
it (`<cat>/roi.png`: the plate, without its label), so `edge-ad train --align <cat>/reference.png --roi <cat>/roi.png`
has what a vision engineer would draw. Deterministic per (seed, category, split, defect, index).
"""

from __future__ import annotations

import json
import math
import os
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from edge_ad.errors import ConfigError
from edge_ad.fileio import atomic_write_bytes, staged_directory

LINE_CATEGORIES = ("plate_a", "plate_b")
LINE_DEFECTS = ("scratch", "pit", "stain")
Rng = np.random.Generator


def _rng(seed: int, *keys: str | int) -> Rng:
    return np.random.default_rng([seed & 0xFFFFFFFF] + [zlib.crc32(str(k).encode("utf-8")) for k in keys])


def _part(category: str, hw: tuple[int, int], rng: Rng | None = None
          ) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]:
    """The plate at its nominal pose: (BGR float32 [0,1], alpha float32, label box x,y,w,h). Its shape, holes and
    groove are fixed per category; its brushed grain differs from part to part (`rng`)."""
    h, w = hw
    rng = rng if rng is not None else _rng(7, category, "part")
    img = np.zeros((h, w, 3), np.float32)
    alpha = np.zeros((h, w), np.float32)
    pw, ph = int(w * 0.56), int(h * 0.56)
    x0, y0 = (w - pw) // 2, (h - ph) // 2
    r = max(4, int(min(pw, ph) * 0.08))
    mask = np.zeros((h, w), np.uint8)
    cv2.rectangle(mask, (x0 + r, y0), (x0 + pw - r, y0 + ph), 255, -1)
    cv2.rectangle(mask, (x0, y0 + r), (x0 + pw, y0 + ph - r), 255, -1)
    for cx, cy in ((x0 + r, y0 + r), (x0 + pw - r, y0 + r), (x0 + r, y0 + ph - r), (x0 + pw - r, y0 + ph - r)):
        cv2.circle(mask, (cx, cy), r, 255, -1)
    base = (0.62, 0.64, 0.66) if category == "plate_a" else (0.45, 0.55, 0.68)
    grain = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), sigmaX=max(1.0, w / 400),
                             sigmaY=max(1.0, w / 60))  # brushed metal: streaks along x
    img[:] = base
    img += (0.05 * grain / (grain.std() + 1e-6))[..., None]
    holes = [(0.2, 0.25), (0.8, 0.25), (0.2, 0.75), (0.8, 0.75)] + ([(0.5, 0.3)] if category == "plate_b" else [])
    for fx, fy in holes:
        cv2.circle(img, (int(x0 + fx * pw), int(y0 + fy * ph)), max(3, int(pw * 0.045)), (0.08, 0.08, 0.09), -1)
        cv2.circle(img, (int(x0 + fx * pw), int(y0 + fy * ph)), max(4, int(pw * 0.055)), (0.8, 0.8, 0.82), 2)
    cv2.rectangle(img, (x0 + pw // 2 - pw // 6, y0 + ph // 2 + ph // 12), (x0 + pw // 2 + pw // 6, y0 + ph // 2 +
                  ph // 12 + 3), (0.35, 0.35, 0.37), -1)  # a machined groove
    alpha[mask > 0] = 1.0
    label = (x0 + int(pw * 0.36), y0 + int(ph * 0.06), int(pw * 0.28), int(ph * 0.14))
    return img, alpha, label


def _conveyor(rng: Rng, hw: tuple[int, int]) -> np.ndarray:
    h, w = hw
    belt = np.asarray(cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), sigmaX=max(1.0, w / 80),
                                       sigmaY=0.8), np.float32)
    out = np.empty((h, w, 3), np.float32)
    out[:] = (0.16, 0.17, 0.16)
    out += (0.04 * belt / (belt.std() + 1e-6))[..., None]
    return out


def _defect(rng: Rng, kind: str, alpha: np.ndarray, label: tuple[int, int, int, int], scale: float,
            img: np.ndarray) -> np.ndarray:
    """Draw one defect on the plate (not on the label) in nominal coordinates; returns its mask (uint8 0/1)."""
    h, w = alpha.shape
    m = np.zeros((h, w), np.uint8)
    lx, ly, lw, lh = label
    for _ in range(100):
        cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
        margin = int(40 * scale)
        if (alpha[max(0, cy - margin):cy + margin, max(0, cx - margin):cx + margin] < 1).any():
            continue
        if lx - margin < cx < lx + lw + margin and ly - margin < cy < ly + lh + margin:
            continue
        break
    size = float(rng.uniform(20, 70)) * scale
    if kind == "scratch":
        a = rng.uniform(0, math.pi)
        p = (int(cx - math.cos(a) * size / 2), int(cy - math.sin(a) * size / 2))
        q = (int(cx + math.cos(a) * size / 2), int(cy + math.sin(a) * size / 2))
        cv2.line(m, p, q, 1, max(2, int(3 * scale)))
        img[m > 0] = np.clip(img[m > 0] + 0.28, 0, 1)
    elif kind == "pit":
        rad = max(3, int(size / 4))
        cv2.circle(m, (cx, cy), rad, 1, -1)
        img[m > 0] = img[m > 0] * 0.35
    else:  # stain: a soft discolouration
        cv2.ellipse(m, (cx, cy), (max(4, int(size / 2)), max(3, int(size / 3))), float(rng.uniform(0, 180)), 0, 360,
                    1, -1)
        soft = cv2.GaussianBlur(m.astype(np.float32), (0, 0), max(1.0, size / 8))
        img[:] = img * (1 - 0.45 * soft[..., None]) + 0.45 * soft[..., None] * np.array((0.15, 0.3, 0.45), np.float32)
    return m


def make_frame(category: str, defect: str, hw: tuple[int, int], rng: Rng, *, shift: float = 40.0,
               rotate: float = 3.0, nominal: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """One frame (BGR uint8) and its defect mask (uint8 0/1, frame coordinates). `nominal`: no pose jitter."""
    img, mask, _ = make_posed_frame(category, defect, hw, rng, shift=shift, rotate=rotate, nominal=nominal)
    return img, mask


def make_posed_frame(category: str, defect: str, hw: tuple[int, int], rng: Rng, *, shift: float = 40.0,
                     rotate: float = 3.0, nominal: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`make_frame` plus the pose: the 2x3 transform from the nominal frame to this one."""
    h, w = hw
    scale = w / 1600.0
    part, alpha, label = _part(category, hw, rng)
    lx, ly, lw, lh = label
    patch = np.full((lh, lw, 3), 242, np.uint8)
    serial = "".join(str(int(d)) for d in rng.integers(0, 10, 8))
    cv2.putText(patch, f"SN {serial}", (int(lw * 0.06), int(lh * 0.68)), cv2.FONT_HERSHEY_SIMPLEX, lh / 60.0,
                (12, 12, 12), max(1, int(2 * scale)), cv2.LINE_AA)
    part[ly:ly + lh, lx:lx + lw] = patch.astype(np.float32) / 255.0
    dmask = np.zeros(hw, np.uint8) if defect == "good" else _defect(rng, defect, alpha, label, scale, part)
    m: np.ndarray
    if nominal:
        m = np.eye(2, 3, dtype=np.float64)
    else:
        a = float(rng.uniform(-rotate, rotate))
        m = np.asarray(cv2.getRotationMatrix2D((w / 2, h / 2), a, 1.0), np.float64)
        m[:, 2] += rng.uniform(-shift, shift, 2) * scale
    warp = cv2.warpAffine(part, m, (w, h), flags=cv2.INTER_LINEAR)
    wa = cv2.warpAffine(alpha, m, (w, h), flags=cv2.INTER_LINEAR)[..., None]
    frame = np.asarray(_conveyor(rng, hw) * (1 - wa) + warp * wa, np.float32)
    frame = frame * float(rng.uniform(0.93, 1.07))  # lighting
    frame = frame + rng.normal(0, 0.01, frame.shape).astype(np.float32)
    out = np.clip(frame * 255 + 0.5, 0, 255).astype(np.uint8)
    mask = cv2.warpAffine(dmask, m, (w, h), flags=cv2.INTER_NEAREST)
    return out, mask, m


def roi_mask(category: str, hw: tuple[int, int]) -> np.ndarray:
    """The ROI of the nominal frame: the plate (eroded a little, the outline wobbles with the pose) minus its label."""
    _, alpha, (lx, ly, lw, lh) = _part(category, hw)
    roi = ((alpha > 0) * 255).astype(np.uint8)
    roi = np.asarray(cv2.erode(roi, np.ones((5, 5), np.uint8)), np.uint8)
    pad = max(2, hw[1] // 200)
    roi[max(0, ly - pad):ly + lh + pad, max(0, lx - pad):lx + lw + pad] = 0
    return roi


def generate_line(out: str | os.PathLike[str], categories: Sequence[str] | None = None, per_category: int = 30,
                  size: tuple[int, int] = (1200, 1600), seed: int = 0, force: bool = False) -> dict[str, Any]:
    """Write a line-like dataset to `out` (MVTec layout + reference.png and roi.png per category); returns its
    synth.json. `size` is (height, width)."""
    cats = list(categories or LINE_CATEGORIES)
    bad = [c for c in cats if c not in LINE_CATEGORIES]
    if bad or not cats:
        raise ConfigError(f"synth --line: categories: expected some of {list(LINE_CATEGORIES)}, got {cats}")
    if per_category < 4 or min(size) < 96 or max(size) > 4096:
        raise ConfigError(f"synth --line: expected per_category >= 4 and sides in 96..4096, got {per_category}, "
                          f"{size}")
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (force and (out / "synth.json").is_file()):
        raise ConfigError(f"output {out}: not empty (use --force to replace a synth dataset)")
    n_good, n_def = max(4, per_category // 3), max(2, per_category // 8)
    jobs = [(c, "train", "good", i) for c in cats for i in range(per_category)]
    jobs += [(c, "test", "good", i) for c in cats for i in range(n_good)]
    jobs += [(c, "test", d, i) for c in cats for d in LINE_DEFECTS for i in range(n_def)]
    with staged_directory(out) as tmp:
        for cat in cats:
            ref, _ = make_frame(cat, "good", size, _rng(seed, cat, "reference"), nominal=True)
            for name, img in (("reference.png", ref), ("roi.png", roi_mask(cat, size))):
                (tmp / cat).mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(tmp / cat / name, cv2.imencode(".png", img)[1].tobytes())
        for cat, split, defect, i in tqdm(jobs, desc="synth --line", unit="frame", leave=False):
            img, mask = make_frame(cat, defect, size, _rng(seed, cat, split, defect, i))
            d = tmp / cat / split / defect
            d.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(d / f"{i:03d}.png", cv2.imencode(".png", img)[1].tobytes())
            if defect != "good":
                g = tmp / cat / "ground_truth" / defect
                g.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(g / f"{i:03d}_mask.png", cv2.imencode(".png", mask * 255)[1].tobytes())
        meta = {"format": "edge-ad/synth-line", "version": 1, "seed": seed, "size": list(size),
                "categories": {c: {"train": per_category, "test_good": n_good,
                                   "test_defects": {d: n_def for d in LINE_DEFECTS}} for c in cats}}
        (tmp / "synth.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta
