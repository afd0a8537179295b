"""`edge-ad export`: a trained run (or untrained weights, for speed tests) -> a verified model package,
optionally converted to fp16 or int8 behind an accuracy gate."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge_ad.cli.common import add_json, human_out, write_json_output

HELP = "export a model to a self-describing package (ONNX + manifest), verified against PyTorch; fp32/fp16/int8"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="registered model name, e.g. dinomaly-s (default: the run's)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--run", help="run directory from `edge-ad train` (weights, thresholds, data)")
    src.add_argument("--checkpoint", help="a model.safetensors file (thresholds.json must lie beside it)")
    src.add_argument("--from-package", dest="from_package", help="convert this existing fp32 package (fp16/bf16/int8)")
    p.add_argument("--out", help="package directory (default packages/<model>[-<precision>])")
    p.add_argument("--data", help="dataset for parity images, calibration and the gate (default: the run's)")
    p.add_argument("--profile", help="export profile YAML (default export/<model>.yaml)")
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16", "int8"], default="fp32",
                   help="numeric precision (bf16: the fp32 graph run in bf16 by OpenVINO on AVX512-BF16/AMX CPUs, "
                        "gated there)")
    p.add_argument("--calib", help="int8: calibration set manifest (default calibration/<model>.yaml)")
    p.add_argument("--method", choices=["entropy", "percentile", "minmax"], help="int8: calibration method")
    p.add_argument("--exclude", action="append", help="int8: node-name regex or op type kept in float (repeatable)")
    p.add_argument("--scales", help="int8: reuse this scales JSON (skips calibration; reproducible builds)")
    p.add_argument("--scales-out", dest="scales_out", help="int8: where to write the computed scales JSON")
    p.add_argument("--max-drop", dest="max_drop", type=float, default=0.005,
                   help="gate: largest allowed image-AUROC drop per category (default 0.005)")
    p.add_argument("--min-agreement", dest="min_agreement", type=float, default=0.99,
                   help="gate: smallest allowed OK/NG agreement with fp32 (default 0.99)")
    p.add_argument("--max-pixel-drop", dest="max_pixel_drop", type=float,
                   help="gate: largest allowed pixel-AUROC/AUPRO drop (default: not enforced)")
    p.add_argument("--force", action="store_true", help="replace an existing package directory")
    add_json(p, "the export summary")


def run(args: argparse.Namespace) -> int:
    import tempfile

    from edge_ad.errors import ConfigError

    if args.precision == "fp32":
        if args.from_package:
            raise ConfigError("export: --from-package converts an fp32 package; use it with --precision fp16|bf16|int8")
        summary = _export_fp32(args, args.out)
        write_json_output(args.json, summary)
        return 0

    from edge_ad.export.precision import convert_package

    int8_opts = dict(calib=args.calib, method=args.method, exclude=args.exclude, scales=args.scales,
                     scales_out=args.scales_out) if args.precision == "int8" else {}
    with tempfile.TemporaryDirectory(prefix="edge-ad-fp32-") as tmp:
        if args.from_package:
            fp32 = Path(args.from_package)
        else:
            print("== fp32 reference package", file=sys.stderr)
            fp32 = Path(_export_fp32(args, Path(tmp) / "fp32", reference=True)["package"])
        from edge_ad.runtime.package import load_package

        name = load_package(fp32).name
        out = Path(args.out) if args.out else Path("packages") / f"{name}-{args.precision}"
        print(f"== {args.precision}: convert, re-derive thresholds, gate against fp32", file=sys.stderr)
        pkg, s = convert_package(fp32, args.precision, out, data=args.data, max_drop=args.max_drop,
                                 min_agreement=args.min_agreement, max_pixel_drop=args.max_pixel_drop,
                                 force=args.force, **int8_opts)
    from edge_ad.export.gemm_share import format_gemm_share

    human = human_out(args)
    print(s["table"], file=human)
    print(format_gemm_share(s["gemm_precision"]), file=human)
    print(f"package: {pkg}  (gate passed; next: edge-ad build {pkg} on the device)", file=human)
    write_json_output(args.json, {k: v for k, v in s.items() if k != "table"})
    return 0


def _export_fp32(args: argparse.Namespace, out: str | Path | None, reference: bool = False) -> dict:
    """Export the fp32 package and print its summary; `reference`: a temporary package for the gate only."""
    from edge_ad.evaluate.report import format_table
    from edge_ad.export.exporter import export_package

    pkg, s = export_package(model_name=args.model, run=args.run, checkpoint=args.checkpoint, out=out,
                            data=args.data, profile_path=args.profile, force=args.force)
    par = s["parity"]
    rows = [[s["model"], s["precision"], f"{s['onnx_mb']:.1f}", str(s["opset"]), str(s["nodes"]), s["input"],
             f"{par['max_abs_map_diff']:.2e}", f"{par['score_spearman']:.4f}", f"{s['seconds']:.1f}"]]
    human = sys.stderr if reference else human_out(args)
    print(format_table(rows, ["model", "precision", "MB", "opset", "nodes", "input", "max|Δmap|", "Spearman", "s"]),
          file=human)
    print(f"outputs: {s['outputs']}", file=human)
    if s["untrained"]:
        print("WARNING: UNTRAINED package (random weights): use it to measure speed only.", file=sys.stderr)
    if not reference:
        print(f"package: {pkg}  (next: edge-ad predict {pkg} IMAGE...  |  edge-ad bench {pkg})", file=human)
    return s
