"""One short GPU run for docs/performance.md: training speed and torch inference latency of the four families.

Made for a borrowed GPU machine (H100/H200 with torch and CUDA, no TensorRT): one command, under 10 minutes, every
figure in one JSON file and one markdown table, each row in its own child process (its own peak memory; a crash or a
time-out costs one row, not the run):

    .venv/bin/python benchmarks/gpu_suite.py --device cuda --json gpu_suite.json
    .venv/bin/python benchmarks/gpu_suite.py --device cpu --models dinomaly-tiny,ulsad-tiny --quick   # the CPU check

Training: `benchmarks/train_speed.py` (the trainer's step with its paper optimiser, random init, random images) per
model for fp32 and bf16 autocast (plus the official Dinomaly step with `--official-dinomaly PATH`). Inference: the
model's eval forward (map and score, as exported) under `torch.inference_mode`, fp32 and bf16/fp16 autocast, batch 1
and 12 (the tiles of a 1600x1200 frame), timed with CUDA synchronisation; `--compile` adds torch.compile rows.
Random-init weights throughout: speed does not depend on the weight values.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = "dinomaly-s,dinomaly-b,mambaad,dualad-he,ulsad"

_INFER_CHILD = r"""
import json, logging, sys, time
import torch
logging.disable(logging.WARNING)
model_name, device_s, amp, batch, iters, warmup, compile_ = sys.argv[1:8]
batch, iters, warmup = int(batch), int(iters), int(warmup)
device = torch.device(device_s)
torch.manual_seed(0)
from edge_ad.models.registry import create_model
model = create_model(model_name, pretrained=False).to(device).eval()
side_h, side_w = model.preprocess.crop
fn = torch.compile(model) if compile_ == "on" else model
x = torch.randn(batch, 3, side_h, side_w, device=device)
dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
def run():
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        return fn(x)
for _ in range(warmup):
    run()
sync()
if device.type == "cuda":
    torch.cuda.reset_peak_memory_stats(device)
times = []
for _ in range(iters):
    t = time.perf_counter()
    maps, scores = run()
    sync()
    times.append(1e3 * (time.perf_counter() - t))
times.sort()
ok = bool(torch.isfinite(maps.float()).all() and torch.isfinite(scores.float()).all())
peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
print(json.dumps({"model": model_name, "device": device_s, "amp": amp, "compile": compile_ == "on", "batch": batch,
                  "side": [side_h, side_w], "p50_ms": times[len(times) // 2], "min_ms": times[0],
                  "ms_per_image": times[len(times) // 2] / batch, "peak_mb": peak, "finite": ok}))
"""


def _run(cmd: list[str], timeout_s: float, stdout_json: bool = True) -> dict[str, Any]:
    """Last JSON line of a child (or {} when it writes its own file), or {"error": ...} (a failure or time-out
    costs this row only)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=max(timeout_s, 1.0), check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.0f} s"}
    lines = [ln for ln in r.stdout.strip().splitlines() if ln.startswith(("{", "["))]
    if not r.returncode and not stdout_json:
        return {}
    if r.returncode or not lines:
        return {"error": f"exit {r.returncode}: {(r.stderr or r.stdout).strip().splitlines()[-1:] or ['?']}"}
    parsed: Any = json.loads(lines[-1])
    return parsed if isinstance(parsed, dict) else {"rows": parsed}


def train_rows(model: str, args: argparse.Namespace, budget_s: float) -> list[dict[str, Any]]:
    """train_speed.py for one model (fp32 + the reduced precision), its rows tagged with the model."""
    out = Path(args.workdir) / f"train_{model}.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "train_speed.py"), "--model", model, "--device", args.device,
           "--amp", f"off,{args.amp}", "--batch", str(args.train_batch), "--iters", str(args.train_iters),
           "--warmup", "1", "--json", str(out)]
    if args.official_dinomaly and model.startswith("dinomaly-s"):
        cmd += ["--official-dinomaly", args.official_dinomaly]
    r = _run(cmd, budget_s, stdout_json=False)
    if "error" in r or not out.is_file():
        return [{"stage": "train", "model": model, "error": r.get("error", "no output")}]
    return [{"stage": "train", **row} for row in json.loads(out.read_text())]


def infer_row(model: str, amp: str, batch: int, compile_: bool, args: argparse.Namespace,
              budget_s: float) -> dict[str, Any]:
    cmd = [sys.executable, "-c", _INFER_CHILD, model, args.device, amp, str(batch), str(args.infer_iters),
           str(args.infer_warmup), "on" if compile_ else "off"]
    r = _run(cmd, budget_s)
    return {"stage": "infer", "model": model, "amp": amp, "batch": batch, "compile": compile_, **r}


def table(rows: list[dict[str, Any]]) -> str:
    """The markdown tables docs/performance.md takes."""
    out = ["| train | amp | batch | it/s | img/s | peak MB |", "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        if r["stage"] == "train":
            out.append(f"| {r['model']} | {r.get('amp', '-')} | {r.get('batch', '-')} | "
                       + (f"{r['it_per_s']:.2f} | {r['img_per_s']:.1f} | {r['peak_mb']:,.0f} |" if "error" not in r
                          else f"{r['error']} | | |"))
    out += ["", "| inference | amp | compile | batch | p50 ms | ms/image | peak MB |",
            "|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        if r["stage"] == "infer":
            peak = "-" if r.get("peak_mb") is None else f"{r['peak_mb']:,.0f}"
            out.append(f"| {r['model']} | {r['amp']} | {'yes' if r['compile'] else 'no'} | {r['batch']} | "
                       + (f"{r['p50_ms']:.2f} | {r['ms_per_image']:.2f} | {peak} |" if "error" not in r
                          else f"{r['error']} | | |"))
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda (the point of this script) or cpu (to check it)")
    ap.add_argument("--models", default=DEFAULT_MODELS, help=f"comma-separated (default {DEFAULT_MODELS})")
    ap.add_argument("--amp", default="bf16", choices=("bf16", "fp16"), help="the reduced precision measured")
    ap.add_argument("--compile", action="store_true", help="also torch.compile rows (adds compile time per row)")
    ap.add_argument("--tiles", type=int, default=12, help="the many-tile batch (default 12: a 1600x1200 frame)")
    ap.add_argument("--train-batch", type=int, default=8)
    ap.add_argument("--train-iters", type=int, default=10)
    ap.add_argument("--infer-iters", type=int, default=30)
    ap.add_argument("--infer-warmup", type=int, default=5)
    ap.add_argument("--no-train", action="store_true", help="inference rows only")
    ap.add_argument("--official-dinomaly", default="", help="checkout of the official Dinomaly: the training anchor")
    ap.add_argument("--budget-s", type=float, default=540.0, help="stop starting rows after this (default 9 min)")
    ap.add_argument("--quick", action="store_true", help="2 iterations everywhere (checking the script, no figures)")
    ap.add_argument("--workdir", default=".gpu_suite", help="per-row outputs")
    ap.add_argument("--json", help="write every row here")
    args = ap.parse_args()
    if args.quick:
        args.train_iters, args.infer_iters, args.infer_warmup, args.train_batch = 2, 2, 1, 2
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + args.budget_s
    models = [m for m in args.models.split(",") if m]
    plan: list[tuple[str, Any]] = []
    for m in models:
        if not args.no_train:
            plan.append(("train", m))
        for amp in ("off", args.amp):
            for batch in (1, args.tiles):
                plan.append(("infer", (m, amp, batch, False)))
                if args.compile:
                    plan.append(("infer", (m, amp, batch, True)))
    rows: list[dict[str, Any]] = []
    for i, (stage, what) in enumerate(plan):
        left = deadline - time.monotonic()
        if left <= 0:
            rows.append({"stage": "skipped", "rows_not_run": len(plan) - i, "reason": f"--budget-s {args.budget_s}"})
            break
        print(f"[{i + 1}/{len(plan)}] {stage} {what} ({left:.0f} s left)", file=sys.stderr, flush=True)
        rows.extend(train_rows(what, args, left) if stage == "train" else [infer_row(*what, args, left)])
    import torch  # the facts of the machine, from the same torch the children used

    facts = {"device": args.device, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
             "torch": torch.__version__, "cuda": torch.version.cuda, "cpu": platform.processor() or platform.machine(),
             "quick": args.quick, "random_init": True}
    report = {"facts": facts, "rows": rows}
    print(json.dumps(facts))
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    failed = [r for r in rows if "error" in r]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
