"""Camera pixel formats -> BGR: the four Bayer patterns on synthetic mosaics (OpenCV's shifted naming), packed
colour and mono formats, PFNC codes, truncated buffers."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge_ad.errors import DataError
from edge_ad.sources.pixel_formats import (
    BAYER_TO_CV2,
    PFNC_CODES,
    canonical,
    mosaic,
    to_bgr,
)

COLOUR_BGR = (30, 120, 220)  # distinct B, G, R so any channel or phase mix-up shows


def _flat(h: int = 16, w: int = 20) -> np.ndarray:
    return np.tile(np.array(COLOUR_BGR, np.uint8), (h, w, 1))


@pytest.mark.parametrize("pattern,top_left", [("BayerRG8", 2), ("BayerGR8", 1), ("BayerGB8", 1), ("BayerBG8", 0)])
def test_mosaic_puts_the_named_colour_top_left(pattern: str, top_left: int) -> None:
    m = mosaic(_flat(), pattern)
    assert m.shape == (16, 20)
    assert m[0, 0] == COLOUR_BGR[top_left]
    # the opposite corner of the 2x2 block: R<->B for RG/BG, G for the G-first patterns
    assert m[1, 1] == COLOUR_BGR[{"BayerRG8": 0, "BayerGR8": 1, "BayerGB8": 1, "BayerBG8": 2}[pattern]]


@pytest.mark.parametrize("pattern", sorted(BAYER_TO_CV2))
def test_bayer_demosaic_recovers_the_colour(pattern: str) -> None:
    raw = mosaic(_flat(), pattern)
    bgr = to_bgr(raw.tobytes(), 20, 16, pattern)
    assert bgr.shape == (16, 20, 3) and bgr.dtype == np.uint8
    inner = bgr[2:-2, 2:-2].reshape(-1, 3).astype(int)
    assert np.abs(inner - np.array(COLOUR_BGR)).max() <= 1, (pattern, inner[:3])


def test_naive_opencv_naming_would_swap_red_and_blue() -> None:
    """The trap the mapping avoids: COLOR_BayerRG2BGR on an RGGB mosaic gives blue where red is."""
    wrong = cv2.cvtColor(mosaic(_flat(), "BayerRG8"), cv2.COLOR_BayerRG2BGR)[8, 10]
    assert abs(int(wrong[0]) - COLOUR_BGR[2]) <= 1 and abs(int(wrong[2]) - COLOUR_BGR[0]) <= 1


def test_bayer_on_a_natural_image_matches_the_original() -> None:
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8), (0, 0), 4)
    for pattern in BAYER_TO_CV2:
        out = to_bgr(mosaic(img, pattern), 96, 64, pattern)
        err = np.abs(out[4:-4, 4:-4].astype(int) - img[4:-4, 4:-4].astype(int)).mean()
        assert err < 3.0, (pattern, err)


def test_mono_rgb_bgr_rgba_and_mono16() -> None:
    img = _flat(4, 6)
    grey = np.arange(24, dtype=np.uint8).reshape(4, 6)
    mono = to_bgr(grey.tobytes(), 6, 4, "Mono8")
    assert mono.shape == (4, 6, 3) and (mono[..., 0] == grey).all() and (mono[..., 2] == grey).all()
    assert (to_bgr(img[..., ::-1].tobytes(), 6, 4, "RGB8") == img).all()
    assert (to_bgr(img.tobytes(), 6, 4, "BGR8Packed") == img).all()
    rgba = np.dstack([img[..., ::-1], np.full((4, 6), 255, np.uint8)])
    assert (to_bgr(rgba, 6, 4, "RGBa8") == img).all()  # numpy buffers as harvesters returns them
    m16 = (grey.astype("<u2") << 8).tobytes()
    assert (to_bgr(m16, 6, 4, "Mono16")[..., 1] == grey).all()
    m12 = (grey.astype("<u2") << 4).tobytes()
    assert (to_bgr(m12, 6, 4, "Mono12")[..., 1] == grey).all()


def test_pfnc_codes_padding_and_errors() -> None:
    assert canonical(0x01080009) == "BayerRG8" and canonical(0x01080001) == "Mono8"
    assert set(PFNC_CODES.values()) >= {"Mono8", "RGB8", "BGR8", "BayerRG8", "BayerGR8", "BayerGB8", "BayerBG8"}
    padded = np.zeros(4 * 6 + 10, np.uint8)
    assert to_bgr(padded, 6, 4, 0x01080001).shape == (4, 6, 3)
    with pytest.raises(DataError, match=r"expected 24 bytes, got 20 \(truncated\)"):
        to_bgr(bytes(20), 6, 4, "Mono8")
    with pytest.raises(DataError, match="unsupported"):
        to_bgr(bytes(24), 6, 4, "YUV411_8")
    with pytest.raises(DataError, match="0x12345678"):
        canonical(0x12345678)
    with pytest.raises(DataError, match="positive size"):
        to_bgr(bytes(24), 0, 4, "Mono8")
    with pytest.raises(DataError, match="Bayer pattern"):
        mosaic(_flat(), "Mono8")
