"""`edge-ad verify PACKAGE [--backend tensorrt|openvino]`: compare an engine with ONNX Runtime (CPU) on sample images.

Besides the anomaly maps and scores (a tolerance per precision, relative to the manifest's normalisation ranges), this
checks what the line acts on: the OK/NG decision at the deployed threshold (borderline images reported, not failed)
and the order of images whose scores are clearly apart; see `edge_ad.runtime.verify` for why none of it flaps.
Exit status: 0 within tolerance, 1 beyond it, 2 on errors (e.g. tensorrt or openvino not installed).
"""

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

HELP = ("compare the TensorRT engine (or OpenVINO) with ONNX Runtime CPU on sample images (score deltas, map diff, "
        "OK/NG)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("package", type=Path, help="model package directory")
    p.add_argument("--backend", choices=["tensorrt", "openvino"], default="tensorrt",
                   help="the engine to check against ONNX Runtime CPU (default tensorrt)")
    p.add_argument("--images", type=Path, default=None, metavar="DIR",
                   help="folder of sample images (default: synthetic noise images)")
    p.add_argument("--limit", type=int, default=8, metavar="N", help="number of images (default 8)")
    p.add_argument("--precision", choices=["fp32", "fp16", "int8"], default=None,
                   help="TensorRT: engine to verify (default: the one `edge-ad build` recorded for this "
                        "device, else the package's precision)")
    p.add_argument("--fp16-fallback", action="store_true", help="verify the weakly typed fp16 engine (TensorRT 10)")
    add_engine_options(p)
    p.add_argument("--tol", type=float, default=None,
                   help="max score/map difference as a fraction of the normalisation range "
                        "(default fp32 0.01, fp16/bf16 0.05, int8 0.10)")
    add_gpu(p)
    add_json(p, "the comparison (per-image scores, deltas, tolerances, failures)")
    add_trusted_key(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic images")


def run(args: argparse.Namespace) -> int:
    from edge_ad.runtime.package import load_package

    pkg = load_package(args.package, trusted_keys=args.trusted_keys)
    if args.backend == "openvino":
        from edge_ad.errors import ConfigError
        from edge_ad.runtime.verify import verify_openvino

        if args.precision or args.fp16_fallback or not engine_options(args).is_unset():
            raise ConfigError("--precision/--fp16-fallback/--workspace/--dla/--tf32 choose a TensorRT engine; "
                              "OpenVINO verifies the package's own precision")

        r = verify_openvino(pkg, images=args.images, n=args.limit, seed=args.seed, tol=args.tol)
    else:
        from edge_ad.runtime.trt import load_tensorrt
        from edge_ad.runtime.trt.engine_check import verify_engine

        load_tensorrt()
        r = verify_engine(pkg, args.precision, images=args.images, n=args.limit, seed=args.seed, tol=args.tol,
                          device=args.gpu, fp16_fallback=args.fp16_fallback, engine=engine_options(args))
    threshold, name = r["threshold"], r["backend"]
    out = human_out(args)
    write_json_output(args.json, r)
    print(f"engine: {r['engine']}", file=out)
    print(f"reference: {r['reference']}; image threshold {threshold:.6g}", file=out)
    name_w = max(len(i["name"]) for i in r["images"])
    print(f"{'image':<{name_w}}  {'onnxruntime':>12}  {name:>12}  {'delta':>10}  decision", file=out)
    for i in r["images"]:
        ref, got = i["onnxruntime"], i[name]
        verdict = ("NG" if ref > threshold else "OK") + (
            "" if i["agree"] else f" vs {'NG' if got > threshold else 'OK'}"
        ) + (" (borderline)" if i["borderline"] else "")
        print(f"{i['name']:<{name_w}}  {ref:>12.6g}  {got:>12.6g}  {abs(got - ref):>10.3g}  {verdict}", file=out)
    rho = "n/a" if r["spearman"] is None else f"{r['spearman']:.4f}"
    agree = sum(i["agree"] for i in r["images"])
    print(f"max |score delta| {r['max_score_delta']:.4g} (tol {r['score_tol']:.4g}), max |map diff| "
          f"{r['max_map_diff']:.4g} (tol {r['map_tol']:.4g}), OK/NG agreement {agree}/{len(r['images'])}, "
          f"order kept in {r['separated_pairs'] - r['swapped_pairs']}/{r['separated_pairs']} separated pair(s), "
          f"Spearman {rho} (information)", file=out)
    if r["failures"]:
        print("FAIL: " + "; ".join(r["failures"]), file=out)
        return 1
    print("PASS", file=out)
    return 0
