"""`edge-ad selftest [PACKAGE ...]`: the one command to run on a new Jetson (or any TensorRT machine).

Builds the TensorRT engine of each package, compares it with ONNX Runtime on CPU, benchmarks it and runs the
`tensorrt`-marked tests, then writes `selftest.json` and `selftest.md`. Without PACKAGE it exports untrained
dinomaly-tiny packages in fp32, fp16 and int8 itself (needs the lab side); `--prepare DIR` does only that, in the
lab, for a device without torch: copy DIR over and run `edge-ad selftest DIR` there.
Exit status: 0 everything passed, 1 a step failed (see the report), 2 it could not run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from edge_ad.cli.common import add_gpu

HELP = "on the device: build, verify and bench TensorRT engines of fp32/fp16/int8 packages, run the GPU tests"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("packages", nargs="*", type=Path, metavar="PACKAGE",
                   help="package directories, or directories of packages (default: export the tiny demo packages)")
    p.add_argument("--out", type=Path, default=Path("selftest"), help="report directory (default ./selftest)")
    p.add_argument("--prepare", type=Path, default=None, metavar="DIR",
                   help="lab side only: export the self-test packages into DIR and stop (no TensorRT needed)")
    p.add_argument("--models", default="dinomaly-tiny",
                   help="tiny models to export: comma-separated names or 'all' (default dinomaly-tiny)")
    p.add_argument("--runs", type=int, default=50, help="benchmark runs per engine (default 50)")
    p.add_argument("--no-tests", action="store_true", help="skip the tensorrt-marked tests")
    add_gpu(p)


def _prepare(out: Path, models: str) -> list[Path]:
    from edge_ad.errors import ConfigError

    try:
        from edge_ad.export.selftest_packages import prepare_packages, tiny_models
    except ModuleNotFoundError as e:
        raise ConfigError(f"exporting the self-test packages needs the lab side ({e.name} is missing): run "
                          "`edge-ad selftest --prepare DIR` where edge-ad[train] is installed, copy DIR to this "
                          "machine and run `edge-ad selftest DIR`") from e
    names = tiny_models() if models == "all" else [m.strip() for m in models.split(",") if m.strip()]
    return prepare_packages(out, names)


def run(args: argparse.Namespace) -> int:
    from edge_ad.errors import ConfigError

    if args.runs < 1:
        raise ConfigError(f"--runs: expected an integer >= 1, got {args.runs}")
    if args.prepare is not None:
        if args.packages:
            raise ConfigError("--prepare exports packages; it takes no PACKAGE arguments")
        for path in _prepare(args.prepare, args.models):
            print(path)
        print(f"copy {args.prepare} to the device and run: edge-ad selftest {args.prepare}")
        return 0
    from edge_ad.runtime.trt import load_tensorrt
    from edge_ad.runtime.trt.selftest import (
        REPORT_JSON,
        REPORT_MD,
        find_packages,
        run_selftest,
    )

    load_tensorrt()  # fail fast, with the install hint, before exporting or hashing anything
    paths = list(args.packages) or _prepare(args.out / "packages", args.models)
    report = run_selftest(find_packages(paths), args.out, device=args.gpu, runs=args.runs,
                          run_tests=not args.no_tests)
    print((args.out / REPORT_MD).read_text(encoding="utf-8"))
    print(f"report: {args.out / REPORT_JSON}")
    return 0 if report["passed"] else 1
