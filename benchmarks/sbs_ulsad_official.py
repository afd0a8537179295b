"""Side-by-side check of edge-ad's ULSAD against the official code (github.com/sukanyapatra1997/ULSAD-2024).

    git clone https://github.com/sukanyapatra1997/ULSAD-2024 /path/to/ULSAD-2024   # commit c75e169
    python benchmarks/sbs_ulsad_official.py --official /path/to/ULSAD-2024

Builds the official `UlsadModel` (WRN50-2 layer2/3 through Anomalib's TimmFeatureExtractor, FeatAE, ConvAutoEncoder,
GaussianBlur2d) from the official modules with random but non-trivial weights (BN affine/running statistics set by
train-mode passes), loads the backbone into edge-ad's `ulsad` through its backbone-checkpoint path and the FRN/AE
state dicts under their edge-ad names, and compares: pooled and standardised features, channel mean/std of the
official `pretrain_channel_mean_std`, FRN and AE outputs, the 32x32 distances, self/cross attention, the
quantiles of the official `map_norm_quantiles` (0.9 / 0.995, good images only), the un-normalised blurred maps, the
fused map and max score of the official evaluation, the whole path from image files to metrics (anomalib's data
path, last-epoch quantiles on the test split's good images, anomalib AUROC/AUPRO vs edge-ad --protocol official on
the same files; needs --deps), and the training loss and gradients.

The official package imports pytorch-lightning/kornia/CUDA; only what is needed is loaded, with STAND-INS
(labelled below): a stub `anomalib.models.components` holding the official TimmFeatureExtractor (timm.py, with
pretrained forced off: no download) and the official GaussianBlur2d (blur.py) over three small kornia functions
re-written here; `imagenet_norm_batch`'s `.to('cuda')` becomes `.to('cpu')`; the two Lightning methods are
executed from lightning_model.py's source with a plain namespace as `self`.
"""
import argparse
import re
import sys
import tempfile
import types

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--official", required=True, help="checkout of the official ULSAD-2024 repository")
ap.add_argument("--batch", type=int, default=2)
ap.add_argument("--deps", help="folder with torchmetrics 0.10.3 + lightning-utilities 0.3.0 + setuptools<70 (pip "
                               "install --target) for the image files -> metrics leg; without it the leg is skipped")
args = ap.parse_args()
OFF = args.official.rstrip("/")

import logging

import torch
import torch.nn.functional as F
from torch import nn

torch.set_num_threads(2)
torch.manual_seed(0)


# ---------------- STAND-INS for unavailable packages (kornia) -----------------------------------------------
def _k_gaussian1d(window_size, sigma):  # kornia.filters.kernels.gaussian (odd size)
    x = torch.arange(window_size, dtype=torch.float32) - window_size // 2
    if window_size % 2 == 0:
        x = x + 0.5
    g = torch.exp(-x.pow(2.0) / (2 * sigma**2))
    return g / g.sum()


def get_gaussian_kernel2d(kernel_size, sigma, force_even=False):  # kornia.filters.get_gaussian_kernel2d
    kx, ky = _k_gaussian1d(kernel_size[0], sigma[0]), _k_gaussian1d(kernel_size[1], sigma[1])
    return torch.matmul(kx.unsqueeze(-1), ky.unsqueeze(-1).t())


def normalize_kernel2d(k):  # kornia.filters.kernels.normalize_kernel2d
    return k / k.abs().sum(dim=-1).sum(dim=-1).unsqueeze(-1).unsqueeze(-1)


def _compute_padding(kernel_size):  # kornia.filters.filter._compute_padding
    computed = [k - 1 for k in kernel_size]
    out = 2 * len(kernel_size) * [0]
    for i in range(len(kernel_size)):
        c = computed[-(i + 1)]
        out[2 * i + 0] = c // 2
        out[2 * i + 1] = c - c // 2
    return out


def _load(path, extra, subs=()):
    src = open(f"{OFF}/{path}").read()
    src = re.sub(r"^from kornia.*$", "", src, flags=re.M)
    for a, b in subs:
        src = src.replace(a, b)
    mod = types.ModuleType(path)
    mod.__dict__.update(extra)
    exec(compile(src, f"{OFF}/{path}", "exec"), mod.__dict__)
    return mod


# official Anomalib components: TimmFeatureExtractor (pretrained forced off, STAND-IN) and GaussianBlur2d
_timm_mod = _load("anomalib/models/components/feature_extractors/timm.py", {},
                  subs=[("pretrained=pre_trained,", "pretrained=False,")])
_blur_mod = _load("anomalib/models/components/filters/blur.py",
                  dict(get_gaussian_kernel2d=get_gaussian_kernel2d, normalize_kernel2d=normalize_kernel2d,
                       _compute_padding=_compute_padding))
_comp = types.ModuleType("anomalib.models.components")
_comp.FeatureExtractor = _timm_mod.FeatureExtractor
_comp.GaussianBlur2d = _blur_mod.GaussianBlur2d
for name in ("anomalib", "anomalib.models"):
    sys.modules.setdefault(name, types.ModuleType(name))
sys.modules["anomalib.models.components"] = _comp
# official torch_model.py; STAND-IN: imagenet_norm_batch moves its constants to 'cpu' instead of 'cuda'
om = _load("anomalib/models/ulsad/torch_model.py", {}, subs=[(".to('cuda')", ".to('cpu')")])
# official Lightning methods, executed with a namespace as `self` (the module imports pytorch-lightning)
_lsrc = open(f"{OFF}/anomalib/models/ulsad/lightning_model.py").read()
LM = types.SimpleNamespace()
_lns = dict(torch=torch, Tensor=torch.Tensor, DataLoader=object, tqdm=types.SimpleNamespace(tqdm=lambda it, **k: it),
            logger=logging.getLogger("off"))
for _name in ("pretrain_channel_mean_std", "map_norm_quantiles", "_get_quantiles_of_maps", "reduce_tensor_elems"):
    body = re.search(rf"^    (?:@torch.no_grad\(\)\n    )?def {_name}\(.*?(?=^    @|^    def |\Z)", _lsrc, re.S | re.M).group(0)
    exec("from __future__ import annotations\n" + "\n".join(line[4:] for line in body.splitlines()), _lns)
    setattr(LM, _name, _lns[_name])

logging.disable(logging.WARNING)
# ---------------- official model with random, non-trivial weights -------------------------------------------
off = om.UlsadModel(image_size=(256, 256), lambdadir_l=0.5, lambdadir_g=0.5, lambdadir_a=0.5)  # lightning: a := g
bb = off.pretrain.encoder.feature_extractor
with torch.no_grad():
    for m in off.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # cumulative statistics of the calibration passes below
            if m.affine:
                m.weight.uniform_(0.5, 1.5); m.bias.normal_(0, 0.1)
    # backbone BN running statistics from train-mode passes (timm zero-inits the last BN gamma: overwritten above)
    bb.train()
    for _ in range(2):
        bb(om.imagenet_norm_batch(torch.rand(2, 3, 256, 256)))
    bb.eval()


def images(n, seed):
    g = torch.Generator().manual_seed(seed)
    lo = torch.rand(n, 3, 16, 16, generator=g)
    x = F.interpolate(lo, size=256, mode="bilinear", align_corners=False) + 0.1 * torch.rand(n, 3, 256, 256, generator=g)
    return x.clamp(0, 1)


MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
norm = lambda x: (x - MEAN) / STD  # edge-ad's Preprocess output (its models take normalised input)

B = args.batch
train_set = [{"image": images(B, 10 + i), "label": torch.zeros(B)} for i in range(2)]
val_set = [{"image": images(2, 20), "label": torch.tensor([0, 1])}, {"image": images(2, 21), "label": torch.tensor([0, 0])}]

# official on_train_start: channel mean/std (before any update)
self_ = types.SimpleNamespace(model=off, device=torch.device("cpu"),
                              config=types.SimpleNamespace(model=types.SimpleNamespace(qa=0.9, qb=0.995)),
                              reduce_tensor_elems=lambda t, m=2**24: LM.reduce_tensor_elems(None, t, m))
self_._get_quantiles_of_maps = lambda maps: LM._get_quantiles_of_maps(self_, maps)
ms = LM.pretrain_channel_mean_std(self_, train_set)
off.mean_std.update(ms)
# FRN / AE BatchNorm running statistics: a few train-mode (loss) passes, no update of the weights
off.train()
with torch.no_grad():
    for bt in train_set:
        off(bt["image"])
off.eval()

# ---------------- edge-ad model: backbone through its checkpoint path, FRN/AE by name -------------------------
CKPT = tempfile.mkdtemp() + "/wrn50_2_random.pth"
torch.save(bb.state_dict(), CKPT)
from edge_ad.models import create_model

ours = create_model("ulsad", weights=CKPT)
osd = off.state_dict()
sd = {"frn." + k[len("featae."):]: v for k, v in osd.items() if k.startswith("featae.")}
sd |= {"ae." + k[len("img_encoder."):]: v for k, v in osd.items() if k.startswith("img_encoder.")}
missing, unexpected = ours.load_state_dict(sd, strict=False)
print("ours keys not loaded (excl. backbone/constants):",
      [k for k in missing if not k.startswith("backbone.") and k not in ("feat_mean", "feat_std", "quantiles", "map_shift", "map_scale")],
      "unexpected:", unexpected)
ours.fit_constants([{"image": norm(b["image"])} for b in train_set], torch.device("cpu"))
ours.eval()

rows = []


def row(name, a, b, rel=False):
    d = (a - b).abs().max().item()
    if rel:
        d = ((a - b).norm() / b.norm()).item()
    rows.append((name, d, a.abs().max().item()))


x01 = images(B, 99)
xn = norm(x01)
with torch.no_grad():
    p_o, p_m = off.pretrain(x01), ours.pooled_features(xn)
    row("pooled features (channel averaging) 384x32x32", p_o, p_m)
    row("channel mean (official pretrain_channel_mean_std)", off.mean_std["mean"], ours.feat_mean)
    row("channel std", off.mean_std["std"], ours.feat_std)
    u_o = (p_o - off.mean_std["mean"]) / off.mean_std["std"]
    u_m = ours.features(xn)
    row("standardised features U", u_o, u_m)
    r_o, r_m = off.featae(u_o), ours.frn(u_o)
    row("FRN output 768x32x32 (same U)", r_o, r_m)
    a_o, a_m = off.img_encoder(x01), ours.ae(xn)
    row("global AE output 384x32x32", a_o, a_m)
    from edge_ad.models.ulsad import attention, distance
    row("self-attention SelfAttn(U)", off.compute_selfattn(u_o), attention(u_o, u_o))
    row("cross-attention CrossAttn(U, AE)", off.compute_crossattn(u_o, a_o), attention(a_o, u_o))
    # official 32x32 distances: its eval branch with output size 32 (bilinear at the same size = identity), no blur
    blur, off.blur, off.input_size = off.blur, nn.Identity(), (32, 32)
    d_o = off(x01)
    off.blur, off.input_size = blur, (256, 256)
    row("local distance D_l(U, FRN[:384]) 32x32", d_o["map_local"][:, 0], distance(u_m, ours.frn(u_m)[:, :384], 0.5))
    row("global distance D_g(AE, FRN[384:]) 32x32", d_o["map_global"][:, 0], distance(a_m, ours.frn(u_m)[:, 384:], 0.5))
    # blur + upsample alone (official GaussianBlur2d . bilinear vs edge-ad's H d H^T) on the same 32x32 map
    dm = d_o["map_local"]
    row("upsample+blur of the same 32x32 map (256x256)",
        off.blur(F.interpolate(dm, size=(256, 256), mode="bilinear")), (ours.head @ dm @ ours.head.t()))
    o_raw = off(x01)  # quantiles unset: un-normalised, upsampled + blurred
    m_raw = ours.raw_maps(xn)
    row("un-normalised local map 256x256 (quantiles unset)", o_raw["map_local"][:, 0], m_raw[:, 0])
    row("un-normalised global map 256x256", o_raw["map_global"][:, 0], m_raw[:, 1])

# official on_validation_start of the last epoch: quantiles on the good validation images
qo = LM.map_norm_quantiles(self_, val_set)
ours.calibrate([{"image": norm(b["image"]), "label": b["label"]} for b in val_set], torch.device("cpu"))
q_off = torch.stack([torch.stack([qo["qa_local"], qo["qb_local"]]), torch.stack([qo["qa_global"], qo["qb_global"]])])
row("quantiles [[qa,qb] local, [qa,qb] global] (0.9/0.995)", q_off, ours.quantiles)
off.quantiles.update(qo)
with torch.no_grad():
    out = off(x01)
    amap_o = out["anomaly_map_combined"]
    score_o = amap_o.reshape(amap_o.shape[0], -1).max(dim=1).values  # anomalib _post_process
    amap_m, score_m = ours(xn)
    row("fused anomaly map 256x256 (normalised, blurred)", amap_o, amap_m)
    row("image score (max of the map)", score_o, score_m)

# ---------------- image files -> metrics: anomalib's data path + last-epoch quantiles + AUROC/AUPRO -------------
if args.deps:
    import tempfile as _tf
    from pathlib import Path

    import cv2
    import numpy as np

    sys.path.append(args.deps)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from sbs_common import (
        anomalib_metrics,
        compare,
        compare_inputs,
        edge_ad_inputs,
        edge_ad_metrics,
        load_anomalib_metrics,
        make_images,
    )

    root = make_images(_tf.mkdtemp() + "/data", hw=(330, 290), per_category=2)
    files = sorted(root.glob("test/*/*.png"))
    xs, masks, labels, inputs = [], [], [], {}
    for f in files:
        # anomalib data/utils/image.py::read_image (cv2, BGR -> RGB) and base/dataset.py's mask read (/ 255.0);
        # STAND-IN for albumentations: A.Resize(256, 256) is cv2.resize with INTER_LINEAR for the image and
        # INTER_NEAREST for the mask; A.ToFloat(max_value=255) (normalization: none) and ToTensorV2
        img = cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB)
        img = cv2.resize(img, (256, 256), interpolation=cv2.INTER_LINEAR)
        bad = f.parent.name != "good"
        mask = cv2.imread(str(root / "ground_truth" / f.parent.name / f"{f.stem}_mask.png"), 0) / 255.0 if bad \
            else np.zeros(img.shape[:2])
        mask = cv2.resize(mask, (256, 256), interpolation=cv2.INTER_NEAREST)
        xs.append(torch.from_numpy(img.astype(np.float32) / 255.0).permute(2, 0, 1))
        masks.append(torch.from_numpy(mask).int())
        labels.append(int(bad))
        inputs[str(f.resolve())] = (norm(xs[-1][None])[0].numpy(), masks[-1].numpy())
    compare_inputs(inputs, edge_ad_inputs(ours, "ulsad", root.parent, (256, 256)))
    x_all, lab = torch.stack(xs), torch.tensor(labels)
    # val = test set (val_split_mode: same_as_test): the last epoch's quantiles from its good images
    val = [{"image": x_all[i:i + 4], "label": lab[i:i + 4]} for i in range(0, len(files), 4)]
    off.quantiles.update({k: torch.tensor(0.0) for k in off.quantiles})  # unset, as before the last epoch
    off.quantiles.update(LM.map_norm_quantiles(self_, val))
    with torch.no_grad():
        amaps = torch.cat([off(b["image"])["anomaly_map_combined"] for b in val])
    scores = amaps.reshape(amaps.shape[0], -1).max(dim=1).values
    auroc_cls, aupro_cls = load_anomalib_metrics(OFF)
    official = anomalib_metrics(auroc_cls, aupro_cls, lab.numpy(), scores.numpy(), torch.stack(masks).numpy(),
                                amaps[:, 0].numpy())
    compare(official, edge_ad_metrics(ours, "ulsad", root.parent))

# ---------------- training loss and gradients ------------------------------------------------------------------
# the fp32-vs-fp64 channel-statistics rounding (~1e-7 relative, rows above) is amplified ~1e3x by the train-mode
# BatchNorm backward of the FRN (its fp32 gradient itself is only ~2e-3 from an fp64 one); to compare the loss
# and backward code alone, edge-ad takes the official mean/std here
ours.feat_mean.copy_(off.mean_std["mean"]); ours.feat_std.copy_(off.mean_std["std"])
off.train(); ours.train()
for m in list(off.modules()) + list(ours.modules()):
    if isinstance(m, nn.BatchNorm2d):
        m.momentum = 0.1
xt = images(B, 123)
lo = off(xt); lo.backward()
lm = ours.training_loss(norm(xt), 0); lm.backward()
rows.append(("training loss L_pl + L_pg + L_lg", abs(lo.item() - lm.item()), lo.item()))
ours_p = dict(ours.named_parameters())
per = {}  # part -> list of (name, official grad, edge-ad grad)
for n, p in off.named_parameters():
    if p.grad is not None:
        mn = n.replace("featae.", "frn.").replace("img_encoder.", "ae.")
        per.setdefault(mn.split(".")[0], []).append((n, p.grad, ours_p[mn].grad))
for part, lst in per.items():
    go = torch.cat([g.flatten() for _, g, _ in lst]); gm = torch.cat([g.flatten() for _, _, g in lst])
    rows.append((f"gradients {part}, all {len(lst)} tensors, relative", ((go - gm).norm() / go.norm()).item(), go.abs().max().item()))
    # per tensor; conv biases directly followed by train-mode BN have a zero true gradient (rounding noise only)
    big = max(g.norm() for _, g, _ in lst)
    sel = [(((g - h).norm() / g.norm()).item(), n) for n, g, h in lst if g.norm() > 1e-4 * big]
    r, n = max(sel)
    rows.append((f"gradients {part}, worst single tensor ({n}), relative", r, float("nan")))
    tiny = [(n, g.abs().max().item(), (g - h).abs().max().item()) for n, g, h in lst if g.norm() <= 1e-4 * big]
    if tiny:
        print(f"{part}: {len(tiny)} tensors with a ~zero true gradient (biases before train-mode BN): max |grad| "
              f"{max(t[1] for t in tiny):.1e}, max abs diff {max(t[2] for t in tiny):.1e}")
grad_b = [n for n, p in ours.named_parameters() if n.startswith("backbone.") and p.grad is not None]
print(f"backbone tensors with a gradient: ours {len(grad_b)}, official "
      f"{sum(p.grad is not None for p in bb.parameters())}")
print(f"loss: official {lo.item():.7f}  edge-ad {lm.item():.7f}")
print(f"score: official {score_o.tolist()}  edge-ad {score_m.tolist()}")
print("\n| quantity | max abs difference (official vs edge-ad) | max |value| |\n|---|---|---|")
for name, d, mx in rows:
    print(f"| {name} | {d:.2e} | {mx:.4g} |")
