"""Side-by-side check of edge-ad's Dinomaly against the official code (github.com/guojiajeremy/Dinomaly).

    git clone https://github.com/guojiajeremy/Dinomaly /path/to/Dinomaly
    pip install --target /path/to/deps pandas   # the official utils.py imports it
    python benchmarks/sbs_dinomaly_official.py --official /path/to/Dinomaly --deps /path/to/deps

Builds the official ViT-S encoder + ViTill (random weights, LayerScale gammas made non-trivial), converts its
encoder checkpoint through edge-ad's official-checkpoint loader, copies the bottleneck/decoder weights, and
compares the encoder/decoder feature groups, the blurred 256 map and top-1% score of the official evaluation
(cal_anomaly_maps -> resize 256 -> get_gaussian_kernel), the hard-mining loss at p=0.45 and its gradients.
The official utils.py imports matplotlib/pandas; only the four functions used are loaded from it.

Then the whole evaluation path from image files to metrics: the official `MVTecDataset` + `get_data_transforms(448,
392)` and `evaluation_batch(max_ratio=0.01, resize_mask=256)` (utils.py imported whole; matplotlib is a STAND-IN,
np.bool and DataFrame.append are restored for NumPy >= 1.24 / pandas 2) against edge-ad's `--protocol official`
evaluation of the same weights on the same files (benchmarks/sbs_common.py).
"""
import argparse
import importlib.machinery
import re
import sys
import tempfile
import types
from functools import partial
from pathlib import Path

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--official", required=True, help="checkout of the official Dinomaly repository")
ap.add_argument("--deps", required=True, help="folder with pandas (pip install --target)")
args = ap.parse_args()
sys.path.insert(0, args.official)
sys.path.append(args.deps)

import logging
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

torch.manual_seed(0)
from dinov2.models import vision_transformer as v2
from models.uad import ViTill
from models.vision_transformer import Block as VitBlock
from models.vision_transformer import LinearAttention2, bMlp

_src = open(f"{args.official}/utils.py").read()
off_utils = types.ModuleType("off_utils")
off_utils.__dict__.update(torch=torch, F=F, math=math, partial=partial)
for _name in ("modify_grad", "global_cosine_hm_percent", "cal_anomaly_maps", "get_gaussian_kernel"):
    exec(re.search(rf"^def {_name}\(.*?(?=^def |\Z)", _src, re.S | re.M).group(0), off_utils.__dict__)
cal_anomaly_maps, get_gaussian_kernel = off_utils.cal_anomaly_maps, off_utils.get_gaussian_kernel
global_cosine_hm_percent = off_utils.global_cosine_hm_percent
CKPT = tempfile.mkdtemp() + "/dinov2_vits14_reg4_random.pth"

enc = v2.vit_small(patch_size=14, img_size=518, block_chunks=0, init_values=1e-8, num_register_tokens=4,
                   interpolate_antialias=False, interpolate_offset=0.1)
# random but non-trivial weights (LayerScale 1e-8 would hide the blocks)
with torch.no_grad():
    for n, p in enc.named_parameters():
        if n.endswith("ls1.gamma") or n.endswith("ls2.gamma"):
            p.uniform_(0.05, 0.3)
        elif "pos_embed" in n or "cls_token" in n or "register_tokens" in n or "mask_token" in n:
            p.normal_(0, 0.5)
bott = nn.ModuleList([bMlp(384, 1536, 384, drop=0.2)])
dec = nn.ModuleList([VitBlock(dim=384, num_heads=6, mlp_ratio=4., qkv_bias=True,
                              norm_layer=partial(nn.LayerNorm, eps=1e-8), attn=LinearAttention2) for _ in range(8)])
for m in list(bott.modules()) + list(dec.modules()):
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.05); nn.init.normal_(m.bias, std=0.02)
off = ViTill(encoder=enc, bottleneck=bott, decoder=dec, target_layers=[2,3,4,5,6,7,8,9],
             fuse_layer_encoder=[[0,1,2,3],[4,5,6,7]], fuse_layer_decoder=[[0,1,2,3],[4,5,6,7]], mask_neighbor_size=0)
torch.save(enc.state_dict(), CKPT)

logging.disable(logging.WARNING)
from edge_ad.models import create_model

ours = create_model("dinomaly-s", weights=CKPT, attn_eps=0.0)
sd_off = {k: v for k, v in off.state_dict().items() if not k.startswith("encoder.")}
missing, unexpected = ours.load_state_dict(sd_off, strict=False)
print("decoder keys not matched:", [k for k in unexpected][:5], "ours missing (excl encoder):", [k for k in missing if not k.startswith("encoder")][:5])
ours.bake_pos_embed()
off.eval(); ours.eval()
x = torch.randn(2, 3, 392, 392)
with torch.no_grad():
    en_o, de_o = off(x)
    en_m, de_m = ours.features(x)
    for g in range(2):
        print(f"group {g}: max|en diff| {(en_o[g]-en_m[g]).abs().max():.3e} (|en| {en_o[g].abs().max():.2f}), max|de diff| {(de_o[g]-de_m[g]).abs().max():.3e}")
    amap, _ = cal_anomaly_maps(en_o, de_o, 392)
    amap = F.interpolate(amap, size=256, mode="bilinear", align_corners=False)
    amap = get_gaussian_kernel(kernel_size=5, sigma=4)(amap)
    flat = amap.flatten(1)
    score_o = torch.sort(flat, dim=1, descending=True)[0][:, :int(flat.shape[1] * 0.01)].mean(1)
    m_m, s_m = ours(x)
    print(f"map max|diff| {(amap - m_m).abs().max():.3e} (map max {amap.max():.4f}); score off {score_o.tolist()} ours {s_m.tolist()}")
# loss + gradients
off.train(); ours.train()
torch.manual_seed(1); x = torch.randn(2, 3, 392, 392)
for mod in (off.bottleneck, ours.bottleneck):
    for m in mod.modules():
        if isinstance(m, nn.Dropout): m.p = 0.0
en_o, de_o = off(x); lo = global_cosine_hm_percent(en_o, de_o, p=0.45, factor=0.1); lo.backward()
lm = ours.training_loss(x, 500); lm.backward()
print(f"loss off {lo.item():.6f} ours {lm.item():.6f}")
go = off.decoder[7].mlp.fc2.weight.grad; gm = ours.decoder[7].mlp.fc2.weight.grad
print(f"grad decoder[7].mlp.fc2 rel diff {(go-gm).norm()/go.norm():.3e}")
go = off.bottleneck[0].fc1.weight.grad; gm = ours.bottleneck[0].fc1.weight.grad
print(f"grad bottleneck fc1 rel diff {(go-gm).norm()/go.norm():.3e}")

# ---- image files -> metrics: the official evaluation_batch vs edge-ad --protocol official --------------------
import numpy as np
import pandas as pd
from sbs_common import compare, compare_inputs, edge_ad_inputs, edge_ad_metrics, make_images
from torch.utils.data import DataLoader

for _name in ("matplotlib", "matplotlib.pyplot"):  # STAND-IN: utils.py imports pyplot for plots only
    _m = types.ModuleType(_name)
    _m.__spec__ = importlib.machinery.ModuleSpec(_name, None)
    sys.modules[_name] = _m
np.bool = bool  # compute_pro uses np.bool (removed in NumPy 1.24) ...
if not hasattr(pd.DataFrame, "append"):  # ... and DataFrame.append (removed in pandas 2)
    pd.DataFrame.append = lambda self, row, ignore_index=True: pd.concat([self, pd.DataFrame([row])],
                                                                          ignore_index=ignore_index)
import utils as official_utils
from dataset import MVTecDataset, get_data_transforms

root = make_images(tempfile.mkdtemp() + "/data", hw=(500, 470))
data_tf, gt_tf = get_data_transforms(448, 392)
loader = DataLoader(MVTecDataset(root=str(root), transform=data_tf, gt_transform=gt_tf, phase="test"), batch_size=4)
off.eval(); ours.eval()
inputs = {}
for img, gt, _, path in loader:  # what evaluation_batch feeds the model and compares against (gt: nearest 256, bool)
    gt = torch.nn.functional.interpolate(gt, size=256, mode="nearest").bool()
    inputs.update({str(Path(p).resolve()): (i.numpy(), g[0].numpy()) for p, i, g in zip(path, img, gt)})
compare_inputs(inputs, edge_ad_inputs(ours, "dinomaly-s", root.parent, (256, 256)))
res = official_utils.evaluation_batch(off, loader, "cpu", max_ratio=0.01, resize_mask=256)
keys = ("image_auroc", "image_ap", "image_f1max", "pixel_auroc", "pixel_ap", "pixel_f1max", "aupro")
compare(dict(zip(keys, map(float, res))), edge_ad_metrics(ours, "dinomaly-s", root.parent))
