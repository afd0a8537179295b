"""`edge-ad build PACKAGE`: build (or reuse) the TensorRT engine for this device and cache it in the package."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge_ad.cli.common import (
    add_engine_options,
    add_gpu,
    add_json,
    add_trusted_key,
    engine_options,
    human_out,
    write_json_output,
)

HELP = ("build the TensorRT engine of a model package on this device (cached in PACKAGE/engines/; its options become "
        "this device's default for run/serve/verify/bench)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("package", type=Path, help="model package directory")
    p.add_argument("--precision", choices=["fp32", "fp16", "int8"], default=None,
                   help="graph to build (default: the package's precision)")
    p.add_argument("--batch", type=int, default=None,
                   help="engine batch for packages with a dynamic batch (default 1, or the tiles of one frame)")
    p.add_argument("--timing-cache", type=Path, default=None, metavar="PATH",
                   help="timing cache file (default: a per-device file in PACKAGE/engines/)")
    add_engine_options(p)
    p.add_argument("--fp16-fallback", action="store_true",
                   help="TensorRT 10 only: fp16 engine from the fp32 graph with weak typing (BuilderFlag.FP16)")
    add_gpu(p)
    add_json(p, "the engine record (path, key, size, build time)")
    add_trusted_key(p)
    p.add_argument("--force", action="store_true", help="rebuild even if a valid cached engine exists")


def run(args: argparse.Namespace) -> int:
    from edge_ad.runtime.package import load_package
    from edge_ad.runtime.trt import load_tensorrt
    from edge_ad.runtime.trt.build import ensure_engine

    load_tensorrt()  # fail fast with the install hint, before hashing a large package
    pkg = load_package(args.package, trusted_keys=args.trusted_keys)
    opts = engine_options(args, precision=args.precision, batch=args.batch, fp16_fallback=args.fp16_fallback)
    # what is built here becomes this device's default: a later run/serve/verify/bench with no engine options uses it
    rec = ensure_engine(pkg, device=args.gpu, timing_cache=args.timing_cache, force=args.force, record_default=True,
                        **opts.kwargs())
    rows = [
        ("engine", str(rec.path) if rec.path else "(not cached: package directory not writable)"),
        ("key", rec.key.describe()),
        ("onnx", str(rec.onnx_path)),
        ("size", f"{len(rec.plan) / 2**20:.1f} MiB"),
        ("build", f"{rec.build_seconds:.1f} s" if rec.built and rec.build_seconds is not None else "cached (reused)"),
    ]
    width = max(len(k) for k, _ in rows)
    out = human_out(args)
    for k, v in rows:
        print(f"{k:<{width}}  {v}", file=out)
    write_json_output(args.json, {"engine": str(rec.path) if rec.path else None, "key": rec.key.describe(),
                                  "onnx": str(rec.onnx_path), "bytes": len(rec.plan), "built": rec.built,
                                  "build_seconds": rec.build_seconds})
    return 0
