"""DualAD: parameter counts against the spec, equivalence with the official formulation (einsum attention, -inf
loop-built mask, F.threshold memory, MFAA upsample+pool, interpolate-based scoring, to_anomaly + FeatureMSELoss),
backbone freezing and weight loading, a TensorRT-clean ONNX export with ORT parity for He and Ho, and the
lab-to-line flow synth -> train -> eval -> export -> Detector for dualad-he-tiny.

The official code is transcribed here as plain functions over the model's own modules, so every restructuring made
for export (constant mask with a finite fill, MatMul attention, torch.where shrink, pooled MFAA, matrix upsample,
expanded learned queries, position embedding computed once) is checked against the original maths.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import save_file
from torch import nn

from edge_ad.errors import ConfigError
from edge_ad.models import count_parameters, create_model
from edge_ad.models.dualad import (
    CDBN,
    DualAD,
    MemoryModule,
    MultiHeadAttention,
    add_feature_noise,
    fuse_features,
    neighbour_mask,
)


@pytest.fixture(scope="module")
def he_tiny(build_tiny) -> DualAD:
    return build_tiny("dualad-he-tiny")


@pytest.fixture(scope="module")
def ho_tiny(build_tiny) -> DualAD:
    return build_tiny("dualad-ho-tiny")


def _images(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 224, 224, generator=g)


# -- sizes --------------------------------------------------------------------------------------------------

def _count(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def test_parameter_counts_match_the_spec():
    """Spec 7.3: CDBN He 30.66 M, Ho 70.50 M; paper totals add the whole WRN50-2 without classifier (66.83 M)."""
    import timm

    he_total, he_cdbn = count_parameters("dualad-he")
    ho_total, ho_cdbn = count_parameters("dualad-ho")
    assert (he_cdbn, ho_cdbn) == (30_656_768, 70_499_584)
    assert (round(he_cdbn / 1e6, 2), round(ho_cdbn / 1e6, 2)) == (30.66, 70.50)
    trunk = he_total - he_cdbn
    assert trunk == ho_total - ho_cdbn == 24_862_528  # WRN50-2 stem + layers 1-3 (layer4 never built)
    with torch.device("meta"):
        wrn = timm.create_model("wide_resnet50_2", pretrained=False, num_classes=0)
    full = sum(p.numel() for p in wrn.parameters())
    assert round(full / 1e6, 2) == 66.83 and full - _count(wrn.layer4) == trunk
    assert (round((he_cdbn + full) / 1e6, 1), round((ho_cdbn + full) / 1e6, 1)) == (97.5, 137.3)

    with torch.device("meta"):
        he, ho = create_model("dualad-he"), create_model("dualad-ho")
    c = he.cdbn
    parts = [_count(c.in_proj), _count(c.out_proj), _count(c.encoder), _count(c.decoder), _count(c.memory_modules)]
    assert [round(p / 1e6, 2) for p in parts] == [11.54, 11.54, 3.16, 4.21, 0.20]
    c = ho.cdbn
    assert round((_count(c.in_proj) + _count(c.out_proj)) / 1e6, 2) == 3.67
    assert round(_count(c.proj_encoder) / 1e6, 2) == 25.19 and round(_count(c.proj_decoder) / 1e6, 2) == 33.99
    assert round(_count(c.pos_proj) / 1e6, 2) == 0.26 and c.memory_modules is None
    assert round((_count(c.encoder) + _count(c.decoder)) / 1e6, 2) == 7.37


def test_variant_configuration():
    with torch.device("meta"):
        he, ho = create_model("dualad-he"), create_model("dualad-ho")
        feat = he.features(torch.empty(1, 3, 224, 224))
    assert feat.shape == (1, 1792, 14, 14) and he.groups == (256, 512, 1024)
    assert he.preprocess.resize == he.preprocess.crop == (224, 224)
    assert [m.in_features for m in he.cdbn.in_proj if isinstance(m, nn.Linear)] == [1792, 4096]
    assert [m.out_features for m in he.cdbn.out_proj if isinstance(m, nn.Linear)] == [4096, 1792]
    assert [tuple(m.weight.shape) for m in he.cdbn.memory_modules] == [(196, 256)] * 4
    assert all(m.shrink_thres == 1 / 196 for m in he.cdbn.memory_modules)
    assert he.cdbn.proj_encoder is None and len(he.cdbn.encoder.layers) == len(he.cdbn.decoder.layers) == 4
    layer = he.cdbn.encoder.layers[0]
    assert layer.attn.num_heads == 8 and layer.ffn.fc1.out_features == 1024 and layer.attn.dropout.p == 0.1
    assert he.cdbn.attn_mask.shape == (196, 196) and he.head.pool == 16 and he.jitter_scale == 3.2
    assert ho.cdbn.in_proj.out_features == 1024 and len(ho.cdbn.proj_encoder.layers) == 2
    wide = ho.cdbn.proj_decoder
    assert len(wide.layers) == 2 and [tuple(q.weight.shape) for q in wide.learned_queries] == [(196, 1024)] * 2
    assert wide.layers[0].attn1.num_heads == 8 and wide.layers[0].ffn.fc1.out_features == 4096
    assert not any(p.requires_grad for p in he.backbone.parameters())
    cfg = he.default_train_config()
    assert (cfg["optimizer"], cfg["lr"], cfg["weight_decay"], cfg["batch"], cfg["grad_clip"], cfg["seed"]) == (
        "adamw", 1e-4, 1e-4, 16, 0.1, 133)
    assert cfg["scheduler"] == "step" and cfg["gamma"] == 0.1 and cfg["iters"] == 272_400
    assert round(cfg["step_at"] * cfg["iters"]) == 1000 * 227  # StepLR after epoch 1000 of 1200
    from edge_ad.train.options import TRAIN_KEYS

    assert set(cfg) <= set(TRAIN_KEYS)


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="multiple of 16"):
        create_model("dualad-he-tiny", size=230)
    with pytest.raises(ConfigError, match=">= 128"):  # 7x7 masked window would cover the whole 7x7 token grid
        create_model("dualad-he-tiny", size=112)
    with pytest.raises(ConfigError, match="without cropping"):
        create_model("dualad-he-tiny", resize=256, crop=224)
    with pytest.raises(ConfigError, match="unknown option"):
        create_model("dualad-he-tiny", sizes=224)
    with pytest.raises(ConfigError, match="dropout"):
        create_model("dualad-he-tiny", dropout=1.5)
    with pytest.raises(ConfigError, match="no pretrained encoder weights"):
        create_model("dualad-he-tiny", pretrained=True)


# -- the official formulation, transcribed ------------------------------------------------------------------

def _official_mask(h: int, w: int, hm: int = 7, wm: int = 7) -> torch.Tensor:
    """`DualAD.generate_mask`, verbatim except `.cuda()`."""
    mask = torch.ones(h, w, h, w)
    for i1 in range(h):
        for j1 in range(w):
            mask[
                i1, j1, max(i1 - hm // 2, 0) : min(i1 + hm // 2 + 1, h), max(j1 - wm // 2, 0) : min(j1 + wm // 2 + 1, w)
            ] = 0
    mask = mask.view(h * w, h * w)
    return mask.float().masked_fill(mask == 0, float("-inf")).masked_fill(mask == 1, 0.0)


def _official_mha(m: MultiHeadAttention, query, key, value, mask):
    heads = m.num_heads

    def split(t):
        return t.reshape(t.shape[0], t.shape[1], heads, -1).permute(0, 2, 1, 3)

    q, k, v = split(m.q_proj(query)), split(m.k_proj(key)), split(m.v_proj(value))
    q = q * (q.shape[-1] ** -0.5)
    attn = torch.einsum("b h i d, b h j d -> b h i j", q, k)
    attn = F.softmax(attn + mask, dim=-1)
    out = torch.einsum("b h i j, b h j d -> b h i d", attn, v)
    return m.out_proj(out.permute(0, 2, 1, 3).flatten(2))


def _ffn(f, x):
    return f.fc2(f.act(f.fc1(x)))


def _official_enc(layer, x, pe, mask):
    q = k = pe + x
    x = layer.norm1(_official_mha(layer.attn, q, k, x, mask) + x)
    return layer.norm2(_ffn(layer.ffn, x) + x)


def _official_dec(layer, x, dec_out, enc_out, pe, mask):
    x = layer.norm1(_official_mha(layer.attn1, pe + x, pe + enc_out, enc_out, mask) + x)
    x = layer.norm2(_official_mha(layer.attn2, pe + x, pe + dec_out, dec_out, mask) + x)
    return layer.norm3(_ffn(layer.ffn, x) + x)


def _official_memory(m: MemoryModule, x):
    a = F.linear(F.normalize(x, dim=-1) * m.scale, F.normalize(m.weight, dim=-1))
    a = F.threshold(F.softmax(a, dim=-1), m.shrink_thres, 0)
    return F.linear(F.normalize(a, p=1, dim=-1), m.weight.transpose(0, 1))


def _official_pos(c: CDBN):
    g = c.pos_embed.grid
    col, row = c.pos_embed.col_embed, c.pos_embed.row_embed
    return torch.cat([torch.stack([col] * g, dim=0), torch.stack([row] * g, dim=1)], dim=-1).flatten(0, 1).unsqueeze(0)


def _official_cdbn(c: CDBN, x, mask):
    pe = _official_pos(c)
    x = c.in_proj(x)
    if c.proj_encoder is not None:
        for layer in c.proj_encoder.layers:
            x = _official_enc(layer, x, c.pos_proj(pe), mask)
    mems = list(torch.split(x, c.cfg.hidden_dim, dim=-1))
    if c.memory_modules is not None:
        mems = [_official_memory(m, f) for f, m in zip(mems, c.memory_modules)]
    enc = sum(mems)
    for layer in c.encoder.layers:
        enc = _official_enc(layer, enc, pe, mask)
    y, outs = enc, []
    for feat, layer in zip(mems, c.decoder.layers):
        y = _official_dec(layer, feat, y, enc, pe, mask)
        outs.append(y)
    x = torch.cat(outs, dim=-1)
    if c.proj_decoder is not None:
        feats = [torch.stack([q.weight] * x.shape[0], dim=0) for q in c.proj_decoder.learned_queries]
        y = x
        for feat, layer in zip(feats, c.proj_decoder.layers):
            y = _official_dec(layer, feat, y, x, c.pos_proj(pe), mask)
        x = y
    return c.out_proj(x)


def _official_neck(feats, strides):
    """MFAA: nearest upsample every map to the finest stride, concatenate, average-pool to stride 16."""
    align = min(strides[0], 16)
    up = [nn.Upsample(scale_factor=s / align)(f) for f, s in zip(feats, strides)]
    return nn.AvgPool2d(16 // align, 16 // align)(torch.cat(up, dim=1))


def _official_score(groups, fa, fr):
    a = [
        torch.mean((r - a_) ** 2, dim=1, keepdim=True).sqrt() for a_, r in zip(fa.split(groups, 1), fr.split(groups, 1))
    ]
    amap = torch.cat(a, dim=1).prod(dim=1, keepdim=True)
    pix = F.interpolate(amap, scale_factor=16, mode="bilinear", align_corners=True)
    return pix, F.avg_pool2d(pix, (16, 16), stride=1).flatten(1).max(dim=1)[0]


def _official_forward(m: DualAD, x):
    feats = m.backbone(x)
    fa = _official_neck(feats, m.backbone.strides)
    b, c, h, w = fa.shape
    rec = _official_cdbn(m.cdbn, fa.flatten(2).transpose(1, 2), _official_mask(h, w))
    return _official_score(list(m.groups), fa, rec.transpose(1, 2).reshape(b, c, h, w))


def test_neighbour_mask_is_the_official_one_with_a_finite_fill():
    ref = _official_mask(14, 14)
    ours = neighbour_mask(14)
    assert torch.equal(ref == 0, ours == 0) and (ours[ref != 0] == -1e4).all()
    # neighbour-MASKED attention: the 7x7 window around the query (itself included) is what gets blocked
    assert int((ours[0] == -1e4).sum()) == 16 and int((ours[7 * 14 + 7] == -1e4).sum()) == 49  # corner 4x4, centre 7x7
    assert (ours.diagonal() == -1e4).all()
    logits = torch.randn(3, 196, 196) * 20
    torch.testing.assert_close((logits + ours).softmax(-1), (logits + ref).softmax(-1), rtol=0, atol=0)


def test_pooled_neck_equals_official_mfaa(he_tiny):
    torch.manual_seed(0)
    feats = [torch.randn(2, 8, 56, 56), torch.randn(2, 16, 28, 28), torch.randn(2, 32, 14, 14)]
    torch.testing.assert_close(fuse_features(feats, (4, 8, 16)), _official_neck(feats, (4, 8, 16)))


def test_memory_read_equals_official_and_shrinks():
    torch.manual_seed(0)
    m = MemoryModule(196, 32)
    torch.testing.assert_close(m.weight.norm(dim=-1), torch.ones(196))
    x = torch.randn(2, 50, 32) * 3
    torch.testing.assert_close(m(x), _official_memory(m, x))
    # with sharper logits most items fall below 1/M and are dropped; the read stays a convex combination
    m.scale = 20.0
    out = m(x)
    torch.testing.assert_close(out, _official_memory(m, x))
    a = F.softmax(F.normalize(x, dim=-1) * 20.0 @ F.normalize(m.weight, dim=-1).t(), -1)
    assert ((a > 1 / 196).sum(-1) < 196).all()


@pytest.mark.parametrize("name", ["dualad-he-tiny", "dualad-ho-tiny"])
def test_forward_equals_the_official_formulation(name, he_tiny, ho_tiny):
    m = he_tiny if name == "dualad-he-tiny" else ho_tiny
    x = _images(2)
    with torch.no_grad():
        amap, score = m(x)
        ref_map, ref_score = _official_forward(m, x)
    assert amap.shape == (2, 1, 224, 224) and score.shape == (2,) and amap.dtype == torch.float32
    torch.testing.assert_close(amap, ref_map, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(score, ref_score, rtol=1e-4, atol=1e-6)


def test_training_loss_equals_official_and_trains_only_the_cdbn():
    """Dropout off so the official to_anomaly + FeatureMSELoss can be replayed with the same noise."""
    torch.manual_seed(0)
    m = create_model("dualad-he-tiny", dropout=0.0).train()
    assert not m.backbone.training and m.cdbn.training  # frozen BatchNorm statistics
    x = _images(2, seed=1)
    bn_before = m.backbone.bn1.running_mean.clone()
    torch.manual_seed(5)
    loss = m.training_loss(x, step=0)
    with torch.no_grad():
        fa = _official_neck(m.backbone(x), m.backbone.strides)
        tok = fa.flatten(2).transpose(1, 2)
        torch.manual_seed(5)
        noisy = tok + torch.randn(tok.shape) * tok.var(dim=1, keepdim=True).sqrt() * 3.2
        rec = _official_cdbn(m.cdbn, noisy, _official_mask(14, 14)).transpose(1, 2).reshape(fa.shape)
        g = list(m.groups)
        ref = sum(F.mse_loss(r, a) for r, a in zip(rec.split(g, 1), fa.split(g, 1)))
    torch.testing.assert_close(loss, ref, rtol=1e-4, atol=1e-6)
    loss.backward()
    assert torch.equal(m.backbone.bn1.running_mean, bn_before)
    assert {id(p) for p in m.trainable_parameters()} == {id(p) for p in m.cdbn.parameters()}
    assert all(p.grad is not None for p in m.cdbn.parameters())
    assert all(p.grad is None for p in m.backbone.parameters())


def test_feature_noise_is_scaled_by_the_spatial_std():
    torch.manual_seed(0)
    tok = torch.randn(4, 196, 8) * torch.tensor([0.5, 1, 2, 4, 0.1, 3, 1, 1])
    noise = torch.stack([add_feature_noise(tok, 3.2) - tok for _ in range(200)])
    ratio = noise.std(dim=(0, 2)) / (3.2 * tok.std(dim=1))
    assert ((ratio - 1).abs() < 0.05).all()


# -- the export face ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["dualad-he-tiny", "dualad-ho-tiny"])
def test_onnx_export_is_tensorrt_clean_and_matches(name, he_tiny, ho_tiny):
    import onnxruntime as ort

    from edge_ad.export.graph_check import check_graph
    from edge_ad.export.onnx_export import PackagedModel, export_onnx

    m = he_tiny if name == "dualad-he-tiny" else ho_tiny
    proto = export_onnx(m)
    assert check_graph(proto) == []
    ops = {n.op_type for n in proto.graph.node}
    assert not ops & {"Einsum", "Resize", "RandomNormal", "RandomNormalLike", "Dropout"}
    names = [n.name for n in proto.graph.node]
    assert any(n.startswith("/model/head/") for n in names)  # fp32 pattern the precision policy relies on
    assert any(n.startswith("/model/cdbn/memory_modules.") for n in names) == (m.cdbn.memory_modules is not None)
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(3, 224, 224, 3), dtype=np.uint8)  # batch 3: not the traced batch 2
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    amap, score = sess.run(["anomaly_map", "score"], {"image": imgs})
    with torch.no_grad():
        ref_map, ref_score = PackagedModel(m, m.preprocess)(torch.from_numpy(imgs))
    assert amap.shape == (3, 1, 224, 224)
    assert np.abs(amap - ref_map.numpy()).max() <= 1e-4
    assert np.abs(score - ref_score.numpy()).max() <= 1e-4


# -- backbone weights ---------------------------------------------------------------------------------------

def test_backbone_weights_load_from_a_full_resnet_checkpoint(he_tiny, tmp_path: Path):
    """A torchvision/timm checkpoint carries layer4 and fc: dropped; anything else missing or extra is an error."""
    from edge_ad.models.dualad import _tiny_backbone

    torch.manual_seed(1)
    full = _tiny_backbone()
    sd = {k: v.clone() for k, v in full.state_dict().items()}
    sd["fc.weight"], sd["fc.bias"] = torch.zeros(10, 128), torch.zeros(10)
    path = tmp_path / "resnet.safetensors"
    save_file(sd, str(path))
    m = create_model("dualad-he-tiny", weights=str(path))
    for k, v in m.backbone.state_dict().items():
        assert torch.equal(v, sd[k]), k
    assert any(k.startswith("layer4.") for k in sd) and m.encoder_weights.startswith("file:")

    torch.save({k: v for k, v in sd.items() if k != "layer2.0.conv1.weight"}, tmp_path / "missing.pth")
    with pytest.raises(ConfigError, match=r"1 missing key\(s\) \['layer2.0.conv1.weight'\]"):
        create_model("dualad-he-tiny", weights=str(tmp_path / "missing.pth"))
    torch.save({**sd, "head.weight": torch.zeros(3)}, tmp_path / "unexpected.pth")
    with pytest.raises(ConfigError, match=r"unexpected key\(s\) \['head.weight'\]"):
        create_model("dualad-he-tiny", weights=str(tmp_path / "unexpected.pth"))
    bad = dict(sd, **{"conv1.weight": torch.zeros(64, 3, 3, 3)})
    torch.save(bad, tmp_path / "shape.pth")
    with pytest.raises(ConfigError, match="do not fit"):
        create_model("dualad-he-tiny", weights=str(tmp_path / "shape.pth"))


def _official_layout(m: DualAD, resnet_extra: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The key layout of an official checkpoint (DDP `module.` prefix, ModelHelper `backbone`/`reconstruction`,
    the shared position embedding stored under every layer that holds it, Ho's `abs_pos_embed` = Sequential(pos,
    Linear))."""
    sd = m.state_dict()
    out = {f"module.backbone.{k[len('backbone.'):]}": v.clone() for k, v in sd.items() if k.startswith("backbone.")}
    out.update({f"module.backbone.{k}": v for k, v in resnet_extra.items()})
    c = m.cdbn
    stacks = [("encoder", c.encoder, ""), ("decoder", c.decoder, "")]
    if c.proj_encoder is not None:
        stacks += [("proj_encoder", c.proj_encoder, "0."), ("proj_decoder", c.proj_decoder, "0.")]
    for k, v in sd.items():
        if k.startswith("cdbn.") and not k.startswith(("cdbn.pos_embed.", "cdbn.pos_proj.")):
            out[f"module.reconstruction.{k[len('cdbn.'):]}"] = v.clone()
    for name, stack, sub in stacks:
        for i in range(len(stack.layers)):
            pre = f"module.reconstruction.{name}.layers.{i}.abs_pos_embed."
            for p in ("row_embed", "col_embed"):
                out[pre + sub + p] = sd[f"cdbn.pos_embed.{p}"].clone()
            if sub:
                out[pre + "1.weight"], out[pre + "1.bias"] = sd["cdbn.pos_proj.weight"], sd["cdbn.pos_proj.bias"]
    return out


@pytest.mark.parametrize("name", ["dualad-he-tiny", "dualad-ho-tiny"])
def test_official_checkpoint_layout_loads(name, he_tiny, ho_tiny, tmp_path: Path):
    src = he_tiny if name == "dualad-he-tiny" else ho_tiny
    official = _official_layout(src, {"layer4.0.conv1.weight": torch.zeros(1), "fc.weight": torch.zeros(1)})
    torch.save({"state_dict": official}, tmp_path / "ckpt.pth")
    torch.manual_seed(7)
    m = create_model(name).eval()
    m.load_official_checkpoint(tmp_path / "ckpt.pth")
    x = _images(1)
    with torch.no_grad():
        torch.testing.assert_close(m(x), src(x), rtol=0, atol=0)
    assert m.encoder_weights.startswith("file:")

    key = next(k for k in official if k.endswith("decoder.layers.1.abs_pos_embed.row_embed"))
    torch.save({**official, key: official[key] + 1}, tmp_path / "differ.pth")
    with pytest.raises(ConfigError, match="copies of the shared"):
        m.load_official_checkpoint(tmp_path / "differ.pth")
    torch.save({k: v for k, v in official.items() if "memory_modules" not in k and "learned_queries" not in k},
               tmp_path / "partial.pth")
    with pytest.raises(ConfigError, match="missing key"):
        m.load_official_checkpoint(tmp_path / "partial.pth")
    other = ho_tiny if src is he_tiny else he_tiny
    torch.save(_official_layout(other, {}), tmp_path / "other.pth")
    with pytest.raises(ConfigError, match="not an official checkpoint"):
        m.load_official_checkpoint(tmp_path / "other.pth")


# -- lab to line --------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_synth_train_eval_export_detector(tmp_path: Path):
    import cv2

    from edge_ad.cli.main import main
    from edge_ad.data.synth import generate
    from edge_ad.evaluate import rundir
    from edge_ad.export.exporter import export_package
    from edge_ad.export.onnx_export import PackagedModel
    from edge_ad.runtime import Detector

    data, run = tmp_path / "data", tmp_path / "run"
    generate(data, per_category=6, size=128, seed=3)
    rc = main(["train", "--model", "dualad-he-tiny", "--data", str(data), "--out", str(run), "--iters", "3",
               "--batch", "4", "--no-pretrained", "--workers", "0", "--no-progress", "--val-fraction", "0.2"])
    assert rc == 0
    cfg = yaml.safe_load((run / rundir.CONFIG).read_text())
    assert cfg["optimizer"] == "adamw" and cfg["scheduler"] == "step" and cfg["seed"] == 133
    steps = [json.loads(line)["step"] for line in (run / rundir.TRAIN_LOG).read_text().splitlines()]
    assert steps[-1] == 3

    out = tmp_path / "m.json"
    assert main(["eval", "--run", str(run), "--json", str(out), "--no-progress"]) == 0
    rep = json.loads(out.read_text())
    assert {"image_auroc", "pixel_auroc", "aupro"} <= set(rep["mean"])

    pkg, summary = export_package(run=str(run), out=tmp_path / "pkg")
    assert summary["parity"]["max_abs_map_diff"] <= 1e-4
    man = json.loads((pkg / "manifest.json").read_text())
    assert man["model"]["family"] == "dualad" and man["model"]["untrained"] is False
    assert man["outputs"]["anomaly_map"] == {"height": 224, "width": 224, "dtype": "float32"}
    assert man["constants"]["feature_groups"] == [16, 32, 64] and man["constants"]["memory"]["items"] == 196
    assert man["thresholds"]["image"]["value"] > 0

    model, _, _ = rundir.load_run(run)
    img = cv2.imread(str(next(data.glob("*/test/*/*.png"))))
    with torch.no_grad():
        _, ref = PackagedModel(model, model.preprocess)(torch.from_numpy(model.preprocess.apply(img)[None]))
    res = Detector.load(pkg, backend="onnxruntime").predict(img)
    assert abs(res.score - float(ref[0])) <= 1e-4
    assert res.anomaly_map.shape == img.shape[:2] and res.status in ("OK", "NG")
