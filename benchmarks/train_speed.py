"""Training speed: optimiser steps per second and peak memory of edge-ad's training step, per precision.

    .venv/bin/python benchmarks/train_speed.py --model dinomaly-s --batch 8 --iters 10 --amp off,bf16
    .venv/bin/python benchmarks/train_speed.py --model dinomaly-s --device cuda --amp off,bf16 \\
        --official-dinomaly /path/to/Dinomaly        # anchor: the official ViTill step on the same machine

Each configuration runs in a fresh child process (so peak RSS is its own): the model of `--model` (random init,
speed does not depend on the weights), its paper optimiser/schedule (`default_train_config`), the trainer's
`PrecisionStep` (autocast, channels-last, loss scaling for fp16) and random normalised images of the model's input
size; data loading is not timed. Reported: it/s and images/s over `--iters` steps after `--warmup`, peak RSS (CPU)
or peak allocated GPU memory (CUDA). With `--official-dinomaly`, the official code's ViTill (ViT-S/14 + 4
registers, bMlp bottleneck, 8 LinearAttention2 blocks) runs the same loop with its `global_cosine_hm_percent` loss
and `StableAdamW` (FP32, as the official training script).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

_CHILD = r"""
import json, logging, resource, sys, time
import torch
logging.disable(logging.WARNING)
model_name, device_s, amp, cl, batch, iters, warmup, threads, official = sys.argv[1:10]
batch, iters, warmup, threads = int(batch), int(iters), int(warmup), int(threads)
if threads:
    torch.set_num_threads(threads)
device = torch.device(device_s)
torch.manual_seed(0)
from edge_ad.train.amp import PrecisionStep, resolve_precision

if official:
    sys.path.insert(0, official)
    import math, re, types
    from functools import partial
    from torch import nn
    import torch.nn.functional as F
    from dinov2.models import vision_transformer as v2
    from models.uad import ViTill
    from models.vision_transformer import Block, LinearAttention2, bMlp
    src = open(f"{official}/utils.py").read()
    ns = dict(torch=torch, F=F, math=math, partial=partial)
    for name in ("modify_grad", "global_cosine_hm_percent"):
        exec(re.search(rf"^def {name}\(.*?(?=^def |\Z)", src, re.S | re.M).group(0), ns)
    enc = v2.vit_small(patch_size=14, img_size=518, block_chunks=0, init_values=1e-8, num_register_tokens=4,
                       interpolate_antialias=False, interpolate_offset=0.1)
    dec = nn.ModuleList([Block(dim=384, num_heads=6, mlp_ratio=4., qkv_bias=True,
                               norm_layer=partial(nn.LayerNorm, eps=1e-8), attn=LinearAttention2) for _ in range(8)])
    model = ViTill(encoder=enc, bottleneck=nn.ModuleList([bMlp(384, 1536, 384, drop=0.2)]), decoder=dec,
                   target_layers=[2, 3, 4, 5, 6, 7, 8, 9], fuse_layer_encoder=[[0, 1, 2, 3], [4, 5, 6, 7]],
                   fuse_layer_decoder=[[0, 1, 2, 3], [4, 5, 6, 7]], mask_neighbor_size=0).to(device)
    trainable = nn.ModuleList([model.bottleneck, model.decoder])
    try:
        from optimizers import StableAdamW
        opt = StableAdamW([{"params": trainable.parameters()}], lr=2e-3, betas=(0.9, 0.999), weight_decay=1e-4,
                          amsgrad=True, eps=1e-10)
    except ImportError:
        opt = torch.optim.AdamW(trainable.parameters(), lr=2e-3, weight_decay=1e-4, amsgrad=True, eps=1e-10)
    params = list(trainable.parameters())
    side, clip = 392, 0.1
    def loss_fn(x, step):
        en, de = model(x)
        return ns["global_cosine_hm_percent"](en, de, p=min(0.9 * step / 1000, 0.9), factor=0.1)
    precision = resolve_precision("off", "off", model, device)
else:
    from edge_ad.models import create_model
    from edge_ad.train.optim import build_optimizer
    from edge_ad.train.options import resolve_config
    model = create_model(model_name, pretrained=False).to(device)
    cfg = resolve_config(model.default_train_config(), None,
                         {"model": model_name, "data": ".", "out": "unused", "batch": batch})
    opt = build_optimizer(cfg["optimizer"], model.param_groups(cfg["weight_decay"]), cfg)
    params = model.trainable_parameters()
    side, clip = model.preprocess.crop[0], cfg["grad_clip"]
    precision = resolve_precision(amp, cl, model, device)
    if precision.channels_last:
        model = model.to(memory_format=torch.channels_last)
    loss_fn = model.training_loss
model.train()
mixed = PrecisionStep(precision, device)
x = mixed.prepare(torch.randn(batch, 3, side, side, device=device))
def step(i):
    with mixed.autocast():
        loss = loss_fn(x, i)
    opt.zero_grad(set_to_none=True)
    mixed.backward_and_step(loss, opt, params, clip)
    return loss
sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
for i in range(warmup):
    step(i)
sync()
if device.type == "cuda":
    torch.cuda.reset_peak_memory_stats(device)
t = time.perf_counter()
for i in range(iters):
    loss = step(warmup + i)
sync()
dt = time.perf_counter() - t
peak = (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
print(json.dumps({"model": "official ViTill (Dinomaly)" if official else model_name, "device": device_s,
                  "amp": precision.amp, "channels_last": precision.channels_last, "batch": batch, "side": side,
                  "it_per_s": iters / dt, "img_per_s": iters * batch / dt, "peak_mb": peak,
                  "peak_kind": "cuda allocated" if device.type == "cuda" else "RSS", "loss": float(loss)}))
"""


def _child(args: argparse.Namespace, amp: str, official: str = "") -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-c", _CHILD, args.model, args.device, amp, args.channels_last, str(args.batch),
           str(args.iters), str(args.warmup), str(args.threads), official]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if r.returncode:
        sys.exit(f"{'official' if official else amp} run failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="dinomaly-s")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", default="off,bf16", help="comma-separated: off, bf16, fp16 (CUDA), auto")
    ap.add_argument("--channels-last", default="auto", choices=("auto", "on", "off"))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--official-dinomaly", default="", help="checkout of github.com/guojiajeremy/Dinomaly: anchor")
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args()
    rows = [_child(args, amp) for amp in args.amp.split(",")]
    if args.official_dinomaly:
        rows.append(_child(args, "off", args.official_dinomaly))
    base = rows[0]["it_per_s"]
    kind = rows[0]["peak_kind"]
    print(f"| model | device | amp | channels-last | batch | it/s | img/s | vs first | peak MB ({kind}) |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['device']} | {r['amp']} | {r['channels_last']} | {r['batch']} | "
              f"{r['it_per_s']:.3f} | {r['img_per_s']:.2f} | {r['it_per_s'] / base:.2f}x | {r['peak_mb']:,.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
