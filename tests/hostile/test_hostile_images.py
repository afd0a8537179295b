"""Generated bad images against the one decoder, the Detector, the folder source and `edge-ad predict`:
truncations and bit flips of every format, headers claiming huge sizes, junk files, special files, bad arrays.
0 crashes; truncated, structurally corrupt and over-budget images are all refused (never inspected as if whole)."""

from __future__ import annotations

import json
import os
import pickle
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from hostile_tally import Tally
from runtime_fixtures import blob_image, huge_png

from edge_ad import imageio
from edge_ad.runtime import Detector

RNG = np.random.default_rng(2026)
IMG = cv2.GaussianBlur(RNG.integers(0, 255, (90, 120, 3), dtype=np.uint8), (5, 5), 1)
#: formats whose pixel data carries no checksum: a flipped bit there is a different, valid picture
NO_INTEGRITY = ("jpg", "bmp", "tif", "ppm", "pgm", "webp")


def _enc(ext: str, img: np.ndarray = IMG, *params: int) -> bytes:
    return cv2.imencode(ext, img, list(params))[1].tobytes()


def formats() -> dict[str, bytes]:
    alpha = np.dstack([IMG, np.full(IMG.shape[:2], 200, np.uint8)])
    return {
        "png": _enc(".png"),
        "png-16bit": _enc(".png", IMG.astype(np.uint16) * 257),
        "png-grey": _enc(".png", IMG[..., 1]),
        "png-alpha": _enc(".png", alpha),
        "jpg": _enc(".jpg"),
        "jpg-q30": _enc(".jpg", IMG, cv2.IMWRITE_JPEG_QUALITY, 30),
        "jpg-restart": _enc(".jpg", IMG, cv2.IMWRITE_JPEG_RST_INTERVAL, 2),
        "jpg-progressive": _enc(".jpg", IMG, cv2.IMWRITE_JPEG_PROGRESSIVE, 1),
        "jpg-grey": _enc(".jpg", IMG[..., 0]),
        "bmp": _enc(".bmp"),
        "bmp-grey": _enc(".bmp", IMG[..., 2]),
        "tif": _enc(".tif"),
        "tif-16bit": _enc(".tif", IMG.astype(np.uint16) * 257),
        "ppm": _enc(".ppm"),
        "pgm": _enc(".pgm", IMG[..., 0]),
        "webp": _enc(".webp", IMG, cv2.IMWRITE_WEBP_QUALITY, 80),
        "webp-lossless": _enc(".webp", IMG, cv2.IMWRITE_WEBP_QUALITY, 101),
    }


FORMATS = formats()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def huge_headers() -> dict[str, bytes]:
    """Files whose header claims a size far over the pixel budget (the data is small or missing)."""
    out = {"png-20000x20000": huge_png(20000, 20000), "png-65535x65535-ihdr-only":
           b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", 65535, 65535, 8, 2, 0, 0, 0))
           + _chunk(b"IEND", b"")}
    jpg = bytearray(FORMATS["jpg"])
    sof = jpg.find(b"\xff\xc0")
    struct.pack_into(">HH", jpg, sof + 5, 60000, 60000)
    out["jpg-sof-60000x60000"] = bytes(jpg)
    bmp = bytearray(FORMATS["bmp"])
    struct.pack_into("<ii", bmp, 18, 30000, 30000)
    out["bmp-30000x30000"] = bytes(bmp)
    out["bmp-negative-width"] = bytes(bmp[:18]) + struct.pack("<ii", -120, 90) + bytes(bmp[26:])
    tif = bytearray(FORMATS["tif"])
    out["tif-40000x40000"] = _patch_tiff_size(tif, 40000)
    out["ppm-30000x30000"] = b"P6\n30000 30000\n255\n" + bytes(300)
    out["pgm-maxval-0"] = b"P5\n4 4\n0\n" + bytes(16)
    out["webp-lossless-16383"] = _patch_webp_size(bytearray(FORMATS["webp-lossless"]))
    out["webp-lossy-16383"] = _patch_webp_size(bytearray(FORMATS["webp"]))
    return out


def _patch_tiff_size(tif: bytearray, side: int) -> bytes:
    """Set ImageWidth/ImageLength (tags 256/257) of the first IFD of a little-endian TIFF to `side`."""
    ifd = struct.unpack_from("<I", tif, 4)[0]
    n = struct.unpack_from("<H", tif, ifd)[0]
    for i in range(n):
        e = ifd + 2 + 12 * i
        tag, typ = struct.unpack_from("<HH", tif, e)
        if tag in (256, 257):
            if typ == 3:
                struct.pack_into("<H", tif, e + 8, min(side, 65535))
            else:
                struct.pack_into("<I", tif, e + 8, side)
    return bytes(tif)


def _patch_webp_size(webp: bytearray) -> bytes:
    """Claim 16383 x 16383 in a lossy (VP8) or lossless (VP8L) WebP."""
    if webp[12:16] == b"VP8 ":  # key frame: 3-byte tag, start code 9d 01 2a, then 14-bit width/height
        struct.pack_into("<HH", webp, 26, 16383, 16383)
    elif webp[12:16] == b"VP8L":  # signature 0x2f, then 14-bit width-1, 14-bit height-1
        v = int.from_bytes(webp[21:25], "little")
        webp[21:25] = ((v & ~((1 << 28) - 1)) | 16382 | (16382 << 14)).to_bytes(4, "little")
    else:
        raise AssertionError(f"unexpected WebP chunk {bytes(webp[12:16])!r}")
    return bytes(webp)


def junk() -> dict[str, bytes]:
    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str, str]]:
            return (open, ("/tmp/edge-ad-hostile-pwned", "w"))

    return {"empty": b"", "one-byte": b"\x89", "random-1k": RNG.integers(0, 256, 1024, dtype=np.uint8).tobytes(),
            "text": b"hello, this is not an image\n", "png-signature-only": b"\x89PNG\r\n\x1a\n",
            "png-no-ihdr": b"\x89PNG\r\n\x1a\n" + _chunk(b"IEND", b""), "gif": b"GIF89a\x01\x00\x01\x00\x00\x00\x00;",
            "html": b"<html><body>404</body></html>", "zip": b"PK\x03\x04" + bytes(60), "elf": b"\x7fELF" + bytes(60),
            "pickle": pickle.dumps(Payload()), "json": b'{"image": [1, 2, 3]}', "jpeg-soi-eoi": b"\xff\xd8\xff\xd9",
            "bmp-header-only": FORMATS["bmp"][:54], "riff-not-webp": b"RIFF\x04\x00\x00\x00WAVE",
            "pnm-bad-header": b"P6\nwide tall\n255\n"}


def truncations(data: bytes) -> list[int]:
    n = len(data)
    cuts = {0, 1, 2, 7, 8, 16, 33, 64, n // 8, n // 4, n // 3, n // 2, 2 * n // 3, n - 64, n - 16, n - 3, n - 2,
            n - 1}
    return sorted(c for c in cuts if 0 <= c < n)


def bit_flips(data: bytes, k: int, seed: int) -> list[tuple[int, bytes]]:
    g = np.random.default_rng(seed)
    out = []
    for _ in range(k):
        pos, bit = int(g.integers(0, len(data))), int(g.integers(0, 8))
        bad = bytearray(data)
        bad[pos] ^= 1 << bit
        out.append((pos, bytes(bad)))
    return out


def test_truncated_files_are_always_refused(tally: Tally) -> None:
    for name, data in FORMATS.items():
        for cut in truncations(data):
            tally.attempt("image-truncated", f"{name}[:{cut}]", lambda d=data[:cut], n=name: imageio.decode_image(d, n))
    tally.check("image-truncated")


def test_bit_flips_are_refused_or_harmless(tally: Tally) -> None:
    for i, (name, data) in enumerate(FORMATS.items()):
        detectable = not name.startswith(NO_INTEGRITY)
        for pos, bad in bit_flips(data, 24, seed=i):
            cat = "image-bitflip-checksummed" if detectable else "image-bitflip-unchecked"
            outcome = tally.attempt(cat, f"{name}@{pos}", lambda b=bad, n=name: imageio.decode_image(b, n),
                                    may_pass=not detectable)
            if outcome == "accepted":  # a picture came out: it must still be a sane one
                img, _ = imageio.decode_image(bad, name)
                assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    tally.check("image-bitflip-checksummed", "image-bitflip-unchecked")


def test_huge_headers_and_junk_are_refused(tally: Tally) -> None:
    for name, data in {**huge_headers(), **junk()}.items():
        tally.attempt("image-header-junk", name, lambda d=data, n=name: imageio.decode_image(d, n))
    tally.check("image-header-junk")
    assert not Path("/tmp/edge-ad-hostile-pwned").exists()


def test_bad_arrays_are_refused(tally: Tally) -> None:
    bad = {"0x0": np.zeros((0, 0), np.uint8), "0x10x3": np.zeros((0, 10, 3), np.uint8),
           "10x0x3": np.zeros((10, 0, 3), np.uint8), "5x5x0": np.zeros((5, 5, 0), np.uint8),
           "5x5x2": np.zeros((5, 5, 2), np.uint8), "5x5x5": np.zeros((5, 5, 5), np.uint8),
           "1d": np.zeros(10, np.uint8), "4d": np.zeros((1, 5, 5, 3), np.uint8), "scalar": np.array(3, np.uint8),
           "float-nan": np.full((8, 8, 3), np.nan, np.float32), "float64": np.zeros((8, 8), np.float64),
           "int8": np.zeros((8, 8), np.int8), "int32": np.zeros((8, 8), np.int32), "bool": np.zeros((8, 8), bool),
           "complex": np.zeros((8, 8), np.complex64), "object": np.zeros((8, 8), object),
           "40000x40000-view": np.broadcast_to(np.zeros(1, np.uint8), (40000, 40000)),
           "list": [[1, 2], [3, 4]], "none": None, "bytes": b"\x89PNG"}
    good = {"strided": IMG[::2, ::3], "fortran": np.asfortranarray(IMG), "readonly": np.frombuffer(
        IMG.tobytes(), np.uint8).reshape(IMG.shape), "grey-hx1": IMG[..., :1], "bgra": np.dstack([IMG, IMG[..., 0]]),
        "uint16": IMG.astype(np.uint16) * 257}
    for name, arr in bad.items():
        tally.attempt("array", name, lambda a=arr: imageio.to_bgr(imageio.check_array(a)))
    for name, arr in good.items():
        tally.attempt("array", name, lambda a=arr: imageio.to_bgr(imageio.check_array(a)), bad=False)
    tally.check("array")


def _corpus(folder: Path) -> dict[str, bool]:
    """Write the bad files plus a few good parts into `folder`; {file name: is good}."""
    folder.mkdir()
    names: dict[str, bool] = {}
    for name, data in FORMATS.items():
        ext = name.split("-")[0]
        for cut in truncations(data)[::3]:
            (folder / f"trunc-{name}-{cut}.{ext}").write_bytes(data[:cut])
            names[f"trunc-{name}-{cut}.{ext}"] = False
    for name, data in {**huge_headers(), **junk()}.items():
        (folder / f"bad-{name}.png").write_bytes(data)
        names[f"bad-{name}.png"] = False
    (folder / "bad-dir.png").mkdir()
    names["bad-dir.png"] = False
    os.symlink("/dev/zero", folder / "bad-dev-zero.png")
    names["bad-dev-zero.png"] = False
    os.mkfifo(folder / "bad-fifo.png")
    names["bad-fifo.png"] = False
    for i in range(3):
        cv2.imwrite(str(folder / f"good-{i}.png"), blob_image() if i % 2 else blob_image(box=(0, 0, 1, 1)))
        names[f"good-{i}.png"] = True
    cv2.imwrite(str(folder / "good-3.jpg"), blob_image())
    names["good-3.jpg"] = True
    return names


def test_detector_batch_keeps_every_good_result(package: Path, tmp_path: Path, tally: Tally) -> None:
    names = _corpus(tmp_path / "in")
    det = Detector.load(package, backend="onnxruntime")
    paths = [tmp_path / "in" / n for n in sorted(names)]
    results = det.predict_batch(paths, errors="result")
    assert len(results) == len(paths)
    for p, r in zip(paths, results):
        ok = names[p.name]
        tally.count("detector-files", "accepted" if ok and r.error is None else "clear" if not ok and r.error else
                    "accepted-bad" if not ok else "crash")
        assert (r.error is None) == ok, (p.name, r.error)
        if not ok:
            assert r.status == "ERROR" and r.is_anomalous and p.name in r.error
    for p in paths:  # one by one: DataError (clear), never another exception
        tally.attempt("detector-files", p.name, lambda p=p: det.predict(p), bad=not names[p.name])
    tally.check("detector-files")


def test_predict_cli_writes_every_result_incrementally(package: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str], tally: Tally) -> None:
    from edge_ad.cli.main import main

    names = _corpus(tmp_path / "in")
    out = tmp_path / "out"
    rc = main(["predict", str(package), str(tmp_path / "in"), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 1, err  # some inputs failed: each reported and recorded, the run never aborts
    lines = [json.loads(ln) for ln in (out / "results.jsonl").read_text().splitlines()]
    by_name = {Path(ln["file"]).name: ln for ln in lines}
    for n, good in names.items():
        if n not in by_name:  # a directory listing takes regular files only
            assert n in ("bad-dir.png", "bad-fifo.png", "bad-dev-zero.png"), n
            continue
        status = by_name[n]["status"]
        tally.count("predict-cli", "accepted" if good and status != "ERROR" else "clear" if not good and
                    status == "ERROR" else "accepted-bad")
        assert (status != "ERROR") == good, (n, by_name[n])
    assert "Traceback" not in err
    assert not (out / "results.jsonl.partial").exists()
    tally.check("predict-cli")
