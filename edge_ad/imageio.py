"""The one image decoder of edge-ad: training, evaluation, the runtime, folder sources and every CLI read images here.

Images are hostile input. Before anything is decoded the file's own structure is walked: its size is read from
the header and checked against a pixel budget (a 437 KB PNG can claim 20000 x 20000 and decompress to 1.2 GB), and
a truncated or structurally corrupt file (PNG chunk CRCs and IEND, JPEG segment lengths, scan markers and EOI, BMP
and TIFF pixel data inside the file, PNM data length, WebP RIFF size) is refused instead of being decoded with a
grey tail, which OpenCV does with a mere warning in some versions. Then OpenCV decodes; 16-bit pixels become 8-bit
with one rounding rule (x * 255 / 65535) everywhere, so training and serving see the same pixels.

A JPEG carries no checksum: a bit flipped inside its entropy-coded data decodes to a plausible picture in every
decoder and cannot be detected; flips that break the structure are. Standard library, numpy and OpenCV only.
"""

from __future__ import annotations

import math
import os
import stat
import struct
import tempfile
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge_ad.errors import DataError

#: file extensions read as images (directories, folder sources, datasets)
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm",
                                     ".pbm", ".pnm")
#: default pixel budget: larger than any area-scan camera on the line (e.g. 8192 x 6000), small enough that one
#: image and its anomaly map at source resolution stay well under 1 GB
DEFAULT_MAX_PIXELS = 50_000_000
MAX_PIXELS_ENV = "EDGE_AD_MAX_PIXELS"
_MAX_SIDE = 1 << 16


def max_pixels_default() -> int:
    """The pixel budget: $EDGE_AD_MAX_PIXELS if set (an integer >= 1), else DEFAULT_MAX_PIXELS."""
    raw = os.environ.get(MAX_PIXELS_ENV)
    if raw is None:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(raw)
    except ValueError:
        raise DataError(f"${MAX_PIXELS_ENV}: expected an integer number of pixels, got {raw!r}") from None
    if value < 1:
        raise DataError(f"${MAX_PIXELS_ENV}: expected an integer >= 1, got {value}")
    return value


@dataclass(frozen=True)
class ImageInfo:
    """What the header says: format, width, height (before any decoding)."""

    format: str
    width: int
    height: int


def _fail(where: str, what: str) -> DataError:
    return DataError(f"{where}: {what}")


# ---------------------------------------------------------------------------------------------- structure walkers

def _png(data: bytes, where: str) -> ImageInfo:
    pos, w, h, seen_idat = 8, 0, 0, False
    first = True
    while True:
        if pos + 12 > len(data):
            raise _fail(where, f"truncated PNG (chunk header at byte {pos} of {len(data)}, no IEND)")
        length, ctype = struct.unpack(">I4s", data[pos : pos + 8])
        end = pos + 12 + length
        if length > 0x7FFFFFFF or end > len(data):
            raise _fail(where, f"truncated PNG (chunk {ctype!r} of {length} bytes runs past the end of the file)")
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : end])
        if zlib.crc32(ctype + body) & 0xFFFFFFFF != crc:
            raise _fail(where, f"corrupt PNG (CRC mismatch in chunk {ctype.decode('latin-1')!r} at byte {pos})")
        if first:
            if ctype != b"IHDR" or length != 13:
                raise _fail(where, "corrupt PNG (the first chunk is not a 13-byte IHDR)")
            w, h = struct.unpack(">II", body[:8])
            first = False
        if ctype == b"IDAT":
            seen_idat = True
        if ctype == b"IEND":
            if not seen_idat:
                raise _fail(where, "corrupt PNG (no image data: IEND before any IDAT)")
            return ImageInfo("PNG", w, h)
        pos = end


_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_scan_end(data: bytes, pos: int, where: str) -> tuple[int, int]:
    """Walk the entropy-coded data from `pos`: returns (position of the marker that ends it, RST markers seen).

    Inside a scan 0xFF is followed only by 0x00 (stuffing), 0xFF (fill) or RST0-7 in cyclic order."""
    rst = 0
    n = len(data)
    while True:
        k = data.find(b"\xff", pos)
        if k < 0 or k + 1 >= n:
            raise _fail(where, "truncated JPEG (the scan data runs to the end of the file without an EOI marker)")
        nxt = data[k + 1]
        if nxt == 0x00:
            pos = k + 2
        elif nxt == 0xFF:
            pos = k + 1
        elif 0xD0 <= nxt <= 0xD7:
            if nxt - 0xD0 != rst % 8:
                raise _fail(where, f"corrupt JPEG (restart marker RST{nxt - 0xD0} where RST{rst % 8} was due, at "
                                   f"byte {k})")
            rst += 1
            pos = k + 2
        else:
            return k, rst


def _scan_mcus(width: int, height: int, sampling: dict[int, tuple[int, int]], scan_components: list[int]) -> int:
    """MCUs in a sequential scan: interleaved scans (or single-component images) use the frame's largest sampling
    factors; a non-interleaved scan of one component counts that component's own 8x8 blocks."""
    hmax = max(hv[0] for hv in sampling.values())
    vmax = max(hv[1] for hv in sampling.values())
    if len(scan_components) == 1:
        hi, vi = sampling.get(scan_components[0], (1, 1))
        if len(sampling) == 1:
            hi, vi, hmax, vmax = 1, 1, 1, 1
        return math.ceil(math.ceil(width * hi / hmax) / 8) * math.ceil(math.ceil(height * vi / vmax) / 8)
    return math.ceil(width / (8 * hmax)) * math.ceil(height / (8 * vmax))


def _jpeg(data: bytes, where: str) -> ImageInfo:
    pos, w, h = 2, 0, 0
    sof: int | None = None
    sampling: dict[int, tuple[int, int]] = {}
    have_sos = False
    restart_interval = 0
    n = len(data)
    while True:
        if pos + 2 > n:
            raise _fail(where, f"truncated JPEG (no EOI marker; file ends at byte {n} while a marker was expected)")
        if data[pos] != 0xFF:
            raise _fail(where, f"corrupt JPEG (expected a marker at byte {pos}, got 0x{data[pos]:02x})")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == 0xD9:
            if sof is None or not have_sos:
                raise _fail(where, "corrupt JPEG (EOI before a frame header and a scan)")
            return ImageInfo("JPEG", w, h)
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # standalone markers outside a scan
            pos += 2
            continue
        if pos + 4 > n:
            raise _fail(where, f"truncated JPEG (segment 0x{marker:02x} header cut at byte {pos})")
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if length < 2 or pos + 2 + length > n:
            raise _fail(where, f"truncated JPEG (segment 0x{marker:02x} of {length} bytes at byte {pos} runs past the "
                               "end of the file)")
        body = data[pos + 4 : pos + 2 + length]
        if marker in _JPEG_SOF:
            if len(body) < 6 or len(body) < 6 + 3 * body[5]:
                raise _fail(where, "corrupt JPEG (frame header too short)")
            h, w = struct.unpack(">HH", body[1:5])
            sampling = {body[6 + 3 * c]: (max(1, body[7 + 3 * c] >> 4), max(1, body[7 + 3 * c] & 0x0F))
                        for c in range(body[5])}
            sof = marker
        elif marker == 0xDD and len(body) >= 2:
            (restart_interval,) = struct.unpack(">H", body[:2])
        pos += 2 + length
        if marker == 0xDA:
            if sof is None:
                raise _fail(where, "corrupt JPEG (scan before the frame header)")
            have_sos = True
            scan_components = [body[1 + 2 * c] for c in range(body[0])] if body else []
            pos, rst = _jpeg_scan_end(data, pos, where)
            if restart_interval and sof in (0xC0, 0xC1) and w and h and sampling:  # sequential: exact count
                want = math.ceil(_scan_mcus(w, h, sampling, scan_components) / restart_interval) - 1
                if rst != want:
                    raise _fail(where, f"corrupt or truncated JPEG ({rst} restart markers in a scan, {want} "
                                       "expected)")


def _bmp(data: bytes, where: str) -> ImageInfo:
    if len(data) < 26:
        raise _fail(where, "truncated BMP (header shorter than 26 bytes)")
    _, _, _, offset, dib = struct.unpack("<2sIII I", data[:18])[0:5]
    if dib == 12:
        w, h, _, bpp = struct.unpack("<HHHH", data[18:26])
        compression = 0
    else:
        if len(data) < 34:
            raise _fail(where, "truncated BMP (info header cut)")
        w, h, _, bpp, compression = struct.unpack("<iiHHI", data[18:34])
    h = abs(h)
    if w <= 0 or h <= 0:
        raise _fail(where, f"corrupt BMP (size {w} x {h})")
    if compression in (0, 3) and bpp in (1, 4, 8, 16, 24, 32):  # uncompressed: the pixel data size is exact
        row = ((w * bpp + 31) // 32) * 4
        if offset + row * h > len(data):
            raise _fail(where, f"truncated BMP ({len(data)} bytes; {offset + row * h} needed for {w} x {h} at "
                               f"{bpp} bits)")
    elif offset >= len(data):
        raise _fail(where, "truncated BMP (pixel data offset past the end of the file)")
    return ImageInfo("BMP", w, h)


def _tiff(data: bytes, where: str) -> ImageInfo:
    if len(data) < 8:
        raise _fail(where, "truncated TIFF (header)")
    end = "<" if data[:2] == b"II" else ">"
    (ifd,) = struct.unpack(end + "I", data[4:8])
    if ifd + 2 > len(data):
        raise _fail(where, "truncated TIFF (first IFD past the end of the file)")
    (count,) = struct.unpack(end + "H", data[ifd : ifd + 2])
    if ifd + 2 + 12 * count > len(data):
        raise _fail(where, "truncated TIFF (IFD entries past the end of the file)")
    tags: dict[int, list[int]] = {}
    sizes = {1: 1, 3: 2, 4: 4, 16: 8}
    for i in range(count):
        e = ifd + 2 + 12 * i
        tag, typ, n = struct.unpack(end + "HHI", data[e : e + 8])
        size = sizes.get(typ)
        if size is None or n > 1 << 24:
            continue
        raw = data[e + 8 : e + 12] if size * n <= 4 else None
        if raw is None:
            (off,) = struct.unpack(end + "I", data[e + 8 : e + 12])
            if off + size * n > len(data):
                raise _fail(where, f"truncated TIFF (tag {tag} values past the end of the file)")
            raw = data[off : off + size * n]
        fmt = {1: "B", 3: "H", 4: "I", 16: "Q"}[typ]
        tags[tag] = list(struct.unpack(end + fmt * n, raw[: size * n]))
    if 256 not in tags or 257 not in tags:
        raise _fail(where, "corrupt TIFF (no ImageWidth/ImageLength tag)")
    for offsets_tag, counts_tag in ((273, 279), (324, 325)):  # strips, tiles
        offs, cnts = tags.get(offsets_tag), tags.get(counts_tag)
        if offs and cnts:
            for o, c in zip(offs, cnts):
                if o + c > len(data):
                    raise _fail(where, f"truncated TIFF (image data at {o}+{c} past the end of {len(data)} bytes)")
    return ImageInfo("TIFF", tags[256][0], tags[257][0])


def _pnm(data: bytes, where: str) -> ImageInfo:
    fields: list[bytes] = []
    pos, n = 2, len(data)
    while len(fields) < (2 if data[1:2] in (b"1", b"4") else 3):
        while pos < n and (data[pos : pos + 1].isspace() or data[pos : pos + 1] == b"#"):
            if data[pos : pos + 1] == b"#":
                while pos < n and data[pos : pos + 1] not in (b"\n", b"\r"):
                    pos += 1
            pos += 1
        start = pos
        while pos < n and not data[pos : pos + 1].isspace():
            pos += 1
        if start == pos:
            raise _fail(where, "truncated PNM (header)")
        fields.append(data[start:pos])
    try:
        values = [int(f) for f in fields]
    except ValueError:
        raise _fail(where, f"corrupt PNM (header fields {fields})") from None
    w, h = values[0], values[1]
    kind = data[1:2]
    if kind in (b"4", b"5", b"6"):  # binary: exact data size
        maxval = values[2] if len(values) > 2 else 1
        per = 1 if maxval < 256 else 2
        need = ((w + 7) // 8) * h if kind == b"4" else w * h * per * (3 if kind == b"6" else 1)
        if n - (pos + 1) < need:
            raise _fail(where, f"truncated PNM ({n - pos - 1} data bytes, {need} needed for {w} x {h})")
    return ImageInfo("PNM", w, h)


def _webp(data: bytes, where: str) -> ImageInfo:
    if len(data) < 30:
        raise _fail(where, "truncated WebP (header)")
    (riff_size,) = struct.unpack("<I", data[4:8])
    if riff_size + 8 > len(data):
        raise _fail(where, f"truncated WebP (RIFF says {riff_size + 8} bytes, the file has {len(data)})")
    chunk = data[12:16]
    if chunk == b"VP8 ":
        w, h = struct.unpack("<HH", data[26:30])
        return ImageInfo("WebP", w & 0x3FFF, h & 0x3FFF)
    if chunk == b"VP8L":
        b = data[21:25]
        w = 1 + (((b[1] & 0x3F) << 8) | b[0])
        h = 1 + (((b[3] & 0x0F) << 10) | (b[2] << 2) | ((b[1] & 0xC0) >> 6))
        return ImageInfo("WebP", w, h)
    if chunk == b"VP8X":
        w = 1 + int.from_bytes(data[24:27], "little")
        h = 1 + int.from_bytes(data[27:30], "little")
        return ImageInfo("WebP", w, h)
    raise _fail(where, f"corrupt WebP (unknown chunk {chunk!r})")


def inspect_bytes(data: bytes, where: str = "image") -> ImageInfo:
    """Format and size of an encoded image from its header, after walking its structure (DataError when it is
    empty, truncated, corrupt, or not one of the formats of IMAGE_EXTENSIONS)."""
    if not data:
        raise _fail(where, "empty file (0 bytes)")
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        info = _png(data, where)
    elif data[:2] == b"\xff\xd8":
        info = _jpeg(data, where)
    elif data[:2] == b"BM":
        info = _bmp(data, where)
    elif data[:4] in (b"II*\x00", b"MM\x00*"):
        info = _tiff(data, where)
    elif data[:1] == b"P" and data[1:2] in b"123456" and len(data) > 2:
        info = _pnm(data, where)
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        info = _webp(data, where)
    else:
        raise _fail(where, f"not an image of a supported format ({', '.join(IMAGE_EXTENSIONS)}): starts with "
                           f"{data[:8]!r}")
    if not 0 < info.width <= _MAX_SIDE or not 0 < info.height <= _MAX_SIDE:
        raise _fail(where, f"corrupt {info.format} (header size {info.width} x {info.height})")
    return info


def check_pixels(width: int, height: int, where: str, max_pixels: int | None = None) -> None:
    """DataError when width x height exceeds the pixel budget (naming the budget and how to raise it)."""
    budget = max_pixels_default() if max_pixels is None else max_pixels
    if width * height > budget:
        raise _fail(where, f"{width} x {height} = {width * height / 1e6:.1f} MP exceeds the pixel budget of "
                           f"{budget / 1e6:g} MP (raise it with --max-pixels N or ${MAX_PIXELS_ENV}=N)")


# ---------------------------------------------------------------------------------------------- decoding

def to_uint8(img: np.ndarray, where: str = "image") -> np.ndarray:
    """8-bit pixels: uint8 as is, uint16 rounded to 0..255 (65535 -> 255); DataError for other types."""
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        return ((img.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    raise _fail(where, f"expected 8- or 16-bit pixels, got dtype {img.dtype}")


def _decode(data: bytes, where: str, max_pixels: int | None, strict: bool) -> tuple[np.ndarray, ImageInfo]:
    """(decoded array as stored: uint8 or uint16, 1/3/4 channels; header info)."""
    if strict:
        info = inspect_bytes(data, where)
    else:
        if not data:
            raise _fail(where, "empty file (0 bytes)")
        info = inspect_header_only(data, where)
    check_pixels(info.width, info.height, where, max_pixels)
    try:
        if strict and info.format == "JPEG":
            img, warnings = _imdecode_capturing_stderr(data)
            corrupt = [w for w in warnings if w.startswith("Corrupt JPEG data")]
            if corrupt:
                raise _fail(where, f"corrupt JPEG (the decoder reports: {corrupt[0]})")
        else:
            img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as e:
        raise _fail(where, f"cannot decode {info.format}: {str(e).strip().splitlines()[-1]}") from None
    if img is None or img.size == 0:
        raise _fail(where, f"cannot decode {info.format} (corrupt data)")
    if img.shape[0] != info.height or img.shape[1] != info.width:
        raise _fail(where, f"{info.format} decoded to {img.shape[1]} x {img.shape[0]}, the header says "
                           f"{info.width} x {info.height}")
    return img, info


_STDERR_LOCK = threading.Lock()


def _imdecode_capturing_stderr(data: bytes) -> tuple[np.ndarray | None, list[str]]:
    """cv2.imdecode with file descriptor 2 redirected to a temporary file, returning what libjpeg printed.

    libjpeg reports corrupt entropy-coded data ("Corrupt JPEG data: 85 extraneous bytes before marker 0xd9") only
    as a warning on stderr and OpenCV still returns the (damaged) picture; this is the one place it can be seen.
    Other threads' stderr output during the decode is passed through afterwards. Without a usable fd 2 the decode
    runs uncaptured."""
    with _STDERR_LOCK:
        try:
            saved = os.dup(2)
        except OSError:
            return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED), []
        with tempfile.TemporaryFile() as tmp:
            try:
                os.dup2(tmp.fileno(), 2)
                img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode("utf-8", "replace")
    lines = text.splitlines()
    others = [ln for ln in lines if not ln.startswith(("Corrupt JPEG data", "Premature end of JPEG"))]
    if others:
        os.write(2, ("\n".join(others) + "\n").encode())
    return img, lines


def decode_bytes(data: bytes, where: str = "image", *, max_pixels: int | None = None, strict: bool = True
                 ) -> np.ndarray:
    """An encoded image -> the decoded array as stored (uint8, 1/3/4 channels; 16-bit converted to 8-bit).

    `strict` (default) walks the file structure first and refuses truncation and corruption; the pixel budget is
    always checked from the header before decoding."""
    img, _ = _decode(data, where, max_pixels, strict)
    return to_uint8(img, where)


def decode_image(data: bytes, where: str = "image", *, max_pixels: int | None = None, strict: bool = True
                 ) -> tuple[np.ndarray, str]:
    """An encoded image -> (HxWx3 BGR uint8, how it was stored: "Mono8", "BGR16", "BGRa8", ...)."""
    img, _ = _decode(data, where, max_pixels, strict)
    fmt = pixel_format(img, img.dtype == np.uint16)
    return to_bgr(to_uint8(img, where), where), fmt


def inspect_header_only(data: bytes, where: str) -> ImageInfo:
    """The size from the header without the structure walk (non-strict reading); falls back to the walk for
    formats whose size is not in a fixed place."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        w, h = struct.unpack(">II", data[16:24])
        return ImageInfo("PNG", w, h)
    return inspect_bytes(data, where)


def to_bgr(img: np.ndarray, where: str = "image") -> np.ndarray:
    """Decoded pixels (grey HxW or HxWx1, BGR, BGRA; uint8 or uint16) -> HxWx3 BGR uint8; DataError otherwise."""
    img = check_array(img, where)
    if img.ndim == 2 or img.shape[2] == 1:
        return cv2.cvtColor(img.reshape(img.shape[0], img.shape[1]), cv2.COLOR_GRAY2BGR)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    return img


def check_array(img: object, where: str = "image", max_pixels: int | None = None) -> np.ndarray:
    """An image array that is safe to process: numpy, uint8/uint16 (converted to uint8), HxW, HxWx1, HxWx3 or
    HxWx4, non-empty, within the pixel budget. DataError naming the problem otherwise (never an OpenCV error)."""
    if not isinstance(img, np.ndarray):
        raise _fail(where, f"expected a numpy array, got {type(img).__name__}")
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (1, 3, 4)):
        raise _fail(where, f"expected HxW, HxWx3 or HxWx4, got shape {tuple(img.shape)}")
    if img.shape[0] < 1 or img.shape[1] < 1:
        raise _fail(where, f"empty image of shape {tuple(img.shape)}")
    check_pixels(int(img.shape[1]), int(img.shape[0]), where, max_pixels)
    return to_uint8(img, where)


def max_file_bytes(max_pixels: int | None = None) -> int:
    """Largest image file read: the pixel budget at 8 bytes per pixel (16-bit RGBA, uncompressed) plus 16 MiB of
    metadata; a larger file cannot be an image within the budget and is refused before it is read."""
    budget = max_pixels_default() if max_pixels is None else max_pixels
    return budget * 8 + (16 << 20)


def read_bytes(path: str | os.PathLike[str], what: str = "image", *, max_pixels: int | None = None) -> bytes:
    """The bytes of an image file; DataError naming the file when it is missing, not a regular file (directory,
    FIFO, device such as a link to /dev/zero), larger than `max_file_bytes`, or unreadable."""
    p = Path(path)
    limit = max_file_bytes(max_pixels)
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise DataError(f"{what} {p}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{what} {p}: expected a file, got a directory") from None
    except OSError as e:
        raise DataError(f"{what} {p}: cannot read ({e.strerror})") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise DataError(f"{what} {p}: expected a file, got a directory")
        if not stat.S_ISREG(st.st_mode):
            raise DataError(f"{what} {p}: expected a regular file, got a device, FIFO or socket")
        if st.st_size > limit:
            raise DataError(f"{what} {p}: {st.st_size} bytes is larger than any image within the pixel budget "
                            f"({limit} bytes; raise the budget with --max-pixels N or ${MAX_PIXELS_ENV}=N)")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise DataError(f"{what} {p}: cannot read ({e.strerror})") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise DataError(f"{what} {p}: larger than any image within the pixel budget ({limit} bytes)")
    return data


def read_raw(path: str | os.PathLike[str], what: str = "image", *, max_pixels: int | None = None,
             strict: bool = True) -> np.ndarray:
    """An image file decoded as stored (uint8; 1, 3 or 4 channels), for masks and callers that keep alpha/grey."""
    p = Path(path)
    return decode_bytes(read_bytes(p, what, max_pixels=max_pixels), f"{what} {p}", max_pixels=max_pixels,
                        strict=strict)


def read_image(path: str | os.PathLike[str], what: str = "image", *, max_pixels: int | None = None,
               strict: bool = True) -> np.ndarray:
    """An image file -> HxWx3 BGR uint8 (grey, BGRA and 16-bit converted); DataError naming the file otherwise."""
    p = Path(path)
    return to_bgr(read_raw(p, what, max_pixels=max_pixels, strict=strict), f"{what} {p}")


def pixel_format(img: np.ndarray, sixteen_bit: bool = False) -> str:
    """A GenICam-style name for how a decoded file stored its pixels: Mono8, BGR8, BGRa8 (16 for 16-bit files)."""
    bits = 16 if sixteen_bit else 8
    if img.ndim == 2 or img.shape[2] == 1:
        return f"Mono{bits}"
    return f"BGRa{bits}" if img.shape[2] == 4 else f"BGR{bits}"
