"""Deterministic synthetic multi-category dataset in the MVTec AD layout, with pixel masks (numpy/OpenCV only).

Textures (fabric, wood, mesh, carpet) and objects made of parts (screw_plate, pcb, cap) are drawn procedurally;
good images vary in pose, texture phase, colour, lighting and sensor noise. Structural defects (scratch, crack,
spot, hole, missing_material) go on every category; logical defects (missing_part, extra_part, misplaced_part)
on objects, with LOCO-style masks covering the affected part sites. Every image has its own random stream
derived from (seed, category, split, defect, index), so a subset of categories reproduces the same pixels.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import ArrayLike
from tqdm import tqdm

from edge_ad import __version__
from edge_ad.errors import ConfigError
from edge_ad.fileio import default_mode

log = logging.getLogger(__name__)

SYNTH_VERSION = 1
TEXTURES = ("fabric", "wood", "mesh", "carpet")
OBJECTS = ("screw_plate", "pcb", "cap")
ALL_CATEGORIES = TEXTURES + OBJECTS
DEFAULT_CATEGORIES = ("fabric", "wood", "mesh", "screw_plate", "pcb", "cap")
STRUCTURAL_DEFECTS = ("scratch", "crack", "spot", "hole", "missing_material")
LOGICAL_DEFECTS = ("missing_part", "extra_part", "misplaced_part")
MIN_SIZE, MAX_SIZE = 64, 2048

Rng = np.random.Generator
Layer = tuple[np.ndarray, np.ndarray]  # (alpha HxW float32 in [0,1], target HxWx3 float32)


@dataclass
class Scene:
    """A rendered clean image before lighting: surface colours, what shows through missing material, defect support."""

    surface: np.ndarray  # HxWx3 float32 BGR in [0,1]
    under: np.ndarray  # HxWx3 float32, revealed by missing_material
    support: np.ndarray  # HxW float32 in [0,1], where structural defects may appear


# ----------------------------------------------------------------------------------------------- drawing helpers


def _fbm(rng: Rng, n: int, cells: int, octaves: int = 3) -> np.ndarray:
    """Smooth fractal noise of size n x n with unit standard deviation; `cells` sets the coarsest feature size."""
    out = np.zeros((n, n), np.float32)
    amp = 1.0
    for o in range(octaves):
        c = max(2, cells * 2**o)
        g = rng.standard_normal((c + 1, c + 1)).astype(np.float32)
        out += amp * cv2.resize(g, (n, n), interpolation=cv2.INTER_CUBIC)
        amp *= 0.5
    return out / max(float(out.std()), 1e-6)


def _fine_noise(rng: Rng, n: int, sigma: float) -> np.ndarray:
    """Per-pixel grain, slightly blurred, unit standard deviation."""
    g = rng.standard_normal((n, n)).astype(np.float32)
    if sigma > 0:
        g = np.asarray(cv2.GaussianBlur(g, (0, 0), sigma))
    return g / max(float(g.std()), 1e-6)


def _streaks(rng: Rng, n: int, length: int) -> np.ndarray:
    """Noise stretched along x (brushed metal, wood fibres), unit standard deviation."""
    g = rng.standard_normal((n, max(2, n // length))).astype(np.float32)
    g = np.asarray(cv2.resize(g, (n, n), interpolation=cv2.INTER_LINEAR))
    return g / max(float(g.std()), 1e-6)


def _rotate_crop(img: np.ndarray, angle_deg: float, size: int) -> np.ndarray:
    """Rotate a padded texture about its centre and cut the central size x size window (no border artefacts)."""
    n = img.shape[0]
    m = cv2.getRotationMatrix2D((n / 2.0, n / 2.0), angle_deg, 1.0)
    rot = cv2.warpAffine(img, m, (n, n), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    o = (n - size) // 2
    return np.ascontiguousarray(rot[o : o + size, o : o + size])


def _padded(size: int) -> int:
    return size + 2 * math.ceil(size * 0.08) + 2


def _canvas(size: int) -> np.ndarray:
    return np.zeros((size, size), np.uint8)


def _to_alpha(c: np.ndarray) -> np.ndarray:
    return c.astype(np.float32) / 255.0


def _fill(size: int, pts: np.ndarray) -> np.ndarray:
    """Anti-aliased filled polygon (pixel coordinates, sub-pixel precise) as alpha."""
    c = _canvas(size)
    cv2.fillPoly(c, [np.round(pts * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
    return _to_alpha(c)


def _disc(size: int, centre: np.ndarray, radius: float) -> np.ndarray:
    c = _canvas(size)
    cx, cy = (round(v * 16) for v in centre)
    cv2.circle(c, (cx, cy), max(1, round(radius * 16)), 255, -1, cv2.LINE_AA, 4)
    return _to_alpha(c)


def _lines(size: int, polylines: Sequence[np.ndarray], thickness: int) -> np.ndarray:
    c = _canvas(size)
    pts = [np.round(p * 16).astype(np.int32) for p in polylines]
    cv2.polylines(c, pts, False, 255, max(1, thickness), cv2.LINE_AA, 4)
    return _to_alpha(c)


def _paint(img: np.ndarray, alpha: np.ndarray, colour: Any) -> None:
    """In place: img = img * (1 - alpha) + colour * alpha (colour: BGR triple or image), on alpha's bounding box."""
    x, y, w, h = cv2.boundingRect((alpha > 0).view(np.uint8))
    if w == 0 or h == 0:
        return
    c = np.asarray(colour, np.float32)
    if c.ndim == 3:
        c = c[y : y + h, x : x + w]
    box = img[y : y + h, x : x + w]
    box += alpha[y : y + h, x : x + w, None] * (c - box)


def _rect(x: float, y: float, w: float, h: float, rot_deg: float) -> np.ndarray:
    """Corners of a w x h rectangle centred at (x, y) and rotated, in local object units."""
    c, s = math.cos(math.radians(rot_deg)), math.sin(math.radians(rot_deg))
    pts = np.array([[-w / 2, -h / 2], [w / 2, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]], np.float64)
    return pts @ np.array([[c, s], [-s, c]]) + (x, y)


def _rounded_rect(hw: float, hh: float, r: float, n: int = 8) -> np.ndarray:
    pts = []
    for cx, cy, a0 in ((hw - r, hh - r, 0), (-hw + r, hh - r, 90), (-hw + r, -hh + r, 180), (hw - r, -hh + r, 270)):
        for t in np.linspace(0, 90, n):
            a = math.radians(a0 + t)
            pts.append((cx + r * math.cos(a), cy + r * math.sin(a)))
    return np.array(pts)


@dataclass(frozen=True)
class Pose:
    """Object placement: centre (px), rotation (deg), pixels per local unit."""

    cx: float
    cy: float
    angle: float
    scale: float

    def px(self, pts: ArrayLike) -> np.ndarray:
        """Local object coordinates (N x 2) -> pixel coordinates."""
        c, s = math.cos(math.radians(self.angle)), math.sin(math.radians(self.angle))
        p = np.asarray(pts, np.float64).reshape(-1, 2) * self.scale
        return p @ np.array([[c, s], [-s, c]]) + (self.cx, self.cy)

    def len(self, v: float) -> float:
        return v * self.scale


def _jitter_colour(rng: Rng, base: Sequence[float], amount: float) -> np.ndarray:
    return np.clip(np.asarray(base, np.float32) * (1 + rng.uniform(-amount, amount, 3)).astype(np.float32), 0, 1)


# ------------------------------------------------------------------------------------------------------ textures


def _fabric(rng: Rng, size: int) -> Scene:
    s = size / 256
    n = _padded(size)
    p = s * rng.uniform(9.0, 11.0)
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    u, v = xx / p + rng.uniform(0, 2), yy / p + rng.uniform(0, 2)
    iu, iv = np.floor(u), np.floor(v)
    warp, weft = np.sin(np.pi * (u - iu)), np.sin(np.pi * (v - iv))
    over = ((iu + iv) % 2) == 0
    h = np.where(over, warp * (0.8 + 0.2 * weft), weft * (0.8 + 0.2 * warp))
    val = 0.5 + 0.5 * h + 0.05 * _fine_noise(rng, n, 0.6) + 0.04 * _fbm(rng, n, 4)
    val = _rotate_crop(val.astype(np.float32), rng.uniform(-3, 3), size)
    colour = _jitter_colour(rng, (0.58, 0.40, 0.24), 0.05)
    surface = val[..., None] * colour
    under = np.broadcast_to(colour * 0.22, surface.shape).copy()
    return Scene(surface, under, np.ones((size, size), np.float32))


def _wood(rng: Rng, size: int) -> Scene:
    s = size / 256
    n = _padded(size)
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    p = s * rng.uniform(15, 21)
    bend = rng.uniform(-1, 1) * 0.6 / n
    r = yy + _fbm(rng, n, 3) * s * rng.uniform(5, 9) + bend * (xx - n / 2) ** 2
    rings = (0.5 + 0.5 * np.sin(2 * np.pi * r / p + rng.uniform(0, 2 * np.pi))) ** 3
    fibres = _streaks(rng, n, int(24 * s) + 1)
    val = 1.0 - 0.28 * rings - 0.05 * fibres + 0.04 * _fbm(rng, n, 2)
    val = _rotate_crop(val.astype(np.float32), rng.uniform(-4, 4), size)
    colour = _jitter_colour(rng, (0.42, 0.60, 0.78), 0.05)
    surface = val[..., None] * colour
    under = np.broadcast_to(colour * 0.5, surface.shape).copy()
    return Scene(surface, under, np.ones((size, size), np.float32))


def _mesh(rng: Rng, size: int) -> Scene:
    s = size / 256
    n = _padded(size)
    p = s * rng.uniform(19, 22)
    rad = p * rng.uniform(0.29, 0.32)
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    yy = yy + rng.uniform(0, p)
    row = np.floor(yy / p)
    xx = xx + rng.uniform(0, p) + (row % 2) * p / 2  # staggered rows
    du, dv = (xx % p) - p / 2, (yy % p) - p / 2
    d = np.sqrt(du * du + dv * dv)
    hole = np.clip(rad - d + 0.5, 0, 1)
    rim = np.clip(1 - np.abs(d - rad - 1.2 * s) / (1.5 * s), 0, 1)
    metal = 0.62 + 0.035 * _streaks(rng, n, int(32 * s) + 1) + 0.02 * _fbm(rng, n, 3)
    val = metal * (1 - hole) + 0.07 * hole + 0.08 * rim * (1 - hole)
    val = _rotate_crop(val.astype(np.float32), rng.uniform(-2, 2), size)
    colour = _jitter_colour(rng, (1.0, 0.98, 0.95), 0.03)
    surface = val[..., None] * colour
    under = np.full_like(surface, 0.07)
    return Scene(surface, under, np.ones((size, size), np.float32))


_CARPET_COLOURS = ((0.32, 0.30, 0.55), (0.45, 0.40, 0.36), (0.50, 0.36, 0.30))


def _carpet(rng: Rng, size: int) -> Scene:
    s = size / 256
    n = _padded(size)
    yy = np.mgrid[0:n, 0:n][0].astype(np.float32)
    loops = 0.5 + 0.5 * np.sin(2 * np.pi * yy / (s * rng.uniform(5, 6.5)) + rng.uniform(0, 6.3))
    val = 0.6 + 0.16 * _fine_noise(rng, n, 1.1 * s) + 0.07 * loops + 0.06 * _fbm(rng, n, 5)
    val = _rotate_crop(val.astype(np.float32), rng.uniform(-3, 3), size)
    colour = _jitter_colour(rng, _CARPET_COLOURS[int(rng.integers(len(_CARPET_COLOURS)))], 0.04)
    surface = val[..., None] * colour
    jute = 0.55 + 0.05 * _fine_noise(rng, size, 0.8)
    under = jute[..., None] * np.array([0.62, 0.80, 0.90], np.float32)
    return Scene(surface, under, np.ones((size, size), np.float32))


# ------------------------------------------------------------------------------------------------------- objects

Part = dict[str, Any]


@dataclass
class ObjectDesign:
    """An object of parts: sampling of pose/parts, rendering, part footprints and logical-defect edits."""

    sample: Callable[[Rng, int], tuple[Pose, list[Part]]]
    render: Callable[[Rng, int, Pose, list[Part], list[Part]], Scene]  # (rng, size, pose, design sites, parts)
    footprint: Callable[[int, Pose, Part], np.ndarray]  # bool HxW region of a part
    extra_spots: Callable[[Rng], list[Part]]
    move: Callable[[Rng, Part], Part]


def _background(rng: Rng, size: int) -> np.ndarray:
    g = rng.uniform(0.15, 0.21) + 0.015 * _fbm(rng, size, 3) + 0.01 * _fine_noise(rng, size, 0.7)
    return np.repeat(g[..., None], 3, axis=2).astype(np.float32)


def _shadow(img: np.ndarray, alpha: np.ndarray, shift: float, strength: float) -> None:
    """Soft drop shadow of `alpha`, offset down-right, darkening `img` in place."""
    m = np.array([[1, 0, shift], [0, 1, shift]], np.float32)
    sh = cv2.warpAffine(alpha, m, (alpha.shape[1], alpha.shape[0]))
    sh = cv2.GaussianBlur(sh, (0, 0), max(0.8, shift))
    img *= (1 - strength * sh)[..., None]


def _object_pose(rng: Rng, size: int, spin: bool) -> Pose:
    angle = rng.uniform(0, 360) if spin else rng.uniform(-6, 6)
    c = size / 2 + rng.uniform(-0.03, 0.03, 2) * size
    return Pose(float(c[0]), float(c[1]), float(angle), float(size * rng.uniform(0.97, 1.03)))


# screw_plate: a brushed plate with four Phillips screws in a rectangle
_SCREW_R = 0.048
_SCREW_SITES = ((-0.23, -0.21), (0.23, -0.21), (0.23, 0.21), (-0.23, 0.21))


def _screw_sample(rng: Rng, size: int) -> tuple[Pose, list[Part]]:
    parts = [{"x": x, "y": y, "slot": rng.uniform(0, 90)} for x, y in _SCREW_SITES]
    return _object_pose(rng, size, spin=False), parts


def _screw_render(rng: Rng, size: int, pose: Pose, sites: list[Part], parts: list[Part]) -> Scene:
    s = size / 256
    bg = _background(rng, size)
    img = bg.copy()
    plate = _fill(size, pose.px(_rounded_rect(0.32, 0.30, 0.05)))
    _shadow(img, plate, 3 * s, 0.5)
    metal = 0.64 + 0.03 * _streaks(rng, size, int(30 * s) + 1) + 0.015 * _fbm(rng, size, 3)
    tint = _jitter_colour(rng, (1.0, 0.98, 0.95), 0.03)
    inner = cv2.erode(plate, np.ones((3, 3), np.uint8), iterations=max(1, int(2 * s)))
    _paint(img, plate, metal[..., None] * tint)
    _paint(img, np.clip(plate - inner, 0, 1) * 0.6, (0.32, 0.32, 0.32))  # bevel
    for site in sites:  # threaded holes, covered by the screws when present
        c = pose.px([site["x"], site["y"]])[0]
        _paint(img, _disc(size, c, pose.len(_SCREW_R * 0.55)), (0.28, 0.28, 0.28))
        _paint(img, _disc(size, c, pose.len(_SCREW_R * 0.42)), (0.06, 0.06, 0.06))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for part in parts:
        c = pose.px([part["x"], part["y"]])[0]
        r = pose.len(_SCREW_R)
        _shadow(img, _disc(size, c, r), 2 * s, 0.45)
        head = _disc(size, c, r)
        d = np.sqrt((xx - c[0] + 0.3 * r) ** 2 + (yy - c[1] + 0.3 * r) ** 2) / r
        _paint(img, head, np.clip(0.78 - 0.3 * d, 0.3, 0.8)[..., None] * np.array([0.95, 0.95, 0.97], np.float32))
        rim = np.clip(head - _disc(size, c, r * 0.86), 0, 1)
        _paint(img, rim * 0.6, (0.25, 0.25, 0.25))
        for a in (part["slot"], part["slot"] + 90):
            local = _rect(0, 0, 1.15 * _SCREW_R * 2 * 0.55, 0.22 * _SCREW_R, a + pose.angle)
            _paint(img, _fill(size, local * pose.scale + c), (0.12, 0.12, 0.13))
    support = cv2.erode(plate, np.ones((3, 3), np.uint8))
    return Scene(img, bg, support)


def _screw_footprint(size: int, pose: Pose, part: Part) -> np.ndarray:
    return _disc(size, pose.px([part["x"], part["y"]])[0], pose.len(_SCREW_R * 1.45)) > 0.5


def _screw_extra(rng: Rng) -> list[Part]:
    return [
        {"x": x, "y": y, "slot": rng.uniform(0, 90)} for x, y in ((0, 0), (0, -0.21), (0, 0.21), (-0.23, 0), (0.23, 0))
    ]


def _screw_move(rng: Rng, part: Part) -> Part:
    """Slide a screw along a plate edge or towards the centre, by 1.5-2.5 head diameters."""
    dx, dy = (-np.sign(part["x"]), 0) if rng.random() < 0.5 else (0, -np.sign(part["y"]))
    if rng.random() < 0.3:
        dx, dy = -np.sign(part["x"]) * 0.7, -np.sign(part["y"]) * 0.7
    step = rng.uniform(0.15, 0.24)
    return {"x": part["x"] + dx * step, "y": part["y"] + dy * step, "slot": rng.uniform(0, 90)}


# pcb: a board with ICs, SMD resistors/capacitors and an electrolytic capacitor
_PCB_PARTS: tuple[Part, ...] = (
    {"kind": "ic", "x": -0.13, "y": -0.05, "w": 0.17, "h": 0.12, "rot": 0.0},
    {"kind": "ic", "x": 0.15, "y": -0.13, "w": 0.09, "h": 0.07, "rot": 0.0},
    {"kind": "res", "x": 0.11, "y": 0.05, "w": 0.065, "h": 0.026, "rot": 0.0},
    {"kind": "res", "x": 0.11, "y": 0.12, "w": 0.065, "h": 0.026, "rot": 0.0},
    {"kind": "cap", "x": -0.21, "y": 0.14, "w": 0.05, "h": 0.028, "rot": 90.0},
    {"kind": "cap", "x": -0.08, "y": 0.15, "w": 0.05, "h": 0.028, "rot": 90.0},
    {"kind": "elco", "x": 0.25, "y": 0.03, "w": 0.1, "h": 0.1, "rot": 0.0},
)
_PCB_FREE: tuple[Part, ...] = (
    {"kind": "res", "x": 0.0, "y": 0.18, "w": 0.065, "h": 0.026, "rot": 0.0},
    {"kind": "cap", "x": -0.28, "y": -0.02, "w": 0.05, "h": 0.028, "rot": 90.0},
    {"kind": "res", "x": 0.02, "y": -0.18, "w": 0.065, "h": 0.026, "rot": 0.0},
    {"kind": "cap", "x": 0.28, "y": -0.17, "w": 0.05, "h": 0.028, "rot": 90.0},
)
_PCB_TRACES = (
    ((-0.30, -0.20), (-0.13, -0.20), (-0.13, -0.05)),
    ((0.15, -0.13), (0.15, 0.05), (0.11, 0.05)),
    ((-0.21, 0.14), (-0.21, 0.22), (0.25, 0.22), (0.25, 0.03)),
    ((-0.13, -0.05), (0.05, -0.05), (0.05, -0.13), (0.15, -0.13)),
    ((-0.08, 0.15), (-0.08, 0.05), (0.11, 0.05)),
    ((0.11, 0.12), (0.31, 0.12), (0.31, -0.21)),
)


def _pcb_sample(rng: Rng, size: int) -> tuple[Pose, list[Part]]:
    parts = []
    for p in _PCB_PARTS:  # placement tolerance of a pick-and-place machine
        q = dict(p)
        q["x"] += rng.normal(0, 0.003)
        q["y"] += rng.normal(0, 0.003)
        q["rot"] += rng.normal(0, 1.0)
        parts.append(q)
    return _object_pose(rng, size, spin=False), parts


def _pcb_component(img: np.ndarray, size: int, pose: Pose, p: Part, rng: Rng) -> None:
    s = size / 256
    rot = p["rot"]
    body = pose.px(_rect(p["x"], p["y"], p["w"], p["h"], rot))
    if p["kind"] == "ic":
        n_pins = 5 if p["w"] > 0.12 else 3
        for i in range(n_pins):
            off = (i - (n_pins - 1) / 2) * p["w"] / n_pins
            for side in (-1, 1):
                c, sn = math.cos(math.radians(rot)), math.sin(math.radians(rot))
                lx, ly = off, side * (p["h"] / 2 + 0.012)
                pin = _rect(p["x"] + lx * c - ly * sn, p["y"] + lx * sn + ly * c, 0.012, 0.026, rot)
                _paint(img, _fill(size, pose.px(pin)), (0.78, 0.78, 0.80))
        _shadow(img, _fill(size, body), 1.5 * s, 0.4)
        _paint(img, _fill(size, body), _jitter_colour(rng, (0.10, 0.10, 0.11), 0.1))
        dot = pose.px([p["x"] - p["w"] * 0.35, p["y"] - p["h"] * 0.25])[0]
        _paint(img, _disc(size, dot, pose.len(0.008)), (0.3, 0.3, 0.3))
    elif p["kind"] == "elco":
        c = pose.px([p["x"], p["y"]])[0]
        r = pose.len(p["w"] / 2)
        disc = _disc(size, c, r)
        _shadow(img, disc, 2 * s, 0.45)
        _paint(img, disc, _jitter_colour(rng, (0.55, 0.28, 0.10), 0.06))
        _paint(img, np.clip(disc - _disc(size, c, r * 0.8), 0, 1) * 0.5, (0.75, 0.7, 0.65))
        stripe = pose.px(_rect(p["x"] - p["w"] * 0.3, p["y"], p["w"] * 0.18, p["h"] * 0.6, rot))
        _paint(img, _fill(size, stripe) * disc, (0.8, 0.8, 0.8))
        for a in (0, 90):
            _paint(img, _fill(size, pose.px(_rect(p["x"], p["y"], p["w"] * 0.5, 0.006, rot + a))), (0.35, 0.35, 0.38))
    else:
        colour = (0.55, 0.68, 0.78) if p["kind"] == "res" else (0.30, 0.45, 0.62)
        _shadow(img, _fill(size, body), 1.2 * s, 0.35)
        _paint(img, _fill(size, body), _jitter_colour(rng, colour, 0.06))
        c, sn = math.cos(math.radians(rot)), math.sin(math.radians(rot))
        for side in (-1, 1):
            lx = side * p["w"] * 0.4
            cap = _rect(p["x"] + lx * c, p["y"] + lx * sn, p["w"] * 0.2, p["h"] * 1.02, rot)
            _paint(img, _fill(size, pose.px(cap)), (0.80, 0.80, 0.82))


def _pcb_pads(img: np.ndarray, size: int, pose: Pose, p: Part) -> None:
    """Tinned pads and silkscreen outline of a designed component site."""
    rot, (c, sn) = p["rot"], (math.cos(math.radians(p["rot"])), math.sin(math.radians(p["rot"])))
    tin = (0.70, 0.72, 0.74)
    if p["kind"] == "ic":
        n_pins = 5 if p["w"] > 0.12 else 3
        for i in range(n_pins):
            off = (i - (n_pins - 1) / 2) * p["w"] / n_pins
            for side in (-1, 1):
                lx, ly = off, side * (p["h"] / 2 + 0.014)
                pad = _rect(p["x"] + lx * c - ly * sn, p["y"] + lx * sn + ly * c, 0.016, 0.03, rot)
                _paint(img, _fill(size, pose.px(pad)), tin)
    else:
        for side in (-1, 1):
            lx = side * p["w"] * (0.3 if p["kind"] == "elco" else 0.42)
            pad = _rect(
                p["x"] + lx * c, p["y"] + lx * sn, p["w"] * 0.26, p["h"] * (0.3 if p["kind"] == "elco" else 1.15), rot
            )
            _paint(img, _fill(size, pose.px(pad)), tin)
    margin = 0.045 if p["kind"] == "ic" else 0.018
    outline = pose.px(_rect(p["x"], p["y"], p["w"] + margin, p["h"] + margin, rot))
    _paint(img, _lines(size, [np.vstack([outline, outline[:1]])], 1) * 0.7, (0.85, 0.88, 0.88))


def _pcb_render(rng: Rng, size: int, pose: Pose, sites: list[Part], parts: list[Part]) -> Scene:
    s = size / 256
    bg = _background(rng, size)
    img = bg.copy()
    board = _fill(size, pose.px(_rounded_rect(0.38, 0.28, 0.015, 3)))
    _shadow(img, board, 3 * s, 0.5)
    green = _jitter_colour(rng, (0.22, 0.42, 0.14), 0.06)
    _paint(img, board, (1 + 0.03 * _fbm(rng, size, 4))[..., None] * green)
    traces = [pose.px(np.array(t)) for t in _PCB_TRACES]
    _paint(img, _lines(size, traces, max(1, round(2 * s))) * 0.8, np.clip(green * 1.45, 0, 1))
    for x in (-0.34, 0.34):
        for y in (-0.24, 0.24):
            c = pose.px([x, y])[0]
            _paint(img, _disc(size, c, pose.len(0.022)), (0.35, 0.62, 0.78))
            _paint(img, _disc(size, c, pose.len(0.012)), (0.1, 0.1, 0.1))
    for site in sites:
        _pcb_pads(img, size, pose, site)
    for part in parts:
        _pcb_component(img, size, pose, part, rng)
    return Scene(img, bg, cv2.erode(board, np.ones((3, 3), np.uint8)))


def _pcb_footprint(size: int, pose: Pose, part: Part) -> np.ndarray:
    m = 0.05 if part["kind"] == "ic" else 0.02
    return _fill(size, pose.px(_rect(part["x"], part["y"], part["w"] + m, part["h"] + m, part["rot"]))) > 0.5


def _pcb_extra(rng: Rng) -> list[Part]:
    return [dict(p, rot=p["rot"] + rng.normal(0, 1.0)) for p in _PCB_FREE]


def _pcb_move(rng: Rng, part: Part) -> Part:
    """Shift a component off its pads (and often twist it), staying on the board."""
    a = rng.uniform(0, 2 * np.pi)
    d = rng.uniform(0.035, 0.06)
    q = dict(part)
    q["x"] = float(np.clip(part["x"] + d * math.cos(a), -0.32, 0.32))
    q["y"] = float(np.clip(part["y"] + d * math.sin(a), -0.22, 0.22))
    q["rot"] = part["rot"] + (rng.choice([-1, 1]) * rng.uniform(12, 35) if rng.random() < 0.6 else 0.0)
    return q


# cap: a bottle cap with a knurled rim and six tabs
_TAB_IN, _TAB_OUT, _TAB_W = 0.285, 0.37, 0.07


def _cap_sample(rng: Rng, size: int) -> tuple[Pose, list[Part]]:
    return _object_pose(rng, size, spin=True), [{"a": 60.0 * i + rng.normal(0, 0.8)} for i in range(6)]


def _tab_poly(part: Part, grow: float = 0.0) -> np.ndarray:
    mid = (_TAB_IN + _TAB_OUT) / 2
    a = math.radians(part["a"])
    return _rect(mid * math.cos(a), mid * math.sin(a), _TAB_OUT - _TAB_IN + grow, _TAB_W + grow, part["a"])


def _cap_render(rng: Rng, size: int, pose: Pose, sites: list[Part], parts: list[Part]) -> Scene:
    s = size / 256
    bg = _background(rng, size)
    img = bg.copy()
    centre = pose.px([0.0, 0.0])[0]
    body = _disc(size, centre, pose.len(0.30))
    tabs = np.zeros_like(body)
    for part in parts:
        tabs = np.maximum(tabs, _fill(size, pose.px(_tab_poly(part))))
    _shadow(img, np.maximum(body, tabs), 3 * s, 0.5)
    plastic = _jitter_colour(rng, (0.20, 0.26, 0.74), 0.05)
    _paint(img, tabs, plastic * 0.85)
    _paint(img, body, plastic)
    ridges = []
    for i in range(72):
        a = math.radians(i * 5.0)
        ridges.append(pose.px([[0.265 * math.cos(a), 0.265 * math.sin(a)], [0.297 * math.cos(a), 0.297 * math.sin(a)]]))
    _paint(img, _lines(size, ridges, 1) * 0.35, plastic * 0.55)
    top = _disc(size, centre, pose.len(0.245))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    d = np.sqrt((xx - centre[0] + pose.len(0.08)) ** 2 + (yy - centre[1] + pose.len(0.08)) ** 2) / pose.len(0.3)
    _paint(img, top, np.clip(1.2 - 0.35 * d, 0.8, 1.2)[..., None] * plastic)
    groove = np.clip(_disc(size, centre, pose.len(0.165)) - _disc(size, centre, pose.len(0.155)), 0, 1)
    _paint(img, groove * 0.7, plastic * 0.6)
    arrow = pose.px(np.array([[0.0, -0.10], [0.05, -0.02], [-0.05, -0.02]]))
    _paint(img, _fill(size, arrow) * 0.6, np.clip(plastic * 1.25, 0, 1))
    return Scene(img, bg, cv2.erode(body, np.ones((3, 3), np.uint8)))


def _cap_footprint(size: int, pose: Pose, part: Part) -> np.ndarray:
    return _fill(size, pose.px(_tab_poly(part, grow=0.03))) > 0.5


def _cap_extra(rng: Rng) -> list[Part]:
    return [{"a": 30.0 + 60.0 * i + rng.normal(0, 0.8)} for i in range(6)]


def _cap_move(rng: Rng, part: Part) -> Part:
    return {"a": part["a"] + rng.choice([-1, 1]) * rng.uniform(14, 24)}


_OBJECTS: dict[str, ObjectDesign] = {
    "screw_plate": ObjectDesign(_screw_sample, _screw_render, _screw_footprint, _screw_extra, _screw_move),
    "pcb": ObjectDesign(_pcb_sample, _pcb_render, _pcb_footprint, _pcb_extra, _pcb_move),
    "cap": ObjectDesign(_cap_sample, _cap_render, _cap_footprint, _cap_extra, _cap_move),
}
_TEXTURES: dict[str, Callable[[Rng, int], Scene]] = {
    "fabric": _fabric,
    "wood": _wood,
    "mesh": _mesh,
    "carpet": _carpet,
}

# ---------------------------------------------------------------------------------------------------- defects


def _pick(rng: Rng, where: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(where)
    i = int(rng.integers(len(xs)))
    return np.array([xs[i], ys[i]], np.float64) + rng.uniform(-0.5, 0.5, 2)


def _blob(rng: Rng, size: int, centre: np.ndarray, radius: float, roughness: float) -> np.ndarray:
    """Irregular elliptical region (signed shape value > 0 inside), for stains, holes and missing material."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    a = rng.uniform(0, np.pi)
    ratio = rng.uniform(0.55, 1.0)
    dx, dy = xx - centre[0], yy - centre[1]
    u = (dx * math.cos(a) + dy * math.sin(a)) / radius
    v = (-dx * math.sin(a) + dy * math.cos(a)) / (radius * ratio)
    return (1 - np.sqrt(u * u + v * v) + roughness * _fbm(rng, size, max(4, int(size / radius / 1.5)), 2)).astype(
        np.float32
    )


def _scratch(rng: Rng, scene: Scene, size: int) -> list[Layer]:
    s = size / 256
    p0 = _pick(rng, scene.support > 0.95)
    length = size * rng.uniform(0.12, 0.35)
    a = rng.uniform(0, 2 * np.pi)
    p2 = p0 + length * np.array([math.cos(a), math.sin(a)])
    p1 = (p0 + p2) / 2 + rng.uniform(-0.2, 0.2) * length * np.array([-math.sin(a), math.cos(a)])
    t = np.linspace(0, 1, 24)[:, None]
    curve = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
    alpha = _lines(size, [curve], round(rng.uniform(0.8, 2.2) * s)) * rng.uniform(0.7, 1.0)
    sign = 1.0 if rng.random() < 0.6 else -1.0
    return [(alpha, np.clip(scene.surface + sign * rng.uniform(0.12, 0.3), 0, 1))]


def _crack(rng: Rng, scene: Scene, size: int) -> list[Layer]:
    s = size / 256

    def walk(start: np.ndarray, heading: float, steps: int) -> np.ndarray:
        pts = [start]
        for _ in range(steps):
            heading += rng.normal(0, 0.45)
            pts.append(pts[-1] + s * rng.uniform(4, 9) * np.array([math.cos(heading), math.sin(heading)]))
        return np.array(pts)

    heading = rng.uniform(0, 2 * np.pi)
    main = walk(_pick(rng, scene.support > 0.95), heading, int(rng.integers(6, 13)))
    paths = [main]
    if rng.random() < 0.6:
        paths.append(
            walk(main[len(main) // 2], heading + rng.choice([-1, 1]) * rng.uniform(0.5, 1.2), int(rng.integers(3, 7)))
        )
    alpha = _lines(size, paths, round(rng.uniform(0.8, 1.8) * s))
    return [(alpha, scene.surface * rng.uniform(0.25, 0.55))]


_STAIN_TINTS = ((0.75, 0.9, 1.1), (1.0, 1.0, 1.0), (1.12, 1.05, 0.85), (0.8, 1.05, 1.0))


def _spot(rng: Rng, scene: Scene, size: int) -> list[Layer]:
    radius = size * rng.uniform(0.025, 0.07)
    shape = _blob(rng, size, _pick(rng, scene.support > 0.95), radius, 0.2)
    alpha = np.clip(shape / 0.25, 0, 1) * rng.uniform(0.35, 0.7)
    tint = np.asarray(_STAIN_TINTS[int(rng.integers(len(_STAIN_TINTS)))], np.float32)
    gain = rng.uniform(0.5, 0.8) if rng.random() < 0.75 else rng.uniform(1.25, 1.45)
    return [(alpha, np.clip(scene.surface * gain * tint, 0, 1))]


def _hole(rng: Rng, scene: Scene, size: int) -> list[Layer]:
    s = size / 256
    radius = size * rng.uniform(0.012, 0.035)
    shape = _blob(rng, size, _pick(rng, scene.support > 0.95), radius, 0.08)
    inside = np.clip(shape * radius + 0.5, 0, 1)
    rim = np.clip(shape * radius + 0.5 + 1.5 * s, 0, 1) - inside
    dark = np.float32(rng.uniform(0.03, 0.12))
    return [
        (rim * 0.6, np.clip(scene.surface * rng.uniform(0.6, 1.35), 0, 1)),
        (inside, np.full_like(scene.surface, dark)),
    ]


def _missing_material(rng: Rng, scene: Scene, size: int) -> list[Layer]:
    textured = bool(scene.support.min() > 0.99)
    if textured:
        centre = _pick(rng, scene.support > 0.95)
    else:  # a chunk broken off the object's outline
        sup = (scene.support > 0.5).astype(np.uint8)
        centre = _pick(rng, cv2.morphologyEx(sup, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0)
    radius = size * rng.uniform(0.035, 0.08)
    shape = _blob(rng, size, centre, radius, 0.15)
    return [(np.clip(shape * radius + 0.5, 0, 1), scene.under)]


_STRUCTURAL: dict[str, Callable[[Rng, Scene, int], list[Layer]]] = {
    "scratch": _scratch,
    "crack": _crack,
    "spot": _spot,
    "hole": _hole,
    "missing_material": _missing_material,
}


def _apply_structural(rng: Rng, scene: Scene, size: int, defect: str) -> tuple[np.ndarray, np.ndarray]:
    """Composite one structural defect onto the scene (only where the support is) and return (image, mask)."""
    min_area = max(6, int(size * size * 1e-4))
    for _ in range(50):
        layers = _STRUCTURAL[defect](rng, scene, size)
        img = scene.surface.copy()
        changed = np.zeros(scene.support.shape, np.float32)
        for alpha, target in layers:
            a = alpha * scene.support
            _paint(img, a, target)
            changed = np.maximum(changed, a)
        mask = changed > 0.2
        if int(mask.sum()) >= min_area:
            return img, mask
    raise RuntimeError(f"synth: could not place a visible {defect} after 50 tries")  # a generator bug, not user input


# ------------------------------------------------------------------------------------------------- image making


def _finish(rng: Rng, img: np.ndarray) -> np.ndarray:
    """Lighting gradient, vignette, white balance and sensor noise, then quantise to uint8 BGR."""
    size = img.shape[0]
    yy, xx = (np.mgrid[0:size, 0:size].astype(np.float32) - size / 2) / (size / 2)
    phi = rng.uniform(0, 2 * np.pi)
    light = rng.uniform(0.92, 1.08) * (1 + rng.uniform(0.03, 0.1) * (xx * math.cos(phi) + yy * math.sin(phi)))
    light *= 1 - rng.uniform(0.02, 0.07) * (xx * xx + yy * yy) / 2
    wb = (1 + rng.uniform(-0.02, 0.02, 3)).astype(np.float32)
    out = img * light[..., None] * wb
    out += rng.normal(0, rng.uniform(0.006, 0.014), out.shape).astype(np.float32)
    return np.clip(out * 255 + 0.5, 0, 255).astype(np.uint8)


def _rng(seed: int, *keys: str | int) -> Rng:
    return np.random.default_rng([seed & 0xFFFFFFFF] + [zlib.crc32(str(k).encode("utf-8")) for k in keys])


def make_image(category: str, defect: str, size: int, rng: Rng) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic image of `category` with `defect` ("good" for none) -> (BGR uint8, mask uint8 {0,1})."""
    if category in _TEXTURES:
        if defect in LOGICAL_DEFECTS:
            raise ConfigError(f"synth: logical defect {defect!r} needs an object category, got texture {category!r}")
        scene = _TEXTURES[category](rng, size)
    elif category in _OBJECTS:
        obj = _OBJECTS[category]
        pose, parts = obj.sample(rng, size)
        sites = [dict(p) for p in parts]
        mask = np.zeros((size, size), bool)
        if defect in LOGICAL_DEFECTS:
            parts, mask = _logical_edit(rng, obj, size, pose, parts, defect)
        scene = obj.render(rng, size, pose, sites, parts)
        if defect in LOGICAL_DEFECTS:
            return _finish(rng, scene.surface), mask.astype(np.uint8)
    else:
        raise ConfigError(f"synth: unknown category {category!r}; valid: {list(ALL_CATEGORIES)}")
    if defect == "good":
        return _finish(rng, scene.surface), np.zeros((size, size), np.uint8)
    if defect not in _STRUCTURAL:
        raise ConfigError(f"synth: unknown defect {defect!r}; valid: {list(STRUCTURAL_DEFECTS + LOGICAL_DEFECTS)}")
    img, mask = _apply_structural(rng, scene, size, defect)
    return _finish(rng, img), mask.astype(np.uint8)


def _logical_edit(
    rng: Rng, obj: ObjectDesign, size: int, pose: Pose, parts: list[Part], defect: str
) -> tuple[list[Part], np.ndarray]:
    """Remove, add or move one part; the mask covers every part site whose content changed."""
    parts = list(parts)
    if defect == "missing_part":
        gone = parts.pop(int(rng.integers(len(parts))))
        return parts, obj.footprint(size, pose, gone)
    if defect == "extra_part":
        spots = obj.extra_spots(rng)
        new = spots[int(rng.integers(len(spots)))]
        return parts + [new], obj.footprint(size, pose, new)
    i = int(rng.integers(len(parts)))
    old, parts[i] = parts[i], obj.move(rng, parts[i])
    return parts, obj.footprint(size, pose, old) | obj.footprint(size, pose, parts[i])


# ------------------------------------------------------------------------------------------------- dataset writing


def defect_types(category: str) -> tuple[str, ...]:
    """Test defect folders of a category: structural for all, plus logical for objects."""
    return STRUCTURAL_DEFECTS + (LOGICAL_DEFECTS if category in _OBJECTS else ())


def test_counts(per_category: int) -> tuple[int, int]:
    """(good test images, images per defect type) for a train count: 40 -> (10, 3)."""
    return max(2, round(per_category / 4)), max(1, round(per_category / 13))


def _check_args(categories: Sequence[str] | None, per_category: int, size: int) -> list[str]:
    cats = (
        list(DEFAULT_CATEGORIES)
        if categories is None
        else list(dict.fromkeys(c.strip() for c in categories if c.strip()))
    )
    if not cats:
        raise ConfigError(f"categories: expected at least one of {list(ALL_CATEGORIES)}, got none")
    unknown = [c for c in cats if c not in ALL_CATEGORIES]
    if unknown:
        raise ConfigError(f"categories: unknown {unknown}; valid: {list(ALL_CATEGORIES)}")
    if isinstance(per_category, bool) or not isinstance(per_category, int) or per_category < 1:
        raise ConfigError(f"per_category: expected an integer >= 1, got {per_category!r}")
    if isinstance(size, bool) or not isinstance(size, int) or not MIN_SIZE <= size <= MAX_SIZE:
        raise ConfigError(f"size: expected an integer in [{MIN_SIZE}, {MAX_SIZE}], got {size!r}")
    return cats


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output {out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise ConfigError(f"output {out}: directory is not empty; use --force to replace it")
        if not (out / "synth.json").is_file():
            raise ConfigError(
                f"output {out}: not empty and not a synth dataset (no synth.json); refusing to delete it even with "
                "--force"
            )


def _write_png(path: Path, img: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise OSError(f"synth: PNG encoding failed for {path}")
    path.write_bytes(buf.tobytes())


def generate(
    out: str | os.PathLike[str],
    categories: Sequence[str] | None = None,
    per_category: int = 40,
    size: int = 256,
    seed: int = 0,
    force: bool = False,
) -> dict[str, Any]:
    """Write the dataset to `out` (built in a temp dir beside it, then renamed into place); returns synth.json."""
    cats = _check_args(categories, per_category, size)
    out = Path(out)
    _check_out(out, force)
    n_good, n_defect = test_counts(per_category)
    jobs: list[tuple[str, str, str, int]] = []
    info: dict[str, Any] = {}
    for cat in cats:
        jobs += [(cat, "train", "good", i) for i in range(per_category)]
        jobs += [(cat, "test", "good", i) for i in range(n_good)]
        jobs += [(cat, "test", d, i) for d in defect_types(cat) for i in range(n_defect)]
        info[cat] = {
            "kind": "object" if cat in _OBJECTS else "texture",
            "train": per_category,
            "test_good": n_good,
            "test_defects": {d: n_defect for d in defect_types(cat)},
        }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    os.chmod(tmp, default_mode(directory=True))  # mkdtemp makes 0700: the dataset gets the umask's mode
    try:
        for cat, split, defect, i in tqdm(jobs, desc="synth", unit="img", leave=False):
            img, mask = make_image(cat, defect, size, _rng(seed, cat, split, defect, i))
            folder = tmp / cat / split / defect
            folder.mkdir(parents=True, exist_ok=True)
            _write_png(folder / f"{i:03d}.png", img)
            if defect != "good":
                gt = tmp / cat / "ground_truth" / defect
                gt.mkdir(parents=True, exist_ok=True)
                _write_png(gt / f"{i:03d}_mask.png", mask * 255)
        meta = {
            "generator": "edge-ad synth",
            "version": SYNTH_VERSION,
            "edge_ad_version": __version__,
            "seed": seed,
            "size": size,
            "per_category": per_category,
            "categories": info,
        }
        (tmp / "synth.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("synth: wrote %d images to %s", len(jobs), out)
    return meta


def _replace_dir(new: Path, out: Path) -> None:
    """Move `new` to `out`; an existing `out` is renamed aside first and deleted only after the swap succeeded."""
    if out.is_dir() and any(out.iterdir()):
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / out.name)
        try:
            os.replace(new, out)
        except BaseException:
            os.replace(old / out.name, out)
            shutil.rmtree(old, ignore_errors=True)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, out)  # onto a missing or empty directory
