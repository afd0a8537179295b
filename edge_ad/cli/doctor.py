"""`edge-ad doctor [--json]`: report Python, Jetson/JetPack, CUDA, GPU, TensorRT, ONNX Runtime, camera and PLC libs."""

from __future__ import annotations

import argparse

from edge_ad.cli.common import add_json, human_out, write_json_output

HELP = "check this machine: Jetson/JetPack, CUDA, TensorRT, ONNX Runtime, camera and PLC libraries"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_json(p, "the report")


def run(args: argparse.Namespace) -> int:
    from edge_ad.runtime.doctor import format_report, run_doctor

    report = run_doctor()
    print(format_report(report), file=human_out(args))
    write_json_output(args.json, report.to_dict())
    return 0
