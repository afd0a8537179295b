"""The one image decoder: every format decodes, truncation and structural corruption are refused, the pixel budget
is checked from the header before decoding, and arrays are validated the same way."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from runtime_fixtures import huge_png

from edge_ad import imageio
from edge_ad.errors import DataError

rng = np.random.default_rng(0)
IMG = cv2.GaussianBlur(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8), (5, 5), 1)


def encoded() -> dict[str, bytes]:
    def enc(ext: str, img: np.ndarray = IMG, *params: int) -> bytes:
        return cv2.imencode(ext, img, list(params))[1].tobytes()

    return {
        "png": enc(".png"), "png16": enc(".png", IMG.astype(np.uint16) * 257), "jpg": enc(".jpg"),
        "jpg-restart": enc(".jpg", IMG, cv2.IMWRITE_JPEG_RST_INTERVAL, 2),
        "jpg-progressive": enc(".jpg", IMG, cv2.IMWRITE_JPEG_PROGRESSIVE, 1), "jpg-grey": enc(".jpg", IMG[..., 0]),
        "bmp": enc(".bmp"), "tif": enc(".tif"), "tif16": enc(".tif", IMG.astype(np.uint16) * 257),
        "ppm": enc(".ppm"), "pgm": enc(".pgm", IMG[..., 0]), "webp": enc(".webp"),
    }


FORMATS = encoded()


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_every_format_decodes_to_bgr_uint8(name: str) -> None:
    img, fmt = imageio.decode_image(FORMATS[name], name)
    assert img.shape == (60, 80, 3) and img.dtype == np.uint8
    assert fmt.startswith("Mono" if "grey" in name or name == "pgm" else "BGR")
    assert fmt.endswith("16" if name.endswith("16") else "8")
    info = imageio.inspect_bytes(FORMATS[name], name)
    assert (info.width, info.height) == (80, 60)


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_truncated_files_are_refused(name: str) -> None:
    data = FORMATS[name]
    for cut in sorted({1, 8, 30, len(data) // 3, len(data) // 2, len(data) - 40, len(data) - 2, len(data) - 1}):
        with pytest.raises(DataError, match=name):
            imageio.decode_image(data[:cut], name)


def test_png_bit_flips_fail_the_crc() -> None:
    data = FORMATS["png"]
    for pos in range(40, len(data) - 12, max(1, len(data) // 50)):
        bad = bytearray(data)
        bad[pos] ^= 0x10
        with pytest.raises(DataError):
            imageio.decode_image(bytes(bad), "png")


def test_jpeg_structure_corruption_is_refused() -> None:
    data = bytearray(FORMATS["jpg-restart"])
    k = data.find(b"\xff\xd1")  # swap the second restart marker for the fourth: out of order
    assert k > 0
    data[k + 1] = 0xD3
    with pytest.raises(DataError, match="restart marker"):
        imageio.decode_image(bytes(data), "jpg")
    no_eoi = FORMATS["jpg"][:-2]
    with pytest.raises(DataError, match="truncated JPEG"):
        imageio.decode_image(no_eoi, "jpg")


def test_jpeg_decoder_warnings_are_refused() -> None:
    """Bit flips that make libjpeg warn ("Corrupt JPEG data: ...") are refused; the warning is not printed."""
    data = FORMATS["jpg"]
    refused = 0
    flips = np.random.default_rng(3)
    for _ in range(40):
        bad = bytearray(data)
        bad[int(flips.integers(600, len(bad) - 3))] ^= 1 << int(flips.integers(0, 8))
        try:
            imageio.decode_image(bytes(bad), "jpg")
        except DataError as e:
            refused += 1
            assert "jpg" in str(e)
    assert refused >= 1


def test_pixel_budget_is_checked_from_the_header(monkeypatch: pytest.MonkeyPatch) -> None:
    data = huge_png(20000, 20000)
    assert len(data) < 500_000
    with pytest.raises(DataError, match=r"20000 x 20000 = 400.0 MP exceeds the pixel budget of 50 MP .*--max-pixels"):
        imageio.decode_image(data, "big.png")
    small = huge_png(300, 200)
    assert imageio.decode_image(small, "small.png")[0].shape == (200, 300, 3)
    with pytest.raises(DataError, match="pixel budget of 0.01 MP"):
        imageio.decode_image(small, "small.png", max_pixels=10_000)
    monkeypatch.setenv(imageio.MAX_PIXELS_ENV, "1000")
    with pytest.raises(DataError, match="pixel budget of 0.001 MP"):
        imageio.decode_image(small, "small.png")
    monkeypatch.setenv(imageio.MAX_PIXELS_ENV, "lots")
    with pytest.raises(DataError, match="EDGE_AD_MAX_PIXELS"):
        imageio.decode_image(small, "small.png")


def test_arrays_are_validated() -> None:
    for bad, match in ((np.zeros((0, 0), np.uint8), "empty image"), (np.zeros((0, 10, 3), np.uint8), "empty image"),
                       (np.zeros((4, 4, 2), np.uint8), "expected HxW"), (np.zeros((4,), np.uint8), "expected HxW"),
                       (np.zeros((4, 4), np.float32), "dtype float32"), ([[1, 2]], "numpy array")):
        with pytest.raises(DataError, match=match):
            imageio.to_bgr(bad)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="pixel budget"):
        imageio.check_array(np.zeros((101, 100), np.uint8), max_pixels=10_000)
    assert imageio.to_bgr(np.zeros((3, 4, 4), np.uint8)).shape == (3, 4, 3)


def test_sixteen_bit_rounding_is_one_rule() -> None:
    x = np.array([[0, 128, 257, 32767, 65535]], np.uint16)
    assert imageio.to_uint8(x).tolist() == [[0, 0, 1, 127, 255]]


def test_not_an_image_and_empty(tmp_path) -> None:
    with pytest.raises(DataError, match="empty file"):
        imageio.decode_image(b"", "e.png")
    p = tmp_path / "x.png"
    p.write_bytes(b"GIF89a....")
    with pytest.raises(DataError, match="x.png: not an image of a supported format"):
        imageio.read_image(p)
    with pytest.raises(DataError, match="file not found"):
        imageio.read_image(tmp_path / "absent.png")
    with pytest.raises(DataError, match="expected a file, got a directory"):
        imageio.read_image(tmp_path)
