"""Side-by-side check of edge-ad's MambaAD against the official code (github.com/lewandofskee/MambaAD + ADer).

    git clone https://github.com/lewandofskee/MambaAD /path/to/MambaAD      # model/mambaad.py
    git clone https://github.com/zhangzjn/ADer /path/to/ADer                # util/metric.py, loss/base_loss.py
    pip install --target /path/to/deps einops numpy-hilbert-curve pyzorder  # the official model's imports
    python benchmarks/sbs_mambaad_official.py --official /path/to/MambaAD --ader /path/to/ADer --deps /path/to/deps

Builds the official MAMBAAD (timm resnet34 teacher, MFF_OCE, MambaUPNet depths [3,4,6,3], Hilbert scans,
8 directions: the released MVTec config) with random but non-trivial weights (BN affine + running stats,
LayerNorm affine, A_logs, Ds, linear weights at 1/sqrt(fan_in) instead of std .02), loads the teacher through
edge-ad's official-checkpoint path (`load_encoder_weights` on a full timm resnet34 state dict; the official side
loads the same file with ADer's `timm load_checkpoint(strict=False)`), loads the official state dict into
edge-ad's `mambaad` unchanged (strict), and compares: the scan tables each side builds itself, teacher / neck /
student features, SS2D for every scan type, the official evaluation map (ADer `Evaluator.cal_anomaly_map`: 1-cos,
bilinear align_corners=True to 256, mean, scipy gaussian_filter sigma 4) and score (map max, pooling_ks=None),
the ADer `L2Loss(lam=5)` training loss and the gradients of every trainable parameter.

Stand-ins (not official code, defined below and clearly labelled):
- `mamba_ssm.ops.selective_scan_interface.selective_scan_fn` is a CUDA kernel: replaced by a plain sequential
  PyTorch loop of the same recurrence (a transcription of mamba_ssm's `selective_scan_ref`, fp32).
- ADer's `model` package (registry + `get_model`) is replaced by a tiny registry whose `get_model` builds the timm
  teacher exactly as ADer's `timm_` branch does (timm create_model + `load_checkpoint(strict=False)`).
- ADer's util/metric.py and loss/base_loss.py import sklearn/skimage/numba/adeval: only `cal_anomaly_map` and
  `L2Loss` are loaded from their source.
DropPath (rate 0.2) is stochastic in training: its drop_prob is set to 0 on both sides for the loss/gradients.
"""
import argparse
import importlib.util
import re
import sys
import tempfile
import textwrap
import types
import warnings

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--official", required=True, help="checkout of lewandofskee/MambaAD")
ap.add_argument("--ader", required=True, help="checkout of zhangzjn/ADer")
ap.add_argument("--deps", default=None, help="folder holding einops, hilbert (numpy-hilbert-curve), pyzorder")
ap.add_argument("--stop-after-ss2d", action="store_true", help="only the scan tables and single-SS2D checks (~1 min)")
ap.add_argument("--no-full-train", action="store_true", help="skip the full-model loss/gradient step")
ap.add_argument("--train-size", type=int, default=64, choices=(64, 128, 256),
                help="input side of the full-model loss/gradient step (default 64: the sequential stand-in scan takes "
                     ">10 min at 256 on 2 cores; the official model hard-codes 256, see STAND-IN below)")
ap.add_argument("--no-e2e", action="store_true", help="skip the image files -> metrics leg")
args = ap.parse_args()
if args.deps:
    sys.path.insert(0, args.deps)
warnings.filterwarnings("ignore")

import logging

import numpy as np
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import repeat
from scipy.ndimage import gaussian_filter
from timm.models._helpers import load_checkpoint

torch.manual_seed(0)
torch.set_num_threads(2)


# ---- STAND-IN (not official): the CUDA selective scan as a sequential PyTorch loop -------------------------
def selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                      return_last_state=False):
    """mamba_ssm selective_scan_ref semantics: h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t, y_t = C_t h_t + D u_t,
    dt = softplus(delta + delta_bias); B, C grouped (b, G, N, L) shared by dim/G channels. Real A, no z."""
    assert z is None and not return_last_state
    u, delta = u.float(), delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias[..., None].float()
    if delta_softplus:
        delta = F.softplus(delta)
    dim, L = A.shape[0], u.shape[-1]
    B = repeat(B.float(), "b g n l -> b (g h) n l", h=dim // B.shape[1])
    C = repeat(C.float(), "b g n l -> b (g h) n l", h=dim // C.shape[1])
    dA = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))
    dBu = torch.einsum("bdl,bdnl,bdl->bdln", delta, B, u)
    h = A.new_zeros(u.shape[0], dim, A.shape[1])
    ys = []
    for t in range(L):
        h = dA[:, :, t] * h + dBu[:, :, t]
        ys.append(torch.einsum("bdn,bdn->bd", h, C[:, :, :, t]))
    return torch.stack(ys, dim=2) + u * D.float()[:, None]


_m = types.ModuleType("mamba_ssm.ops.selective_scan_interface")
_m.selective_scan_fn = _m.selective_scan_ref = selective_scan_fn
for _n in ("mamba_ssm", "mamba_ssm.ops"):
    sys.modules[_n] = types.ModuleType(_n)
sys.modules["mamba_ssm.ops.selective_scan_interface"] = _m


# ---- STAND-IN (not official): ADer's `model` package (registry + get_model for the timm teacher) ------------
class _Registry(dict):
    def register_module(self, fn):
        self[fn.__name__] = fn
        return fn


def get_model(cfg_model):  # ADer model/__init__.py, `timm_` branch, without the hub config
    kw = dict(cfg_model.kwargs)
    ckpt, strict = kw.pop("checkpoint_path"), kw.pop("strict")
    net = timm.create_model(cfg_model.name[len("timm_"):], **kw)
    load_checkpoint(net, ckpt, strict=strict)
    return net


_pkg = types.ModuleType("model")
_pkg.MODEL, _pkg.get_model = _Registry(), get_model
sys.modules["model"] = _pkg

# ---- official code -----------------------------------------------------------------------------------------
_spec = importlib.util.spec_from_file_location("model.mambaad", f"{args.official}/model/mambaad.py")
off_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(off_mod)

_ns = dict(np=np, torch=torch, F=F, nn=nn, gaussian_filter=gaussian_filter)
_src = open(f"{args.ader}/util/metric.py").read()
exec(textwrap.dedent(re.search(r"^    @staticmethod\n    def cal_anomaly_map\(.*?(?=^    @staticmethod)", _src,
                               re.S | re.M).group(0)).replace("@staticmethod\n", ""), _ns)
_src = open(f"{args.ader}/loss/base_loss.py").read()
exec(re.search(r"^class L2Loss\(.*?(?=^@|^class |\Z)", _src, re.S | re.M).group(0), _ns)
cal_anomaly_map, L2Loss = _ns["cal_anomaly_map"], _ns["L2Loss"]

logging.disable(logging.WARNING)
from edge_ad.models import create_model
from edge_ad.models import mambaad as ea
from edge_ad.models.scan_orders import scan_order


def rnd_(module):
    """Random but non-trivial weights on every float parameter/buffer that official init leaves trivial."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)):
                m.weight.uniform_(0.5, 1.5); m.bias.normal_(0, 0.1)
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.normal_(0, 0.1); m.running_var.uniform_(0.5, 2.0)
            elif isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=m.in_features ** -0.5)
                if m.bias is not None:
                    m.bias.normal_(0, 0.02)
            elif isinstance(m, off_mod.SS2D):
                m.A_logs.copy_(torch.log(torch.empty_like(m.A_logs).uniform_(0.5, 16)))
                m.Ds.normal_(1, 0.5)
                m.x_proj_weight.normal_(0, m.d_inner ** -0.5)


def rel(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


# ---- 1. scan tables built by each side ---------------------------------------------------------------------
print("== scan orders (each side's own table, before any weight copy)")
for st in ("hilbert", "sweep", "scan", "zorder", "zigzag"):
    ok = [np.array_equal(off_mod.HSCANS(s, scan_type=st).index_flat.view(-1).numpy(), scan_order(st, s))
          for s in (8, 16, 32, 64)]
    print(f"  {st:8s} sizes 8/16/32/64 equal: {ok}")

# ---- 2. one SS2D per scan type (8 directions) --------------------------------------------------------------
print("== single SS2D (d_model 32, 8 directions), official vs edge-ad, batch 2")
for st in ("hilbert", "sweep", "scan", "zorder", "zigzag"):
    for s in (8, 16):
        o = off_mod.SS2D(d_model=32, size=s, scan_type=st, num_direction=8); rnd_(o)
        e = ea.SS2D(32, s, st)
        r = e.load_state_dict(o.state_dict(), strict=True)
        o.eval(); e.eval()
        x = torch.randn(2, s, s, 32)
        with torch.no_grad():
            yo, ye = o(x), e(x)
        o.train(); e.train()
        yo, ye = o(x), e(x)
        (yo ** 2).mean().backward(); (ye ** 2).mean().backward()
        g = max(rel(dict(e.named_parameters())[k].grad, p.grad) for k, p in o.named_parameters() if p.grad is not None)
        print(f"  {st:8s} {s:2d}x{s:<2d} max|diff| {(yo - ye).abs().max().item():.3e} (|y| max {yo.abs().max().item():.2f})"
              f", grads max rel diff {g:.3e}")
if args.stop_after_ss2d:
    sys.exit(0)

# ---- 3. the full model --------------------------------------------------------------------------------------
CKPT = tempfile.mkdtemp() + "/resnet34_random.pth"
t = timm.create_model("resnet34", pretrained=False)
rnd_(t)
with torch.no_grad():  # BN gammas non-zero (timm zero-inits the last BN of each block)
    for n_, p in t.named_parameters():
        if n_.endswith("bn2.weight") or n_.endswith("bn3.weight"):
            p.uniform_(0.5, 1.5)
torch.save(t.state_dict(), CKPT)  # same layout as timm's resnet34-43635321.pth (with layer4, fc)

from argparse import Namespace

mt = Namespace(name="timm_resnet34", kwargs=dict(pretrained=False, checkpoint_path=CKPT, strict=False,
                                                  features_only=True, out_indices=[1, 2, 3]))
off = off_mod.MAMBAAD(model_t=mt, model_s=dict(depths_decoder=[3, 4, 6, 3], scan_type="hilbert", num_direction=8))
rnd_(off.mff_oce); rnd_(off.net_s)
ours = create_model("mambaad", weights=CKPT)
same_t = all(torch.equal(v, ours.net_t.state_dict()[k]) for k, v in off.net_t.state_dict().items())
print(f"== teacher through edge-ad's load_encoder_weights == official load_checkpoint: {same_t}")
# scan tables of the full model before copying (ours built its own Hilbert tables)
same_idx = all(torch.equal(v, ours.state_dict()[k]) for k, v in off.state_dict().items() if "scans.index" in k)
print(f"== all {sum('scans.index' in k for k in off.state_dict())} scans.index_flat(_inv) equal before copy: {same_idx}")
res = ours.load_state_dict(off.state_dict(), strict=True)
print(f"== official state dict loaded strict: {res}")

off.eval(); ours.eval()
x = torch.randn(2, 3, 256, 256)
with torch.no_grad():
    ft_o = off.net_t(x)
    nk_o = off.mff_oce(ft_o)
    ft_o2, fs_o = off(x)
    ft_m, fs_m = ours.features(x)
    nk_m = ours.mff_oce(ft_m)
    for i in range(3):
        print(f"teacher f{i + 1} {tuple(ft_o[i].shape[1:])}: max|diff| {(ft_o[i] - ft_m[i]).abs().max():.3e} "
              f"(|f| max {ft_o[i].abs().max():.2f})")
    print(f"neck 512x8x8: max|diff| {(nk_o - nk_m).abs().max():.3e} (|v| max {nk_o.abs().max():.2f})")
    for i in range(3):
        print(f"student s{i + 1} {tuple(fs_o[i].shape[1:])}: max|diff| {(fs_o[i] - fs_m[i]).abs().max():.3e} "
              f"rel {rel(fs_m[i], fs_o[i]):.3e} (|s| max {fs_o[i].abs().max():.2f})")
    amap_o, _ = cal_anomaly_map(list(ft_o2), list(fs_o), [256, 256], uni_am=False, amap_mode="add",
                                gaussian_sigma=4)
    score_o = amap_o.max(axis=(1, 2))
    m_m, s_m = ours(x)
    d = np.abs(amap_o - m_m[:, 0].double().numpy()).max()
    print(f"map 256x256: max|diff| {d:.3e} (map min {amap_o.min():.4f} max {amap_o.max():.4f})")
    print(f"score (map max): official {score_o.tolist()} edge-ad {s_m.tolist()} "
          f"max|diff| {np.abs(score_o - s_m.double().numpy()).max():.3e}")
    lo_eval = L2Loss(lam=5.0)(list(ft_o2), list(fs_o)).item()
    print(f"eval-mode L2Loss(lam=5): official {lo_eval:.6f} edge-ad {ours.training_loss(x, 0).item():.6f}")

# ---- 4. image files -> metrics: ADer's DefaultAD + MAMBAADTrainer.test + Evaluator vs edge-ad --protocol official --
if not args.no_e2e:
    import json
    import os
    from pathlib import Path

    from PIL import Image
    from sbs_common import (
        ader_metrics,
        compare,
        compare_inputs,
        edge_ad_inputs,
        edge_ad_metrics,
        load_ader_metric,
        make_images,
    )
    from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
    from torch.utils import data as tud
    from torchvision import transforms
    from torchvision.transforms import InterpolationMode

    root = make_images(tempfile.mkdtemp() + "/mvtec", hw=(330, 290), per_category=2)  # ADer wants a root named mvtec
    meta = {"train": {}, "test": {root.name: []}}
    for p in sorted(root.glob("test/*/*.png")):
        d = p.parent.name
        m = root / "ground_truth" / d / f"{p.stem}_mask.png"
        meta["test"][root.name].append({"img_path": str(p.relative_to(root.parent)),
                                        "mask_path": str(m.relative_to(root.parent)) if d != "good" else "",
                                        "cls_name": root.name, "specie_name": "" if d == "good" else d,
                                        "anomaly": int(d != "good")})
    (root.parent / "meta.json").write_text(json.dumps(meta))
    def _fromarray(obj, mode=None):  # SHIM: Pillow >= 11 refuses DefaultAD's float64 zeros with mode="L"; older
        return Image.fromarray(np.asarray(obj).astype(np.uint8) if mode == "L" else obj)  # Pillow read them as 0s

    _ad = {"os": os, "json": json, "random": __import__("random"), "time": __import__("time"), "np": np,
           "Image": types.SimpleNamespace(open=Image.open, fromarray=_fromarray), "data": tud}
    _src = open(f"{args.ader}/util/data.py").read()
    for _fn in ("wait_for_path", "pil_loader", "pil_loader_L", "get_img_loader"):
        exec(re.search(rf"^def {_fn}\(.*?(?=^def |^# |\Z)", _src, re.S | re.M).group(0), _ad)
    _src = open(f"{args.ader}/data/ad_dataset.py").read()
    exec(re.search(r"^class DefaultAD\(.*?(?=^class )", _src, re.S | re.M).group(0), _ad)
    cfg = Namespace(data=Namespace(root=str(root.parent), meta="meta.json", cls_names=[], loader_type="pil",
                                   loader_type_target="pil_L"))
    size = 256  # configs/mambaad/mambaad_mvtec.py's transforms, built with torchvision as ADer's registry does
    tf = transforms.Compose([transforms.Resize((size, size), interpolation=InterpolationMode.BILINEAR),
                             transforms.CenterCrop((size, size)), transforms.ToTensor(),
                             transforms.Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, inplace=True)])
    ttf = transforms.Compose([transforms.Resize((size, size), interpolation=InterpolationMode.BILINEAR),
                              transforms.CenterCrop((size, size)), transforms.ToTensor()])
    loader = tud.DataLoader(_ad["DefaultAD"](cfg, train=False, transform=tf, target_transform=ttf), batch_size=4)
    masks, maps, anomalys, inputs = [], [], [], {}
    with torch.no_grad():
        for b in loader:  # MAMBAADTrainer.test: forward, cal_anomaly_map(..., gaussian_sigma=4), mask > 0.5
            ft, fs = off(b["img"])
            amap, _ = cal_anomaly_map(ft, fs, [size, size], uni_am=False, amap_mode="add", gaussian_sigma=4)
            m = b["img_mask"]
            m[m > 0.5], m[m <= 0.5] = 1, 0
            masks.append(m.numpy().astype(int)); maps.append(amap); anomalys.append(b["anomaly"].numpy().astype(int))
            inputs.update({str(Path(p).resolve()): (i.numpy(), g[0].numpy()) for p, i, g in zip(b["img_path"], b["img"], m)})
    compare_inputs(inputs, edge_ad_inputs(ours, "mambaad", root.parent, (size, size)))
    official = ader_metrics(load_ader_metric(args.ader), np.concatenate(masks), np.concatenate(maps),
                            np.concatenate(anomalys))
    compare(official, edge_ad_metrics(ours, "mambaad", root.parent))

# ---- 5. training loss and gradients (train mode: neck BN batch stats, teacher frozen) ------------------------
if args.no_full_train:
    sys.exit(0)
if args.train_size != 256:
    # STAND-IN (a one-literal edit of the official file): MambaUPNet hard-codes its scan sizes as 8 * 2 ** i_layer
    # (256 input); 64 or 128 input needs 2 or 4 there. Everything else is the official code unchanged.
    _txt = open(f"{args.official}/model/mambaad.py").read()
    assert _txt.count("size=8 * 2 ** (i_layer)") == 1
    _small = types.ModuleType("model.mambaad_small")
    _small.__file__ = f"{args.official}/model/mambaad.py"
    exec(compile(_txt.replace("size=8 * 2 ** (i_layer)", f"size={args.train_size // 32} * 2 ** (i_layer)"),
                 _small.__file__, "exec"), _small.__dict__)
    off = _small.MAMBAAD(model_t=mt, model_s=dict(depths_decoder=[3, 4, 6, 3], scan_type="hilbert", num_direction=8))
    rnd_(off.mff_oce); rnd_(off.net_s)
    v = ea._VARIANTS["mambaad"]
    ours = ea.MambaAD(ea._teacher(v), width=v.width, depths=v.depths, size=args.train_size, resize=args.train_size,
                      scan_type="hilbert", drop_path_rate=0.2)
    print(f"== {args.train_size}x{args.train_size} pair for the training step: official state dict loaded strict: "
          f"{ours.load_state_dict(off.state_dict(), strict=True)}")
for mdl in (off, ours):
    for m in mdl.modules():
        if type(m).__name__ == "DropPath":
            m.drop_prob = 0.0
off.train(); ours.train()
torch.manual_seed(1)
x = torch.randn(1, 3, args.train_size, args.train_size)
ft_o, fs_o = off(x)
lo = L2Loss(lam=5.0)(ft_o, fs_o)
lo.backward()
lm = ours.training_loss(x, 0)
lm.backward()
print(f"train L2Loss(lam=5): official {lo.item():.6f} edge-ad {lm.item():.6f} |diff| {abs(lo.item() - lm.item()):.3e}")
po, pm = dict(off.named_parameters()), dict(ours.named_parameters())
worst, vanishing, n_cmp = [], [], 0
g_med = float(np.median([p.grad.norm().item() for p in po.values() if p.grad is not None]))
for k, p in po.items():
    if p.grad is None:
        assert k.startswith("net_t") or "scans" in k or pm[k].grad is None, k
        continue
    n_cmp += 1
    if p.grad.norm() < 1e-4 * g_med:  # e.g. conv biases before a train-mode BatchNorm: the exact gradient is 0
        vanishing.append(((pm[k].grad - p.grad).abs().max().item(), p.grad.abs().max().item(), k))
    else:
        worst.append((rel(pm[k].grad, p.grad), k))
worst.sort(reverse=True)
print(f"gradients: {n_cmp} trainable tensors compared; {len(worst)} with a non-vanishing gradient: max rel diff "
      f"{worst[0][0]:.3e} ({worst[0][1]}), median {worst[len(worst) // 2][0]:.3e}")
if vanishing:
    d, g, k = max(vanishing)
    print(f"  {len(vanishing)} tensors whose exact gradient is ~0 (norm < 1e-4 x median; e.g. {k}): max |diff| "
          f"{d:.2e} (their max |grad| {max(v[1] for v in vanishing):.2e})")
for k in ("mff_oce.conv1.weight", "net_s.layers_up.0.blocks.0.smm_blocks.0.self_attention.A_logs",
          "net_s.layers_up.3.blocks.0.smm_blocks.2.self_attention.x_proj_weight",
          "net_s.layers_up.3.blocks.0.smm_blocks.2.self_attention.dt_projs_bias",
          "net_s.layers_up.2.blocks.1.finalconv11.weight"):
    print(f"  grad {k}: rel diff {rel(pm[k].grad, po[k].grad):.3e}")
bn_o, bn_m = off.mff_oce.bn1.running_mean, ours.mff_oce.bn1.running_mean
print(f"neck BN running_mean after the step: max|diff| {(bn_o - bn_m).abs().max():.3e}")
