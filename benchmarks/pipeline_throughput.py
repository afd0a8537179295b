"""Pipeline throughput from a GigE Vision camera vs pure inference throughput, in the same run.

Starts Aravis' fake GigE camera on 127.0.0.1 (real GVCP/GVSP), runs the package with `Detector.predict` in a loop
(what `edge-ad bench` measures: preprocess + inference + postprocess, one image per call) to get the
inference-bound rate, then streams the camera (free-running faster than the model) through `edge_ad.pipeline`
with policy `latest` and measures results per second. Goal: pipeline >= 95% of the inference-bound rate.

    .venv/bin/python benchmarks/pipeline_throughput.py [--package DIR] [--seconds 15] [--json out.json]

Without --package a synthetic convolutional package (ONNX built with onnx.helper, ~tens of ms per image on a CPU)
is written to a temporary folder. Needs aravis-tools, gir1.2-aravis-0.8 and PyGObject.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

SERIAL = "EDGEADBENCH"


def build_conv_package(out: Path, size: int = 224, width: int = 48, depth: int = 4) -> Path:
    """A package whose model is a small conv net: enough compute for the camera to outrun it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edge_ad.runtime.package import write_package

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(np.array(255.0, np.float32), "c255")]
    nodes = [helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Transpose", ["f"], ["nchw"], perm=[0, 3, 1, 2]),
             helper.make_node("Div", ["nchw", "c255"], ["x0"])]
    cin, x = 3, "x0"
    for i in range(depth):
        stride = 2 if i < 2 else 1
        w = (rng.standard_normal((width, cin, 3, 3)) * (2.0 / (cin * 9)) ** 0.5).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes += [helper.make_node("Conv", [x, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1], strides=[stride, stride]),
                  helper.make_node("Relu", [f"c{i}"], [f"x{i + 1}"])]
        cin, x = width, f"x{i + 1}"
    nodes += [helper.make_node("ReduceMean", [x], ["anomaly_map"], axes=[1], keepdims=1),
              helper.make_node("ReduceMax", ["anomaly_map"], ["score"], axes=[1, 2, 3], keepdims=0)]
    m = size // 4
    graph = helper.make_graph(nodes, "bench-conv",
                              [helper.make_tensor_value_info("image", TensorProto.UINT8, ["batch", size, size, 3])],
                              [helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, ["batch", 1, m, m]),
                               helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edge-ad-bench")
    model.ir_version = 8
    onnx.checker.check_model(model)
    manifest: dict[str, Any] = {
        "schema_version": 2, "edge_ad_version": "0.1.0", "created": "2026-01-01T00:00:00Z",
        "model": {"name": "bench-conv", "family": "test", "untrained": True}, "categories": ["widget"],
        "precision": "fp32", "onnx": {"file": "model.onnx", "opset": 17},
        "input": {"name": "image", "dtype": "uint8", "layout": "NHWC", "height": size, "width": size,
                  "batch": "dynamic", "preprocess": {"resize": [size, size], "crop": [size, size],
                                                     "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                                                     "color_order": "RGB"}},
        "outputs": {"anomaly_map": {"height": m, "width": m}, "score": {}},
        "postprocess": {"min_region_area_px": 16, "mask_blur_sigma": 0.0},
        "thresholds": {"image": {"value": 1e9, "method": "manual"}, "pixel": {"value": 1e9, "method": "manual"},
                       "normalization": {"score_min": 0.0, "score_max": 1.0, "pixel_min": 0.0, "pixel_max": 1.0}},
        "files": {},
    }
    return write_package(out, {"model.onnx": model.SerializeToString()}, manifest)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--package", default=None, help="model package (default: synthetic conv package)")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    ap.add_argument("--roi", default="0,0,640,480", help="camera ROI x,y,w,h (default 0,0,640,480)")
    ap.add_argument("--pixel-format", default="BayerRG8")
    ap.add_argument("--camera-fps", type=float, default=None, help="default: 2x the inference-bound rate")
    ap.add_argument("--iters", type=int, default=200, help="pure-inference iterations")
    ap.add_argument("--seconds", type=float, default=15.0, help="pipeline measurement window")
    ap.add_argument("--warmup", type=float, default=3.0, help="pipeline seconds discarded first")
    ap.add_argument("--json", default=None, help="write the figures here")
    args = ap.parse_args()

    from edge_ad.pipeline import Pipeline
    from edge_ad.runtime.bench import machine_info
    from edge_ad.runtime.detector import Detector
    from edge_ad.sources.aravis import GigESource
    from edge_ad.sources.pixel_formats import mosaic, to_bgr

    fake = shutil.which("arv-fake-gv-camera-0.8")
    if fake is None:
        sys.exit("arv-fake-gv-camera-0.8 not found: apt-get install aravis-tools")
    tmp = Path(tempfile.mkdtemp(prefix="edge-ad-bench-"))
    try:
        pkg = Path(args.package) if args.package else build_conv_package(tmp / "pkg")
        det = Detector.load(pkg, backend=args.backend, threads=args.threads)
        x, y, w, h = (int(v) for v in args.roi.split(","))
        rng = np.random.default_rng(0)
        image = to_bgr(mosaic(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "BayerRG8"), w, h, "BayerRG8")

        # 1) inference-bound rate: the full Detector path, one image per call, as `edge-ad bench` runs it
        for _ in range(10):
            det.predict(image)
        t0 = time.perf_counter()
        for _ in range(args.iters):
            det.predict(image)
        infer_fps = args.iters / (time.perf_counter() - t0)
        crop = det.preprocess.apply(image)[None]
        t0 = time.perf_counter()
        for _ in range(args.iters):
            det.backend.run(crop)
        engine_fps = args.iters / (time.perf_counter() - t0)  # backend alone: the upper bound of any pipeline
        camera_fps = args.camera_fps or min(1000.0, 2.0 * infer_fps)

        # 2) the pipeline from the fake GigE camera, running faster than the model
        proc = subprocess.Popen([fake, "-i", "127.0.0.1", "-s", SERIAL], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            time.sleep(1.0)
            src = GigESource(f"{SERIAL}@127.0.0.1", roi=(x, y, w, h), pixel_format=args.pixel_format,
                             frame_rate=camera_fps, packet_size=8000)
            pipe = Pipeline(det, src, policy="latest", output=False)
            pipe.start()
            time.sleep(args.warmup)
            s0, t0 = pipe.stats.snapshot(), time.monotonic()
            time.sleep(args.seconds)
            s1, t1 = pipe.stats.snapshot(), time.monotonic()
            pipe.stop()
            pipe.join()
            final = pipe.stats.snapshot()
        finally:
            proc.kill()
            proc.wait()
        dt = t1 - t0
        pipe_fps = (s1["results_out"] - s0["results_out"]) / dt
        cam_in_fps = (s1["frames_in"] - s0["frames_in"]) / dt
        report = {
            "model": det.package.name, "backend": det.backend.name, "providers": list(det.backend.providers),
            "camera": {"roi": [x, y, w, h], "pixel_format": args.pixel_format, "fps_set": round(camera_fps, 1),
                       "fps_received": round(cam_in_fps, 1)},
            "inference_bound_fps": round(infer_fps, 2), "pipeline_fps": round(pipe_fps, 2),
            "ratio": round(pipe_fps / infer_fps, 4), "engine_only_fps": round(engine_fps, 2),
            "ratio_vs_engine_only": round(pipe_fps / engine_fps, 4), "window_s": round(dt, 2),
            "latency_p50_ms": s1["latency_p50_ms"], "latency_p99_ms": s1["latency_p99_ms"],
            "final_counters": final, "accounted": final["frames_in"] == final["results_out"] + final["dropped"],
            "machine": machine_info(),
        }
        print(f"inference-bound (Detector.predict loop): {infer_fps:.1f} fps")
        print(f"engine only (backend.run loop, no pre/post): {engine_fps:.1f} fps")
        print(f"camera: set {camera_fps:.0f} fps, received {cam_in_fps:.1f} fps ({w}x{h} {args.pixel_format})")
        print(f"pipeline (policy latest): {pipe_fps:.1f} fps = {100 * pipe_fps / infer_fps:.1f}% of inference-bound; "
              f"latency p50 {s1['latency_p50_ms']} ms p99 {s1['latency_p99_ms']} ms; dropped {final['dropped']}, "
              f"accounted {report['accounted']}; {100 * pipe_fps / engine_fps:.1f}% of engine-only")
        if args.json:
            out = Path(args.json)
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp_json = out.with_name(f".{out.name}.tmp")
            tmp_json.write_text(json.dumps(report, indent=2) + "\n")
            tmp_json.replace(out)
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
