"""`edge-ad doctor [--json]`: report Python, Jetson/JetPack, CUDA, GPU, TensorRT, ONNX Runtime, camera and PLC libs."""

from __future__ import annotations

import argparse
import json

HELP = "check this machine: Jetson/JetPack, CUDA, TensorRT, ONNX Runtime, camera and PLC libraries"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    from edge_ad.runtime.doctor import format_report, run_doctor

    report = run_doctor()
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        print(format_report(report))
    return 0
