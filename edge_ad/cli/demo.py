"""`edge-ad demo`: the whole lab-to-line flow on a synthetic dataset, on a CPU, in a few minutes.

The showcase (`overlays.png`) shows what the product does: NG parts with their regions first, then an NG
without regions (the hottest area marked), then good parts passed. A re-run replaces the demo's own output
folder (recognised by its marker file); any other non-empty folder needs --force.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from edge_ad.cli.common import comma_list

MARKER = ".edge-ad-demo"

HELP = "synth -> train dinomaly-tiny -> eval -> export -> predict -> bench, into demo_out/"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="demo_out", help="output directory (default demo_out/)")
    p.add_argument("--model", default="dinomaly-tiny", help="model to train (default dinomaly-tiny, CPU-sized)")
    p.add_argument("--iters", type=int, default=300, help="training iterations (default 300)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument(
        "--per-category", type=int, default=40, dest="per_category", help="synthetic train images per category"
    )
    p.add_argument("--categories", type=comma_list, help="comma-separated synthetic categories (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true",
                   help="replace --out even if it is not a demo folder (a demo folder is always replaced)")


def run(args: argparse.Namespace) -> int:
    import json
    import shutil
    import time
    from pathlib import Path

    import cv2
    import numpy as np

    from edge_ad.data.mvtec import load_samples
    from edge_ad.data.synth import generate
    from edge_ad.errors import ConfigError
    from edge_ad.evaluate.report import format_table
    from edge_ad.evaluate.runner import evaluate_run
    from edge_ad.export.exporter import export_package
    from edge_ad.imageio import read_image
    from edge_ad.runtime import Detector, render_overlay
    from edge_ad.runtime.bench import run_bench
    from edge_ad.train.options import resolve_config
    from edge_ad.train.trainer import train

    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).is_file() and not args.force:
            raise ConfigError(f"{out}: exists, is not empty and is not a demo folder; pass --force to replace it")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text("written by edge-ad demo; a re-run replaces this folder\n")
    times: dict[str, float] = {}
    cats = args.categories or None

    def step(name: str) -> float:
        print(f"\n== {name}", flush=True)
        return time.perf_counter()

    t = step("1/6 synthesise a multi-category dataset")
    data = out / "data"
    generate(data, categories=cats, per_category=args.per_category, seed=args.seed)
    times["synth"] = time.perf_counter() - t

    t = step(f"2/6 train ONE {args.model} for all categories ({args.iters} iterations, random-init encoder)")
    cfg = resolve_config({}, None, {
        "model": args.model, "data": str(data), "out": str(out / "run"), "iters": args.iters, "batch": args.batch,
        "pretrained": False, "seed": args.seed, "workers": 0, "warmup_iters": min(100, args.iters // 10),
        "save_every": 10**9, "log_every": 10,
    })
    run_dir = train(cfg)
    times["train"] = time.perf_counter() - t

    t = step("3/6 evaluate: seven metrics per category")
    report = evaluate_run(run_dir, out_dir=out / "eval", overlays_per_category=3)
    keys = ["image_auroc", "image_ap", "image_f1max", "pixel_auroc", "pixel_ap", "pixel_f1max", "aupro"]
    rows = [[c] + [f"{100 * m[k]:.1f}" for k in keys] for c, m in report["categories"].items()]
    rows.append(["mean"] + [f"{100 * report['mean'][k]:.1f}" for k in keys])
    table = format_table(rows, ["category", "I-AUROC", "I-AP", "I-F1", "P-AUROC", "P-AP", "P-F1", "AUPRO"])
    print(table)
    times["eval"] = time.perf_counter() - t

    t = step("4/6 export the model package (ONNX + manifest), verified against PyTorch")
    pkg, summary = export_package(run=str(run_dir), out=out / "package")
    par = summary["parity"]
    print(f"package {pkg}: max |map diff| {par['max_abs_map_diff']:.2e}, score Spearman {par['score_spearman']:.4f}")
    times["export"] = time.perf_counter() - t

    t = step("5/6 predict with the torch-free runtime (ONNX Runtime)")
    det = Detector.load(pkg, backend="onnxruntime")
    test = load_samples(data, cats, split="test")
    images = [read_image(s.path) for s in test]
    results = det.predict_batch(images, errors="result")
    picks = pick_showcase([(s.label, r) for s, r in zip(test, results)], k=8)
    tiles, lines = [], []
    for i in picks:
        s, res = test[i], results[i]
        tile = cv2.resize(render_overlay(images[i], res), (256, 256))
        caption = np.zeros((22, 256, 3), np.uint8)
        truth = "good" if s.label == 0 else f"defect: {s.defect_type}"
        cv2.putText(caption, f"{s.category} / {truth}", (4, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 255), 1,
                    cv2.LINE_AA)
        tiles.append(np.vstack([tile, caption]))
        lines.append({"file": str(s.path), "truth": s.defect_type, **res.to_dict()})
    while len(tiles) % 4:
        tiles.append(np.zeros_like(tiles[0]))
    grid = np.vstack([np.hstack(tiles[i : i + 4]) for i in range(0, len(tiles), 4)])
    cv2.imwrite(str(out / "overlays.png"), grid)
    (out / "predictions.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    ng = sum(r.status == "NG" for r in results)
    print(f"{len(results)} test images: {ng} NG, {len(results) - ng} OK; showcase of {len(picks)} in overlays.png "
          f"(NG with regions first; normalised score 0.5 = threshold)")
    times["predict"] = time.perf_counter() - t

    t = step("6/6 benchmark the runtime (per-stage latency)")
    bench = run_bench(pkg, backend="onnxruntime", runs=30, warmup=5)
    (out / "bench.json").write_text(json.dumps(bench, indent=2) + "\n")
    print(f"infer p50 {bench['infer_ms']['p50']:.1f} ms, end-to-end p50 {bench['end_to_end_ms']['p50']:.1f} ms, "
          f"{bench['throughput_fps']:.1f} fps ({bench['backend']})")
    times["bench"] = time.perf_counter() - t

    (out / "metrics.md").write_text(table + "\n")
    (out / "timings.json").write_text(json.dumps(times, indent=2) + "\n")
    print(f"\nDone in {sum(times.values()):.0f} s. Look at:")
    looks = [(out / "overlays.png", "runtime overlays (OK/NG, heatmap, regions)"),
             (out / "eval" / "metrics.md", f"metrics per category; overlays in {out / 'eval' / 'overlays'}"),
             (out / "bench.json", "latency per stage"),
             (pkg, "the deployable model package")]
    width = max(len(str(p)) for p, _ in looks)
    for p, what in looks:
        print(f"  {p!s:<{width}}  {what}")
    print("Note: the encoder is RANDOM-INIT (no downloads here), so heatmaps are weak: expected, not a bug.")
    return 0


def pick_showcase(items: Sequence[tuple[int, Any]], k: int = 8) -> list[int]:
    """Indices of up to k (label, Result) pairs to show: NG with regions (highest score first, defects before
    false alarms), then NG without regions, then good parts passed, then the rest."""
    def score(i: int) -> float:
        return float(items[i][1].normalized_score) if items[i][1].error is None else -1.0

    idx = range(len(items))
    with_regions = sorted((i for i in idx if items[i][1].status == "NG" and items[i][1].regions),
                          key=lambda i: (-items[i][0], -score(i)))
    diffuse = sorted(
        (i for i in idx if items[i][1].status == "NG" and not items[i][1].regions), key=lambda i: -score(i)
    )
    passed = sorted((i for i in idx if items[i][1].status == "OK" and items[i][0] == 0), key=score)
    quota = [(with_regions, max(1, k // 2)), (diffuse, max(1, k // 8)), (passed, max(1, k // 4))]
    chosen: list[int] = []
    for group, n in quota:
        chosen += [i for i in group if i not in chosen][:n]
    rest = [i for i in (*with_regions, *diffuse, *passed, *idx) if i not in chosen]
    return (chosen + list(dict.fromkeys(rest)))[:k]
