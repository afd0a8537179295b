"""Inspection geometry: find the part, inspect only the part, at the camera's resolution.

A package with geometry carries, per category, a *reference* frame and a *region of interest* (ROI: a grey mask in
the reference frame, 255 = inspect, 0 = ignore, grey levels = a per-region sensitivity weight). For every frame:

1. `locate`: the frame is registered to the reference (ECC, Euclidean: translation + rotation, on a downscaled grey
   copy, masked to the dilated ROI so a moving conveyor or a changing label do not pull it); a match score under
   `min_score` or a transform beyond `max_shift_px`/`max_rotation_deg` raises `AlignmentError` (the frame is
   never inspected unaligned). Without alignment the frame *is* in reference coordinates.
2. `views`: one warp cuts the ROI's bounding box out of the frame, in reference coordinates at full resolution,
   and cuts it into tiles (`TileSpec`: size and stride in frame pixels; each tile is resized to the model input).
3. `stitch`: the tile maps are blended (a linear ramp over the overlap) into one map of the ROI box, weighted by
   the ROI; `score` is the mean of its top 1 % inside the ROI, the image score thresholds are fitted on.
4. `to_frame`: the map is warped back to frame coordinates, so regions and overlays land on the camera image.

The same code runs in training (the tiles are the training images), evaluation and the runtime. Torch-free.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge_ad.errors import AlignmentError, ConfigError, DataError
from edge_ad.imageio import read_image, to_bgr

#: fraction of the ROI's pixels whose mean is the image score
TOP_FRACTION = 0.01


@dataclass(frozen=True)
class AlignSpec:
    """How frames are registered to the reference and when a registration is refused."""

    long_side: int = 320  #: the registration runs on grey copies this long (speed; the result is scaled back)
    max_shift_px: float = 160.0  #: in frame pixels
    max_rotation_deg: float = 10.0
    min_score: float = 0.6  #: ECC correlation coefficient (1 = identical after warping)
    iterations: int = 50

    def __post_init__(self) -> None:
        if not (32 <= self.long_side <= 4096 and self.max_shift_px >= 0 and 0 <= self.max_rotation_deg <= 90
                and 0 < self.min_score < 1 and self.iterations >= 1):
            raise ConfigError(f"geometry.align: out of range: {self}")


@dataclass(frozen=True)
class TileSpec:
    """Square tiles of `size` frame pixels, `stride` apart (stride < size: they overlap and are blended)."""

    size: int
    stride: int

    def __post_init__(self) -> None:
        if not (16 <= self.size <= 8192 and 1 <= self.stride <= self.size):
            raise ConfigError(f"tile: expected 16 <= size <= 8192 and 1 <= stride <= size, got size {self.size}, "
                              f"stride {self.stride}")

    def grid(self, h: int, w: int) -> list[tuple[int, int, int, int]]:
        """(y, x, th, tw) boxes covering an h x w image; the last row/column is flush with the border."""
        def starts(n: int) -> list[int]:
            t = min(self.size, n)
            out = list(range(0, max(n - t, 0) + 1, self.stride))
            if out[-1] != n - t:
                out.append(n - t)
            return out

        th, tw = min(self.size, h), min(self.size, w)
        return [(y, x, th, tw) for y in starts(h) for x in starts(w)]


@dataclass
class Reference:
    """One category's reference frame (BGR) and ROI weights (uint8, same size)."""

    category: str
    image: np.ndarray
    roi: np.ndarray

    def __post_init__(self) -> None:
        self.image = to_bgr(self.image)
        if self.roi.ndim == 3:
            self.roi = cv2.cvtColor(self.roi, cv2.COLOR_BGR2GRAY)
        if self.roi.shape != self.image.shape[:2] or self.roi.dtype != np.uint8:
            raise DataError(f"reference {self.category!r}: ROI {self.roi.shape} {self.roi.dtype} must be uint8 and "
                            f"the size of the reference image {self.image.shape[:2]}")
        ys, xs = np.nonzero(self.roi)
        if ys.size == 0:
            raise DataError(f"reference {self.category!r}: the ROI mask is empty (nothing to inspect)")
        self.box = (int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1))
        x, y, w, h = self.box
        self.weights = (self.roi[y:y + h, x:x + w].astype(np.float32) / 255.0)
        self._small: tuple[float, np.ndarray, np.ndarray] | None = None

    def small(self, long_side: int) -> tuple[float, np.ndarray, np.ndarray]:
        """(scale, grey reference, registration mask) at the registration resolution (cached)."""
        if self._small is None or self._small[1].shape[:2] != _small_hw(self.image.shape[:2], long_side)[1]:
            s, hw = _small_hw(self.image.shape[:2], long_side)
            grey = cv2.resize(cv2.cvtColor(self.image, cv2.COLOR_BGR2GRAY), hw[::-1], interpolation=cv2.INTER_AREA)
            mask = cv2.resize((self.roi > 0).astype(np.uint8) * 255, hw[::-1], interpolation=cv2.INTER_NEAREST)
            mask = cv2.dilate(mask, np.ones((9, 9), np.uint8))  # the part's outline is the strongest feature
            self._small = (s, grey, mask)
        return self._small


@dataclass(frozen=True)
class Placement:
    """Where a frame's part is: `transform` maps frame coordinates to reference coordinates (2x3); `reference` is
    the one it was located against (an ROI changed meanwhile applies from the next frame on)."""

    category: str
    transform: np.ndarray
    score: float
    frame_hw: tuple[int, int]
    reference: Reference | None = field(default=None, compare=False, repr=False)

    @property
    def shift_px(self) -> tuple[float, float]:
        return float(self.transform[0, 2]), float(self.transform[1, 2])

    @property
    def rotation_deg(self) -> float:
        return math.degrees(math.atan2(float(self.transform[1, 0]), float(self.transform[0, 0])))

    def to_dict(self) -> dict[str, Any]:
        return {"category": self.category, "score": round(self.score, 4),
                "transform": [[round(float(v), 5) for v in row] for row in self.transform],
                "shift_px": [round(v, 2) for v in self.shift_px], "rotation_deg": round(self.rotation_deg, 3)}


def _small_hw(hw: tuple[int, ...], long_side: int) -> tuple[float, tuple[int, int]]:
    s = min(1.0, long_side / max(hw[0], hw[1]))
    return s, (max(8, round(hw[0] * s)), max(8, round(hw[1] * s)))


class Geometry:
    """References (one per category), optional alignment and tiling; see the module docstring."""

    def __init__(self, references: Mapping[str, Reference], align: AlignSpec | None = None,
                 tiles: TileSpec | None = None) -> None:
        if not references:
            raise ConfigError("geometry: at least one reference is needed")
        sizes = {r.image.shape[:2] for r in references.values()}
        if len(sizes) != 1:
            raise ConfigError(f"geometry: every reference must have the same size, got {sorted(sizes)}")
        self.references = dict(references)
        self.align, self.tiles = align, tiles
        h, w = next(iter(sizes))
        self.frame_hw = (int(h), int(w))

    # ---- 1. locate ---------------------------------------------------------------------------------------------
    def locate(self, frame: np.ndarray, category: str | None = None) -> Placement:
        """Register `frame` to the reference of `category` (None: the best-matching one); AlignmentError when it
        cannot be registered within the bounds."""
        if category is not None and category not in self.references:
            raise ConfigError(f"geometry: no reference for category {category!r}; known: {sorted(self.references)}")
        hw = (int(frame.shape[0]), int(frame.shape[1]))
        if hw != self.frame_hw:
            raise AlignmentError(f"frame {hw[1]}x{hw[0]} differs from the reference size "
                                 f"{self.frame_hw[1]}x{self.frame_hw[0]}")
        if self.align is None:
            cat = category or next(iter(self.references))
            return Placement(cat, np.eye(2, 3, dtype=np.float64), 1.0, hw, self.references[cat])
        cands = [category] if category is not None else list(self.references)
        grey = cv2.cvtColor(to_bgr(frame), cv2.COLOR_BGR2GRAY)
        best: Placement | None = None
        why = ""
        for cat in cands:
            try:
                p = self._register(grey, self.references[cat])
            except AlignmentError as e:
                why = str(e)
                continue
            if best is None or p.score > best.score:
                best = p
        if best is None:
            raise AlignmentError(why or "no reference matched")
        return best

    def _register(self, grey: np.ndarray, ref: Reference) -> Placement:
        spec = self.align
        assert spec is not None
        s, ref_small, mask = ref.small(spec.long_side)
        small = cv2.resize(grey, ref_small.shape[::-1], interpolation=cv2.INTER_AREA)
        # a coarse translation first (phase correlation of the whole frame), so ECC starts near the answer
        (dx, dy), _ = cv2.phaseCorrelate(np.float32(small), np.float32(ref_small))
        warp = np.array([[1, 0, dx], [0, 1, dy]], np.float32)  # small frame -> small reference
        criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, spec.iterations, 1e-4)
        try:
            cc, found = cv2.findTransformECC(small, ref_small, warp, cv2.MOTION_EUCLIDEAN, criteria, mask, 5)
        except cv2.error:
            try:  # the phase-correlation start can mislead on repetitive texture: retry from identity
                cc, found = cv2.findTransformECC(small, ref_small, np.eye(2, 3, dtype=np.float32),
                                                 cv2.MOTION_EUCLIDEAN, criteria, mask, 5)
            except cv2.error as e:
                raise AlignmentError(f"category {ref.category!r}: registration did not converge "
                                     f"({str(e).strip().splitlines()[-1][:80]})") from None
        m = np.asarray(found, np.float64)
        m[:, 2] /= s  # back to full resolution: same rotation, translation scaled
        p = Placement(ref.category, m, float(cc), (int(grey.shape[0]), int(grey.shape[1])), ref)
        if not p.score >= spec.min_score:
            raise AlignmentError(f"category {ref.category!r}: match score {p.score:.3f} < {spec.min_score}")
        # the transform maps the frame onto the reference: where does the reference's ROI centre come from?
        x, y, w, h = ref.box
        inv = cv2.invertAffineTransform(m)
        cx, cy = x + w / 2, y + h / 2
        fx, fy = inv @ np.array([cx, cy, 1.0])
        shift = math.hypot(fx - cx, fy - cy)
        if shift > spec.max_shift_px or abs(p.rotation_deg) > spec.max_rotation_deg:
            raise AlignmentError(f"category {ref.category!r}: the part moved {shift:.0f} px and turned "
                                 f"{p.rotation_deg:.1f} deg, beyond {spec.max_shift_px:g} px / "
                                 f"{spec.max_rotation_deg:g} deg")
        return p

    # ---- 2. views ----------------------------------------------------------------------------------------------
    def reference_of(self, placement: Placement) -> Reference:
        return placement.reference if placement.reference is not None else self.references[placement.category]

    def box_of(self, placement: Placement) -> tuple[int, int, int, int]:
        return self.reference_of(placement).box

    def set_roi(self, category: str, roi: np.ndarray) -> None:
        """Replace a category's ROI (uint8 weights at the reference's size): frames located from now on use it."""
        ref = self.references.get(category)
        if ref is None:
            raise ConfigError(f"roi: no reference for category {category!r}; known: {sorted(self.references)}")
        if roi.shape != ref.roi.shape or roi.dtype != np.uint8:
            raise ConfigError(f"roi for {category!r}: expected a uint8 {ref.roi.shape[1]}x{ref.roi.shape[0]} mask "
                              f"(the reference frame), got {roi.dtype} {roi.shape[1::-1]}")
        self.references[category] = Reference(category, ref.image, np.ascontiguousarray(roi))

    def crop(self, frame: np.ndarray, placement: Placement) -> np.ndarray:
        """The ROI's bounding box of the frame in reference coordinates (one warp, full resolution)."""
        x, y, w, h = self.box_of(placement)
        m = placement.transform.copy()
        m[:, 2] -= (x, y)
        return cv2.warpAffine(to_bgr(frame), m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    def tile_boxes(self, placement: Placement) -> list[tuple[int, int, int, int]]:
        _, _, w, h = self.box_of(placement)
        return self.tiles.grid(h, w) if self.tiles is not None else [(0, 0, h, w)]

    def max_views(self) -> int:
        """The most model inputs one frame needs (tiles of the largest ROI box): the engine batch that runs a frame
        in one call."""
        if self.tiles is None:
            return 1
        return max(len(self.tiles.grid(r.box[3], r.box[2])) for r in self.references.values())

    def views(self, frame: np.ndarray, placement: Placement) -> list[np.ndarray]:
        """The images the model sees for this frame: the tiles of the ROI box (or the whole box)."""
        box = self.crop(frame, placement)
        return [box[y:y + th, x:x + tw] for y, x, th, tw in self.tile_boxes(placement)]

    # ---- 3. stitch and score -----------------------------------------------------------------------------------
    def stitch(self, tile_maps: Sequence[np.ndarray], placement: Placement) -> np.ndarray:
        """Tile maps (each already at its tile's size) -> the ROI box map, overlaps blended, ROI-weighted."""
        boxes = self.tile_boxes(placement)
        if len(tile_maps) != len(boxes):
            raise ConfigError(f"geometry: expected {len(boxes)} tile maps, got {len(tile_maps)}")
        _, _, w, h = self.box_of(placement)
        acc = np.zeros((h, w), np.float32)
        wsum = np.zeros((h, w), np.float32)
        overlap = 0 if self.tiles is None else self.tiles.size - self.tiles.stride
        for (y, x, th, tw), m in zip(boxes, tile_maps):
            if m.shape != (th, tw):
                raise ConfigError(f"geometry: tile map {m.shape} for a {th}x{tw} tile")
            win = np.outer(_ramp(th, overlap), _ramp(tw, overlap))
            acc[y:y + th, x:x + tw] += m * win
            wsum[y:y + th, x:x + tw] += win
        out = acc / np.maximum(wsum, 1e-12)
        return out * self.reference_of(placement).weights

    def score(self, box_map: np.ndarray, placement: Placement) -> float:
        """Mean of the top 1 % of the map inside the ROI: the image score."""
        vals = box_map[self.reference_of(placement).weights > 0]
        k = max(1, round(vals.size * TOP_FRACTION))
        return float(np.mean(np.partition(vals, vals.size - k)[-k:]))

    # ---- 4. back to the frame ----------------------------------------------------------------------------------
    def to_frame(self, box_map: np.ndarray, placement: Placement) -> np.ndarray:
        """The ROI box map warped back onto the frame (0 outside the ROI)."""
        x, y, _, _ = self.box_of(placement)
        m = placement.transform.copy()
        m[:, 2] -= (x, y)
        h, w = placement.frame_hw
        return cv2.warpAffine(np.ascontiguousarray(box_map, np.float32), m, (w, h),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT,
                              borderValue=0.0)

    def mask_to_box(self, mask: np.ndarray, placement: Placement) -> np.ndarray:
        """A ground-truth mask in frame coordinates -> the ROI box (nearest), for evaluation in the box."""
        x, y, w, h = self.box_of(placement)
        m = placement.transform.copy()
        m[:, 2] -= (x, y)
        return cv2.warpAffine(mask, m, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                              borderValue=0)

    # ---- the package / run directory ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The manifest section (the images are files beside it: geometry/<category>_reference.png, _roi.png)."""
        return {"frame_hw": list(self.frame_hw), "align": asdict(self.align) if self.align else None,
                "tiles": asdict(self.tiles) if self.tiles else None, "score": f"top{TOP_FRACTION:g}-mean",
                "references": {c: {"image": f"geometry/{c}_reference.png", "roi": f"geometry/{c}_roi.png",
                                   "box": list(r.box)} for c, r in self.references.items()}}

    def files(self) -> dict[str, bytes]:
        """The PNG files of `to_dict()`, by relative path."""
        out = {}
        for c, r in self.references.items():
            for name, img in (("reference", r.image), ("roi", r.roi)):
                ok, buf = cv2.imencode(".png", img)
                if not ok:
                    raise DataError(f"geometry: cannot encode the {name} of {c!r}")
                out[f"geometry/{c}_{name}.png"] = buf.tobytes()
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], root: Path) -> Geometry:
        """Read the manifest section back; the files are checked by the package digest first."""
        refs = {}
        for c, spec in dict(d["references"]).items():
            img = read_image(root / spec["image"])
            roi = read_image(root / spec["roi"])
            refs[c] = Reference(c, img, cv2.cvtColor(roi, cv2.COLOR_BGR2GRAY) if roi.ndim == 3 else roi)
        align = AlignSpec(**d["align"]) if d.get("align") else None
        tiles = TileSpec(**d["tiles"]) if d.get("tiles") else None
        return cls(refs, align, tiles)


def model_inputs(image: np.ndarray, preprocess: Any, geometry: Geometry | None) -> list[np.ndarray]:
    """What the model sees of one good image: its tiles (aligned; at the reference pose if it cannot be aligned)
    or the whole image, each through `preprocess.apply`. For calibration and constants, where no verdict is due."""
    if geometry is None:
        return [preprocess.apply(image)]
    try:
        placement = geometry.locate(image)
    except AlignmentError:
        cat = next(iter(geometry.references))
        placement = Placement(cat, np.eye(2, 3), 0.0, (int(image.shape[0]), int(image.shape[1])),
                              geometry.references[cat])
    return [preprocess.apply(v) for v in geometry.views(image, placement)]


def _ramp(n: int, overlap: int) -> np.ndarray:
    """1 in the middle, falling linearly to a small value over `overlap` pixels at both ends (blending weights)."""
    r = np.ones(n, np.float32)
    k = min(overlap, n // 2)
    if k > 0:
        edge = (np.arange(k, dtype=np.float32) + 1) / (k + 1)
        r[:k], r[n - k:] = edge, edge[::-1]
    return r


def choose_reference(images: Sequence[np.ndarray], long_side: int = 128) -> int:
    """`--align auto`: the index of the good image closest to all others (the medoid of small grey copies)."""
    if not images:
        raise DataError("--align auto: no training images to choose a reference from")
    smalls = []
    for img in images:
        _, hw = _small_hw(img.shape[:2], long_side)
        smalls.append(cv2.resize(cv2.cvtColor(to_bgr(img), cv2.COLOR_BGR2GRAY), hw[::-1],
                                 interpolation=cv2.INTER_AREA).astype(np.float32).ravel())
    x = np.stack(smalls)
    d = ((x[:, None, :] - x[None, :, :]) ** 2).mean(axis=2)
    return int(np.argmin(d.sum(axis=1)))
