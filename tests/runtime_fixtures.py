"""Tiny, deterministic model packages for the runtime tests (built with onnx.helper; no torch, no exporter).

The graph: image uint8 [B,H,W,3] -> Cast float -> ReduceMean over channels -> /255 -> NCHW -> 2x2 AveragePool
-> anomaly_map [B,1,H/2,W/2] (= local brightness in [0,1]); score = ReduceMax of the map. A bright blob on a dark
image therefore gives a high score and a region exactly where the blob is.
"""

from __future__ import annotations

import copy
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from edge_ad.runtime.package import write_package

INPUT_HW = (64, 64)
RESIZE_HW = (80, 80)
MAP_HW = (32, 32)
DARK = 20
BRIGHT = 255


def make_onnx(input_hw: tuple[int, int] = INPUT_HW, batch: int | str = "batch", opset: int = 17,
              input_name: str = "image") -> bytes:
    """Serialized ONNX model of the brightness 'anomaly' graph described in the module docstring."""
    h, w = input_hw
    nodes = [
        helper.make_node("Cast", [input_name], ["f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["f"], ["grey"], axes=[3], keepdims=1),
        helper.make_node("Transpose", ["grey"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Div", ["nchw", "c255"], ["unit"]),
        helper.make_node("AveragePool", ["unit"], ["anomaly_map"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("ReduceMax", ["anomaly_map"], ["score"], axes=[1, 2, 3], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "brightness",
        [helper.make_tensor_value_info(input_name, TensorProto.UINT8, [batch, h, w, 3])],
        [
            helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, [batch, 1, h // 2, w // 2]),
            helper.make_tensor_value_info("score", TensorProto.FLOAT, [batch]),
        ],
        initializer=[helper.make_tensor("c255", TensorProto.FLOAT, [], [255.0])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="edge-ad-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def make_manifest(input_hw: tuple[int, int] = INPUT_HW, resize_hw: tuple[int, int] = RESIZE_HW,
                  image_threshold: float = 0.5, pixel_threshold: float = 0.5, min_area: int = 4) -> dict[str, Any]:
    """A complete schema-valid manifest for `make_onnx` (files is filled by write_package)."""
    h, w = input_hw
    return {
        "schema_version": 2,
        "digest": "0" * 64,  # write_package computes the real one
        "edge_ad_version": "0.1.0",
        "created": "2026-11-24T10:00:00Z",
        "model": {"name": "brightness-test", "family": "test", "untrained": True},
        "categories": ["widget"],
        "precision": "fp32",
        "onnx": {"file": "model.onnx", "opset": 17},
        "input": {
            "name": "image", "dtype": "uint8", "layout": "NHWC", "height": h, "width": w, "batch": "dynamic",
            "preprocess": {"resize": list(resize_hw), "crop": [h, w], "mean": [0.485, 0.456, 0.406],
                           "std": [0.229, 0.224, 0.225], "color_order": "RGB"},
        },
        "outputs": {"anomaly_map": {"height": h // 2, "width": w // 2}, "score": {}},
        "postprocess": {"min_region_area_px": min_area, "mask_blur_sigma": 0.0},
        "thresholds": {
            "image": {"value": image_threshold, "method": "manual"},
            "pixel": {"value": pixel_threshold, "method": "manual"},
            "normalization": {"score_min": 0.05, "score_max": 0.95, "pixel_min": 0.0, "pixel_max": 1.0},
        },
        "files": {},
    }


def build_package(out: Path, manifest: dict[str, Any] | None = None, batch: int | str = "batch",
                  **manifest_kw: Any) -> Path:
    """Write a test package to `out` and return its path."""
    man = copy.deepcopy(manifest) if manifest is not None else make_manifest(**manifest_kw)
    hw = (man["input"]["height"], man["input"]["width"])
    return write_package(out, {"model.onnx": make_onnx(hw, batch=batch)}, man)


def blob_image(hw: tuple[int, int] = (200, 300), box: tuple[int, int, int, int] = (140, 80, 40, 40),
               channels: int = 3) -> np.ndarray:
    """Dark uint8 image with a bright rectangle at box = (x, y, w, h); 1 channel = grey, 4 = BGRA."""
    h, w = hw
    img = np.full((h, w, channels), DARK, np.uint8)
    x, y, bw, bh = box
    img[y : y + bh, x : x + bw] = BRIGHT
    if channels == 4:
        img[..., 3] = 255
    return img[..., 0] if channels == 1 else img


def huge_png(width: int, height: int) -> bytes:
    """A valid 1-bit black PNG of width x height, streamed row by row (20000 x 20000 is ~60 KB): the
    decompression bomb of the pixel-budget tests."""
    comp = zlib.compressobj(9)
    row = b"\x00" + bytes((width + 7) // 8)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def event(rec: Any, result: Any = None, image: Any = None, *, model: dict[str, Any] | None = None,
          when: float | None = None, source: str | None = None) -> Any:
    """An InspectionEvent as a scheduler would publish it (for recorder tests)."""
    import time as _time

    from edge_ad.station.event import InspectionEvent, PackageIdentity

    m = model or {}
    frame = dict(result.frame or {}) if result is not None and result.frame is not None else {}
    return InspectionEvent(record=rec, result=result, image=image, frame=frame,
                           package=PackageIdentity(m.get("name"), m.get("precision"), m.get("digest"), rec.model_id),
                           source=source or frame.get("source_id"), time=_time.time() if when is None else when)
