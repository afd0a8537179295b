"""Image preprocessing shared by training and the line-side runtime, so both see identical pixels.

The model package's manifest stores a `Preprocess` as a dict; the runtime never guesses it.
Only numpy and OpenCV are used here (this module is on the torch-free runtime path).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np

from edge_ad.imageio import to_bgr
from edge_ad.runtime.resample import pil_bilinear

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


#: resize methods a package can name: "area-down/linear-up" (edge-ad's own), "linear" (cv2.INTER_LINEAR, as the
#: official DualAD/ULSAD code), "pil-bilinear" (Pillow's antialiased bilinear, as official Dinomaly/MambaAD)
INTERPOLATIONS = ("area-down/linear-up", "linear", "pil-bilinear")


def _resize(img: np.ndarray, size_hw: tuple[int, int], *, mask: bool = False,
            interpolation: str = "area-down/linear-up") -> np.ndarray:
    """Resize to (h, w). "area-down/linear-up": area averaging when shrinking (antialiased), bilinear when
    enlarging. "linear": cv2's bilinear always. "pil-bilinear": Pillow's BILINEAR, bit-exact (`resample.py`).
    Masks are always resized with cv2's bilinear (then thresholded > 0 by the caller)."""
    h, w = size_hw
    if img.shape[0] == h and img.shape[1] == w:
        return img
    if interpolation == "pil-bilinear" and not mask:
        return pil_bilinear(img, (h, w))
    shrink = img.shape[0] > h or img.shape[1] > w
    area = interpolation == "area-down/linear-up" and shrink and not mask
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if area else cv2.INTER_LINEAR)


@dataclass(frozen=True)
class Preprocess:
    """Square-or-not resize, then center crop; colour order and normalisation constants of the model input.

    `resize` and `crop` are (height, width). The aspect ratio is not kept (as in the reference code).
    `mean`/`std` are applied inside the exported graph (uint8 input), or by `normalize()` in PyTorch.
    """

    resize: tuple[int, int]
    crop: tuple[int, int]
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    color_order: str = "RGB"
    interpolation: str = "area-down/linear-up"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.crop[0] > self.resize[0] or self.crop[1] > self.resize[1]:
            raise ValueError(f"preprocess: crop {self.crop} is larger than resize {self.resize}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"preprocess: interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")
        if self.color_order not in ("RGB", "BGR"):
            raise ValueError(f"preprocess: color_order must be 'RGB' or 'BGR', got {self.color_order!r}")

    @property
    def crop_box(self) -> tuple[int, int, int, int]:
        """(top, left, height, width) of the crop inside the resized image (centre crop, torchvision rounding)."""
        rh, rw = self.resize
        ch, cw = self.crop
        top = round((rh - ch) / 2.0)
        left = round((rw - cw) / 2.0)
        return top, left, ch, cw

    def apply(self, bgr: np.ndarray) -> np.ndarray:
        """BGR, grey or BGRA image (uint8/uint16) of any size -> uint8 HxWx3 crop in the model's colour order;
        DataError for anything else (empty, wrong shape or type, over the pixel budget)."""
        img = to_bgr(bgr)
        img = _resize(img, self.resize, interpolation=self.interpolation)
        top, left, ch, cw = self.crop_box
        img = img[top : top + ch, left : left + cw]
        if self.color_order == "RGB":
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        return np.ascontiguousarray(img)

    def apply_mask(self, mask: np.ndarray) -> np.ndarray:
        """Ground-truth mask of any size -> uint8 {0,1} crop aligned with `apply` (bilinear, then > 0)."""
        m = (np.asarray(mask) > 0).astype(np.uint8) * 255
        if m.ndim == 3:
            m = m.max(axis=2)
        m = _resize(m, self.resize, mask=True)
        top, left, ch, cw = self.crop_box
        return (m[top : top + ch, left : left + cw] > 0).astype(np.uint8)

    def normalize(self, rgb_uint8: np.ndarray) -> np.ndarray:
        """uint8 HxWx3 (or NxHxWx3) -> float32 normalised CHW (or NCHW), the reference-model input."""
        x: np.ndarray = rgb_uint8.astype(np.float32) / np.float32(255.0)
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(np.moveaxis(x, -1, -3))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["resize"] = list(self.resize)
        d["crop"] = list(self.crop)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocess:
        try:
            return cls(
                resize=(int(d["resize"][0]), int(d["resize"][1])),
                crop=(int(d["crop"][0]), int(d["crop"][1])),
                mean=tuple(float(v) for v in d.get("mean", IMAGENET_MEAN)),  # type: ignore[arg-type]
                std=tuple(float(v) for v in d.get("std", IMAGENET_STD)),  # type: ignore[arg-type]
                color_order=str(d.get("color_order", "RGB")),
                interpolation=str(d.get("interpolation", "area-down/linear-up")),
                extra=dict(d.get("extra", {})),
            )
        except (KeyError, TypeError, IndexError, ValueError) as e:
            raise ValueError(f"preprocess: invalid spec {d!r}: {e}") from e
