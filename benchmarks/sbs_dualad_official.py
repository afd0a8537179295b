"""Side-by-side check of edge-ad's DualAD against the official code (github.com/cyhaan/DualAD).

    git clone https://github.com/cyhaan/DualAD /path/to/DualAD
    python benchmarks/sbs_dualad_official.py --official /path/to/DualAD [--variant dualad-he|dualad-ho|both] [--batch 2]

Builds the official model the way `tools/train_val.py` does (ModelHelper: wide_resnet50_2 outlayers [1,2,3] ->
MFAA outstrides [16] -> DualAD reconstruction with the released He kwargs of `experiments/MVTec-AD/config.yaml`;
for Ho `proj_type: transformer`, 2+2 wide layers, no memory, as edge-ad infers), gives it random but non-trivial
weights (kaiming convs, random BatchNorm affine/statistics, non-zero Linear biases and LayerNorm affines),
saves its state dict as an official checkpoint and loads that through edge-ad's `DualAD.load_official_checkpoint`.
Compares the fused features, the CDBN intermediates (in_proj, memory reads, NDN encoder, every NDN decoder layer),
the reconstruction, the pixel map and image score of the official `cal_anomaly_score`, the whole evaluation from
image files to metrics (official MVTecDataset_test + eval_helper.performances vs edge-ad --protocol official on the
same files, benchmarks/sbs_common.py), and in train mode the
official `FeatureMSELoss` and the gradients, with the same seed before both forwards (feature jitter and dropout
draw the same random numbers), once with dropout on and once with dropout 0.

Stand-ins (labelled STAND-IN below), because the official code needs packages/hardware not used here:
  * `einops` is not installed: a minimal `rearrange` for the three patterns the official files use;
  * `easydict` configs: types.SimpleNamespace (attribute access is all the model reads);
  * `DualAD.generate_mask` ends in `.cuda()`: it is run unchanged with `Tensor.cuda` temporarily the identity.
"""
import argparse
import contextlib
import logging
import sys
import tempfile
import types
from types import SimpleNamespace as NS

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--official", required=True, help="checkout of the official DualAD repository")
ap.add_argument("--variant", default="dualad-he", choices=["dualad-he", "dualad-ho", "both"])
ap.add_argument("--no-e2e", action="store_true", help="skip the image files -> metrics leg")
ap.add_argument("--batch", type=int, default=2)
ap.add_argument("--double", action="store_true", help="run both models in float64 (separates float32 rounding from real differences)")
args = ap.parse_args()
sys.path.insert(0, args.official)

import torch
import torch.nn as nn

torch.set_num_threads(2)


# ---- STAND-IN for einops.rearrange (only the patterns used by the official dualad.py) ----------------------
def _rearrange(x, pattern, **kw):
    p = " ".join(pattern.split())
    if p == "b c h w -> b (h w) c":
        return x.flatten(2).transpose(1, 2)
    if p == "b (h w) d -> b d h w":
        b, n, d = x.shape
        h = kw["h"]
        return x.transpose(1, 2).reshape(b, d, h, n // h)
    if p == "b n (h d) -> b h n d":
        b, n, c = x.shape
        h = kw["h"]
        return x.reshape(b, n, h, c // h).transpose(1, 2)
    if p == "b h n d -> b n (h d)":
        b, h, n, d = x.shape
        return x.transpose(1, 2).reshape(b, n, h * d)
    raise NotImplementedError(pattern)


sys.modules["einops"] = types.ModuleType("einops")
sys.modules["einops"].rearrange = _rearrange

from models.model_helper import ModelHelper
from models.reconstructions.dualad import DualAD as OffDualAD
from utils.criterion_helper import FeatureMSELoss

# ---- STAND-IN: run the official generate_mask (which ends in .cuda()) on the CPU ---------------------------
_orig_generate_mask = OffDualAD.generate_mask


def _generate_mask_cpu(self, feature_size, neighbor_size):
    cuda = torch.Tensor.cuda
    torch.Tensor.cuda = lambda t, *a, **k: t
    try:
        return _orig_generate_mask(self, feature_size, neighbor_size)
    finally:
        torch.Tensor.cuda = cuda


OffDualAD.generate_mask = _generate_mask_cpu

logging.disable(logging.WARNING)
from edge_ad.models import create_model


def official_net_cfg(ho: bool):
    """`net:` of experiments/MVTec-AD/config.yaml after utils/misc_helper.update_config (224 input)."""
    rec = dict(pos_embed_type="learned", proj_head_dim=256, hidden_dim=256, nhead=8, dropout=0.1, dim_feedforward=1024,
               proj_mlp_ratio=4.0, num_in_proj_layers=1, num_out_proj_layers=1, num_encoder_layers=4,
               num_decoder_layers=4, activation="relu", proj_type="mlp", memory_module={"num_embeds": 196},
               feature_jitter=NS(scale=3.2, prob=1.0, jitter_wise="spatial"),
               neighbor_mask=NS(neighbor_size=[7, 7], mask=[True, True, True]),
               initializer={"method": "xavier_uniform"}, predict=NS(avgpool_size=[16, 16]), feature_size=[14, 14])
    if ho:  # not in the repo; edge-ad's inferred Ho (2+2 wide transformer layers, no memory)
        rec.update(proj_type="transformer", num_in_proj_layers=2, num_out_proj_layers=2, memory_module=None)
    return [
        {"name": "backbone", "type": "models.backbones.wide_resnet50_2", "frozen": True,
         "kwargs": {"pretrained": False, "outlayers": [1, 2, 3], "outstrides": [4, 8, 16]}},
        {"name": "neck", "prev": "backbone", "type": "models.necks.MFAA",
         "kwargs": {"outstrides": [16], "outplanes": [1792]}},
        {"name": "reconstruction", "prev": "neck", "type": "models.reconstructions.DualAD", "kwargs": rec},
    ]


def randomise(off):
    g = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for m in off.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, generator=g)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.3, 0.8, generator=g); m.bias.normal_(0, 0.1, generator=g)
                m.running_mean.normal_(0, 0.1, generator=g); m.running_var.uniform_(0.5, 1.5, generator=g)
        for m in off.reconstruction.modules():
            if isinstance(m, nn.Linear) and m.bias is not None:
                m.bias.normal_(0, 0.05, generator=g)
            elif isinstance(m, nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5, generator=g); m.bias.normal_(0, 0.1, generator=g)


def maxdiff(a, b):
    return (a.double() - b.double()).abs().max().item()


def reldiff(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def capture(pairs):
    """forward hooks on (name, module) -> dict name -> output (first element of a tuple, list kept)."""
    out, hs = {}, []
    for name, mod in pairs:
        def hook(m, i, o, name=name):
            out[name] = o
        hs.append(mod.register_forward_hook(hook))
    return out, hs


@contextlib.contextmanager
def dropout_p(models, p):
    saved = [(m, m.p) for mod in models for m in mod.modules() if isinstance(m, nn.Dropout)]
    for m, _ in saved:
        m.p = p if p is not None else m.p
    try:
        yield
    finally:
        for m, old in saved:
            m.p = old


def run(variant):
    ho = variant == "dualad-ho"
    print(f"\n=== {variant} (batch {args.batch}, 224x224) ===")
    torch.manual_seed(0)
    off = ModelHelper(official_net_cfg(ho)).cpu()
    randomise(off)
    ckpt = tempfile.mkdtemp() + "/official_dualad_random.pth"
    torch.save({"state_dict": off.state_dict()}, ckpt)
    ours = create_model(variant)
    ours.load_official_checkpoint(ckpt)
    if args.double:
        off.double(); ours.double()
        ours.head.resize_matrix = ours.head.resize_matrix.float()  # edge-ad's score head is fp32 by design
    print(f"official params (excl. layer4/fc) {sum(p.numel() for n, p in off.named_parameters() if not n.startswith(('backbone.layer4', 'backbone.fc'))):,}"
          f"  edge-ad params {sum(p.numel() for p in ours.parameters()):,}")

    R, C = off.reconstruction, ours.cdbn
    om = R.generate_mask([14, 14], [7, 7])
    print(f"neighbour mask: official -inf at {torch.isinf(om).sum().item()} entries, edge-ad {MASKVAL(C)} at "
          f"{(C.attn_mask != 0).sum().item()}, same positions: {torch.equal(torch.isinf(om), C.attn_mask != 0)}")

    names_o = [("in_proj", R.in_proj), ("encoder", R.encoder), ("decoder", R.decoder), ("out_proj", R.out_proj)]
    names_m = [("in_proj", C.in_proj), ("encoder", C.encoder), ("decoder", C.decoder), ("out_proj", C.out_proj)]
    if R.memory_modules is not None:
        names_o += [(f"memory{i}", m) for i, m in enumerate(R.memory_modules)]
        names_m += [(f"memory{i}", m) for i, m in enumerate(C.memory_modules)]
    if R.proj_encoder is not None:
        names_o += [("proj_encoder", R.proj_encoder), ("proj_decoder", R.proj_decoder)]
        names_m += [("proj_encoder", C.proj_encoder), ("proj_decoder", C.proj_decoder)]
    rows = []

    # ---- evaluation ----------------------------------------------------------------------------------------
    torch.manual_seed(1)
    x = torch.randn(args.batch, 3, 224, 224, dtype=torch.float64 if args.double else torch.float32)
    off.eval(); ours.eval()
    ho_, hh_o = capture(names_o)
    hm_, hh_m = capture(names_m)
    with torch.no_grad():
        oo = off({"image": x})
        feat = ours.features(x)
        rec = ours.reconstruct(feat)
        amap, _score = ours.head(feat, rec)
        amap2, score2 = ours(x)
    for h in hh_o + hh_m:
        h.remove()
    fa = oo["feature_align"]
    rows.append(("fused features [B,1792,14,14]", f"|v| <= {fa.abs().max():.2f}", maxdiff(feat, fa)))
    for name, _ in names_o:
        a, b = ho_[name], hm_[name]
        if isinstance(a, tuple):  # official MemoryModule returns (attn_weight, attn_out)
            a = a[1]
        if isinstance(a, list):
            for i, (ai, bi) in enumerate(zip(a, b)):
                rows.append((f"{name} layer {i} output", f"|v| <= {ai.abs().max():.2f}", maxdiff(bi, ai)))
        else:
            rows.append((f"{name} output", f"|v| <= {a.abs().max():.2f}", maxdiff(b, a)))
    fr = oo["feature_rec"]
    rows.append(("reconstruction feature_rec", f"|v| <= {fr.abs().max():.2f}", maxdiff(rec, fr)))
    pp, pi = oo["pred_pixel"], oo["pred_image"]
    rows.append(("pixel map pred_pixel [B,1,224,224]", f"max {pp.max():.4g}", maxdiff(amap, pp)))
    rows.append(("pixel map, model forward()", f"max {pp.max():.4g}", maxdiff(amap2, pp)))
    rows.append(("image score pred_image", f"{[round(v, 6) for v in pi.tolist()]}", maxdiff(score2, pi)))

    if not args.no_e2e:
        e2e(off, ours, variant)

    # ---- training: loss and gradients, same seed before both forwards ------------------------------------------
    crit = FeatureMSELoss(weight=1.0)
    gnames = ["in_proj.0.weight" if not ho else "in_proj.weight", "encoder.layers.0.attn.q_proj.weight",
              "decoder.layers.3.ffn.fc2.weight", "decoder.layers.0.attn1.k_proj.weight",
              ("out_proj.2.weight" if not ho else "out_proj.weight")]
    gnames += ["memory_modules.0.weight"] if not ho else ["proj_decoder.learned_queries.0.weight",
                                                          "proj_encoder.layers.0.attn.v_proj.weight"]
    if args.double:  # the official to_anomaly draws randn in the default dtype, edge-ad in the tokens' dtype
        torch.set_default_dtype(torch.float64)
    for p_label, p in (("dropout 0.1 (as trained)", None), ("dropout 0", 0.0)):
        off.train(); ours.train()
        off.zero_grad(set_to_none=True); ours.zero_grad(set_to_none=True)
        with dropout_p([off, ours], p):
            torch.manual_seed(7)
            lo = crit(off({"image": x}))
            lo.backward()
            torch.manual_seed(7)
            lm = ours.training_loss(x, 0)
            lm.backward()
        rows.append((f"train loss, {p_label}", f"off {lo.item():.6f} ours {lm.item():.6f}", abs(lo.item() - lm.item())))
        pm = dict(C.named_parameters())
        po = dict(R.named_parameters())
        rel = {n: reldiff(pm[n].grad, po[n].grad) for n in po if po[n].grad is not None and n in pm}
        big = {n: r for n, r in rel.items() if po[n].grad.norm() > 1e-6 * max(g.grad.norm() for g in po.values() if g.grad is not None)}
        wn = max(big, key=big.get)
        for n in gnames:
            rows.append((f"  grad {n} (relative)", f"|g| {po[n].grad.norm():.3g}", reldiff(pm[n].grad, po[n].grad)))
        rows.append((f"  grad, worst of {len(big)}/{len(rel)} params with non-vanishing grad: {wn}", f"|g| {po[wn].grad.norm():.3g}", big[wn]))
        vn = sorted(set(rel) - set(big))
        if vn:
            rows.append((f"  grad, {len(vn)} params whose exact grad is ~0 (e.g. {vn[0]}), max abs", "",
                         max(maxdiff(pm[n].grad, po[n].grad) for n in vn)))
        pos_o = po[next(n for n in po if n.endswith("row_embed"))].grad  # the one shared module, first name
        rows.append(("  grad pos_embed.row_embed (shared; relative)", f"|g| {pos_o.norm():.3g}",
                     reldiff(pm["pos_embed.row_embed"].grad, pos_o)))
    torch.set_default_dtype(torch.float32)
    bb_grad = any(p.grad is not None for p in ours.backbone.parameters())
    print(f"backbone frozen: official requires_grad {any(p.requires_grad for p in off.backbone.parameters())}, "
          f"edge-ad grads {bb_grad}; BN in eval during training: official {not off.backbone.training}, "
          f"edge-ad {not ours.backbone.training}")
    w = max(len(r[0]) for r in rows)
    print(f"| {'quantity'.ljust(w)} | scale | max abs difference (official vs edge-ad) |")
    for name, scale, d in rows:
        print(f"| {name.ljust(w)} | {scale} | {d:.3e} |")


def e2e(off, ours, variant):
    """Image files -> metrics: the official MVTecDataset_test + validate()'s collection + eval_helper.performances
    (config.yaml's seven metrics) against edge-ad's --protocol official path, same weights, same files."""
    import importlib.util
    import tempfile
    from pathlib import Path

    import numpy as np
    import yaml
    from datasets.mvtec_dataset import MVTecDataset_test
    from sbs_common import compare, compare_inputs, edge_ad_inputs, edge_ad_metrics, make_images, stub
    from torch.utils.data import DataLoader
    from torchvision import transforms

    cfg = yaml.safe_load(open(f"{args.official}/experiments/MVTec-AD/config.yaml"))
    norm, size, metrics = cfg["dataset"]["normalize"], cfg["dataset"]["input_size"], cfg["evaluator"]["metrics"]
    root = make_images(tempfile.mkdtemp() + "/data", hw=(330, 290), per_category=2)
    ds = MVTecDataset_test(image_dir=str(root.parent), classes=[root.name], input_size=size,
                           data_transform=transforms.Compose([transforms.ToTensor(),
                                                              transforms.Normalize(norm["mean"], norm["std"])]),
                           gt_transform=transforms.Compose([transforms.ToTensor()]), use_cache=False)
    cols = {k: [] for k in ("preds_pixel", "preds_image", "masks", "labels", "classes")}
    inputs = {}
    with torch.no_grad():
        for batch in DataLoader(ds, batch_size=4):
            out = off(batch)
            cols["preds_pixel"].append(out["pred_pixel"].numpy())
            cols["preds_image"].append(out["pred_image"].numpy())
            cols["masks"].append(out["mask"].numpy().astype(int))
            cols["labels"].append(out["label"].numpy())
            cols["classes"].append(np.asarray(out["cls_name"]))
            inputs.update({str(Path(f).resolve()): (i.numpy(), g[0].numpy().astype(int))
                           for f, i, g in zip(batch["file_name"], batch["image"], out["mask"])})
    compare_inputs(inputs, edge_ad_inputs(ours, variant, root.parent, tuple(size)))
    stub("tabulate", tabulate=lambda *a, **k: "")  # STAND-IN: eval_helper prints its report with tabulate
    spec = importlib.util.spec_from_file_location("dualad_eval_helper", f"{args.official}/utils/eval_helper.py")
    helper = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helper)
    ret = helper.performances({k: np.concatenate(v, axis=0) for k, v in cols.items()}, metrics)
    names = {"image_auc": "image_auroc", "pixel_auc": "pixel_auroc", "pixel_aupro": "aupro"}
    official = {names.get(m, m): float(ret[f"{root.name}_{m}"]) for m in metrics}
    compare(official, edge_ad_metrics(ours, variant, root.parent))


def MASKVAL(C):
    return f"{C.attn_mask.min().item():g}"


for v in (["dualad-he", "dualad-ho"] if args.variant == "both" else [args.variant]):
    run(v)
