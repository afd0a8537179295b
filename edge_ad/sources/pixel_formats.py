"""Camera pixel formats (GenICam PFNC names and codes) to BGR uint8 with OpenCV.

OpenCV names a Bayer pattern after the 2x2 block that starts at the *second* row and column, so the PFNC pattern
(named from the top-left pixel) maps to OpenCV's name with both axes shifted: BayerRG8 (RGGB) -> COLOR_BayerBG2BGR,
BayerGR8 -> COLOR_BayerGB2BGR, BayerGB8 -> COLOR_BayerGR2BGR, BayerBG8 -> COLOR_BayerRG2BGR.
"""

from __future__ import annotations

import cv2
import numpy as np

from edge_ad.errors import DataError

BAYER_TO_CV2: dict[str, int] = {
    "BayerRG8": cv2.COLOR_BayerBG2BGR,
    "BayerGR8": cv2.COLOR_BayerGB2BGR,
    "BayerGB8": cv2.COLOR_BayerGR2BGR,
    "BayerBG8": cv2.COLOR_BayerRG2BGR,
}

# bytes per pixel of every supported format (after alias resolution)
BYTES_PER_PIXEL: dict[str, int] = {
    "Mono8": 1, "Mono10": 2, "Mono12": 2, "Mono14": 2, "Mono16": 2,
    "RGB8": 3, "BGR8": 3, "RGBa8": 4, "BGRa8": 4,
    **{name: 1 for name in BAYER_TO_CV2},
}

ALIASES: dict[str, str] = {
    "RGB8Packed": "RGB8", "BGR8Packed": "BGR8", "RGBA8Packed": "RGBa8", "BGRA8Packed": "BGRa8", "RGBA8": "RGBa8",
    "BGRA8": "BGRa8",
}

# PFNC 32-bit codes (what Aravis reports in a buffer) -> name
PFNC_CODES: dict[int, str] = {
    0x01080001: "Mono8", 0x01100003: "Mono10", 0x01100005: "Mono12", 0x01100025: "Mono14", 0x01100007: "Mono16",
    0x01080008: "BayerGR8", 0x01080009: "BayerRG8", 0x0108000A: "BayerGB8", 0x0108000B: "BayerBG8",
    0x02180014: "RGB8", 0x02180015: "BGR8", 0x02200016: "RGBa8", 0x02200017: "BGRa8",
}

_MONO_SHIFT = {"Mono10": 2, "Mono12": 4, "Mono14": 6, "Mono16": 8}


def canonical(pixel_format: str | int) -> str:
    """PFNC name of a format given as a name, an alias or a PFNC code; DataError when unsupported."""
    if isinstance(pixel_format, (int, np.integer)):
        name = PFNC_CODES.get(int(pixel_format))
        if name is None:
            raise DataError(f"pixel format 0x{int(pixel_format):08X}: unsupported; supported: {supported()}")
        return name
    name = ALIASES.get(pixel_format, pixel_format)
    if name not in BYTES_PER_PIXEL:
        raise DataError(f"pixel format {pixel_format!r}: unsupported; supported: {supported()}")
    return name


def supported() -> list[str]:
    """Names of the supported pixel formats."""
    return sorted(BYTES_PER_PIXEL)


def to_bgr(data: np.ndarray | bytes | memoryview, width: int, height: int, pixel_format: str | int) -> np.ndarray:
    """Raw camera buffer (bytes or uint8 array, row-major, no padding) -> BGR uint8 (height, width, 3).

    A buffer smaller than width*height*bytes-per-pixel (a truncated frame) raises DataError naming both sizes; extra
    trailing bytes (padding, chunk data) are ignored.
    """
    name = canonical(pixel_format)
    if width <= 0 or height <= 0:
        raise DataError(f"{name} frame: expected a positive size, got {width}x{height}")
    bpp = BYTES_PER_PIXEL[name]
    raw = np.frombuffer(data, np.uint8) if not isinstance(data, np.ndarray) else data.reshape(-1).view(np.uint8)
    need = width * height * bpp
    if raw.size < need:
        raise DataError(f"{name} frame {width}x{height}: expected {need} bytes, got {raw.size} (truncated)")
    raw = raw[:need]
    if name == "Mono8":
        return cv2.cvtColor(raw.reshape(height, width), cv2.COLOR_GRAY2BGR)
    if name in _MONO_SHIFT:
        mono = (raw.view("<u2").reshape(height, width) >> _MONO_SHIFT[name]).astype(np.uint8)
        return cv2.cvtColor(mono, cv2.COLOR_GRAY2BGR)
    if name in BAYER_TO_CV2:
        return cv2.cvtColor(raw.reshape(height, width), BAYER_TO_CV2[name])
    if name == "RGB8":
        return cv2.cvtColor(raw.reshape(height, width, 3), cv2.COLOR_RGB2BGR)
    if name == "BGR8":
        return raw.reshape(height, width, 3).copy()
    if name == "RGBa8":
        return cv2.cvtColor(raw.reshape(height, width, 4), cv2.COLOR_RGBA2BGR)
    return cv2.cvtColor(raw.reshape(height, width, 4), cv2.COLOR_BGRA2BGR)  # BGRa8


def mosaic(bgr: np.ndarray, pattern: str) -> np.ndarray:
    """BGR image -> single-channel Bayer mosaic in the PFNC `pattern` ("BayerRG8", ...): what such a sensor outputs.

    Used to test demosaicing and to simulate colour cameras.
    """
    name = canonical(pattern)
    if name not in BAYER_TO_CV2:
        raise DataError(f"mosaic: expected a Bayer pattern ({sorted(BAYER_TO_CV2)}), got {pattern!r}")
    letters = name[5:7]  # colours of the top-left 2x2 block, row-major: e.g. "RG" -> R G / G B
    order = {"RG": "RGGB", "GR": "GRBG", "GB": "GBRG", "BG": "BGGR"}[letters]
    chan = {"B": 0, "G": 1, "R": 2}
    out = np.empty(bgr.shape[:2], np.uint8)
    for k, (dy, dx) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        out[dy::2, dx::2] = bgr[dy::2, dx::2, chan[order[k]]]
    return out
