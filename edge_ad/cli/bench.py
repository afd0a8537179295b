"""`edge-ad bench PACKAGE`: latency per stage (p50/p90/p99) and throughput of a package on this machine.

Each iteration runs one batch through the full Detector path (preprocess, inference, postprocess to source
resolution with regions), so the numbers are what the line sees, not just the engine. Stage times are per batch.
"""

from __future__ import annotations

import argparse

from edge_ad.cli.common import (
    add_engine_options,
    add_json,
    add_trusted_key,
    engine_options,
    human_out,
    image_size,
    write_json_output,
)
from edge_ad.runtime.backends import BACKENDS
from edge_ad.runtime.trt.engine_options import EngineOptions

HELP = "measure per-stage latency percentiles and throughput of a model package"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("package", help="model package directory (or its manifest.json)")
    p.add_argument("--backend", default="auto", choices=list(BACKENDS),
                   help="inference engine (auto: TensorRT on an NVIDIA GPU, else OpenVINO if installed, else ONNX "
                        "Runtime)")
    p.add_argument("--batch", type=int, default=1, help="images per call (default 1)")
    p.add_argument("--views", type=int, default=1, metavar="N",
                   help="also time a part seen by N cameras sharing this package: one batched call for the N frames "
                        "against one call per view, interleaved (default 1: off)")
    p.add_argument("--runs", type=int, default=100, help="measured runs (default 100)")
    p.add_argument("--warmup", type=int, default=10, help="unmeasured runs first (default 10)")
    p.add_argument("--image", default=None,
                   help="image to use; recommended: a real good part (default: uniform noise at --size, a worst case "
                        "for postprocessing when the map crosses the pixel threshold everywhere)")
    p.add_argument("--size", default=None, metavar="WxH",
                   help="synthetic image size, e.g. 1920x1200 (default: the package's resize size)")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: physical cores)")
    add_engine_options(p)
    add_json(p, "the latency percentiles and throughput")
    add_trusted_key(p)


def _engine(args: argparse.Namespace) -> EngineOptions | None:
    opts = engine_options(args)
    return None if opts.is_unset() else opts


def run(args: argparse.Namespace) -> int:
    from edge_ad.runtime.bench import run_bench

    report = run_bench(args.package, backend=args.backend, batch=args.batch, runs=args.runs, warmup=args.warmup,
                       image=args.image, size_hw=image_size(args.size) if args.size else None, threads=args.threads,
                       trusted_keys=args.trusted_keys, engine=_engine(args), views=args.views)
    out = human_out(args)
    print(f"{report['model']} ({report['precision']}) on {report['backend']} {report['providers']}, "
          f"batch {report['batch']}, {report['runs']} runs, {report['source']}", file=out)
    print(f"{'stage':12s} {'p50 ms':>9s} {'p90 ms':>9s} {'p99 ms':>9s}", file=out)
    for key in ("align_ms", "preprocess_ms", "infer_ms", "stitch_ms", "postprocess_ms", "end_to_end_ms"):
        s = report[key]
        if s is not None:
            print(f"{key[:-3]:12s} {s['p50']:9.3f} {s['p90']:9.3f} {s['p99']:9.3f}", file=out)
    tiles = report["tiles_per_frame"]
    e2e = report["end_to_end_ms"]["p50"] / report["batch"]
    print(f"throughput   {report['throughput_fps']:.1f} frames/s; {tiles} tile(s) per frame, "
          f"{e2e / tiles:.2f} ms per tile (p50)", file=out)
    mv = report["views"]
    if mv is not None:
        print(f"{mv['views']} views per part: one call {mv['batched_part_ms']['p50']:.2f} ms "
              f"({mv['batched_parts_per_s']:.1f} parts/s), one call per view {mv['per_view_part_ms']['p50']:.2f} ms "
              f"({mv['per_view_parts_per_s']:.1f} parts/s): batched {mv['speedup']:.2f}x", file=out)
    write_json_output(args.json, report)
    return 0
