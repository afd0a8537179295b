"""`edge-ad build PACKAGE`: build (or reuse) the TensorRT engine for this device and cache it in the package."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge_ad.cli.common import add_gpu, add_json, add_trusted_key, human_out, write_json_output

HELP = "build the TensorRT engine of a model package on this device (cached in PACKAGE/engines/)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("package", type=Path, help="model package directory")
    p.add_argument("--precision", choices=["fp32", "fp16", "int8"], default=None,
                   help="graph to build (default: the package's precision)")
    p.add_argument("--batch", type=int, default=None, help="engine batch for packages with a dynamic batch (default 1)")
    p.add_argument("--workspace", type=int, default=None, metavar="MB", help="builder workspace limit in MiB")
    p.add_argument("--timing-cache", type=Path, default=None, metavar="PATH",
                   help="timing cache file (default: a per-device file in PACKAGE/engines/)")
    p.add_argument("--dla", type=int, default=None, metavar="N", help="build for DLA core N (GPU fallback on)")
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
    rec = ensure_engine(pkg, args.precision, device=args.gpu, batch=args.batch, workspace_mb=args.workspace,
                        timing_cache=args.timing_cache, dla_core=args.dla, fp16_fallback=args.fp16_fallback,
                        force=args.force)
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
