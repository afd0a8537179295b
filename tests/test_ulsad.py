"""ULSAD: parameter counts against the spec, equality with the official code's formulas (channel averaging,
distance, attention, FRN/AE layout, map order), constants (mean/std, quantiles) in runs and packages, their
re-derivation on converted graphs, and synth -> train -> eval (logical vs structural) -> export -> Detector."""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from safetensors.torch import save_file

from edge_ad.errors import ConfigError
from edge_ad.models import count_parameters, create_model
from edge_ad.models.ulsad import attention, distance, map_head, quantile_pair

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def tiny(build_tiny):
    return build_tiny("ulsad-tiny")


def _kornia_blur(x: torch.Tensor, sigma: float = 4.0) -> torch.Tensor:
    """Anomalib GaussianBlur2d(sigma 4): 33x33 normalised kernel (kornia 0.6), reflect 'same' padding."""
    k = 2 * int(4.0 * sigma + 0.5) + 1
    t = torch.arange(k, dtype=torch.float64) - k // 2
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = g / g.sum()
    k2 = (g[:, None] @ g[None, :]).to(x.dtype)
    return F.conv2d(F.pad(x, (k // 2,) * 4, mode="reflect"), (k2 / k2.sum())[None, None])


def _official_distance(a: torch.Tensor, b: torch.Tensor, lam: float) -> torch.Tensor:
    d = torch.mean(torch.pow(a - b, 2), dim=1)
    return d + lam * (1 - F.cosine_similarity(a, b))


def _official_attn(query: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:  # compute_crossattn(kv, query)
    n, c, h, w = kv.shape
    key = kv.reshape(n, c, -1).permute(0, 2, 1)
    q = query.reshape(n, c, -1).permute(0, 2, 1)
    probs = torch.softmax(torch.matmul(q, key.transpose(-1, -2)) / math.sqrt(c), dim=-1)
    return torch.matmul(probs, key).permute(0, 2, 1).reshape(n, c, h, w)


# -- sizes and configuration ----------------------------------------------------------------------------------

def test_parameter_counts_match_the_spec():
    with torch.device("meta"):
        m = create_model("ulsad")
    frn = sum(p.numel() for p in m.frn.parameters())
    ae = sum(p.numel() for p in m.ae.parameters())
    backbone = sum(p.numel() for p in m.backbone.parameters())
    assert (frn, ae, backbone) == (65_487_744, 1_030_720, 24_862_528)
    assert round(frn / 1e6, 2) == 65.49 and round(ae / 1e6, 2) == 1.03  # spec 3.1 / 3.2
    assert round((frn + ae + backbone) / 1e6, 1) == 91.4  # spec total, backbone to layer3
    assert count_parameters("ulsad") == (frn + ae + backbone, frn + ae)  # frozen backbone; AE BN has no affine


def test_variant_configuration():
    with torch.device("meta"):
        m = create_model("ulsad")
    assert m.preprocess.resize == (256, 256) and m.preprocess.crop == (256, 256)
    assert (m.target_dim, m.group, m.grid) == (384, 4, 32) and m.head.shape == (256, 32)
    assert m.backbone.feature_info.channels() == [512, 1024]
    assert (m.lambda_l, m.lambda_g, m.lambda_a) == (0.5, 0.5, 0.5)
    assert create_model("ulsad-tiny", lambda_g=0.3).lambda_a == 0.3  # the official wiring: lambda_a := lambda_g
    assert m.ae.up_sizes == (3, 8, 15, 31, 63, 32)
    bns = [mod for mod in m.ae.modules() if isinstance(mod, torch.nn.BatchNorm2d)]
    assert len(bns) == 12 and all(not b.affine and b.eps == 1e-4 for b in bns)
    assert m.frn.deconv3.out_channels == 768 and m.frn.deconv3.kernel_size == (5, 5)
    assert not any(p.requires_grad for p in m.backbone.parameters())
    m.train()
    assert m.frn.training and m.ae.training and not any(mod.training for mod in m.backbone.modules())
    cfg = m.default_train_config()
    assert (cfg["optimizer"], cfg["scheduler"], cfg["lr"], cfg["weight_decay"], cfg["batch"]) == (
        "adam", "constant", 2e-4, 2e-5, 8)
    assert (cfg["grad_clip"], cfg["seed"], cfg["iters"]) == (None, 40, 6000)


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="multiple of 64"):
        create_model("ulsad-tiny", crop=224)
    with pytest.raises(ConfigError, match="unknown option"):
        create_model("ulsad-tiny", image_size=256)
    with pytest.raises(ConfigError, match="test-only variant"):
        create_model("ulsad-tiny", pretrained=True)


# -- equality with the official formulas -----------------------------------------------------------------------

def test_channel_group_average_is_the_official_adaptive_pool(tiny):
    x = torch.randn(2, 3, 256, 256)
    with torch.no_grad():
        f2, f3 = tiny.backbone(x)
        f3 = F.interpolate(f3, size=f2.shape[-2:], mode="bilinear", align_corners=False)
        feats = torch.cat([f2, f3], 1)
        b, c, h, w = feats.shape
        ref = F.adaptive_avg_pool1d(feats.reshape(b, c, h * w).transpose(1, 2), tiny.target_dim)
        ref = ref.transpose(1, 2).reshape(b, tiny.target_dim, h, w)
        torch.testing.assert_close(tiny.pooled_features(x), ref)


def test_distance_and_attention_match_the_official_code():
    torch.manual_seed(0)
    a = torch.randn(2, 16, 5, 5, requires_grad=True)
    b = torch.relu(torch.randn(2, 16, 5, 5))
    b[0, :, 1, 1] = 0  # an all-zero ReLU output: cosine 0, never NaN
    b.requires_grad_(True)
    ours = distance(a, b, 0.5)
    ref = _official_distance(a, b, 0.5)
    torch.testing.assert_close(ours, ref)
    assert torch.isfinite(ours).all()
    g_ours = torch.autograd.grad(ours.sum(), (a, b))
    g_ref = torch.autograd.grad(ref.sum(), (a, b))
    for x, y in zip(g_ours, g_ref):
        torch.testing.assert_close(x, y)
    u, ae = torch.randn(2, 16, 4, 4), torch.randn(2, 16, 4, 4)
    torch.testing.assert_close(attention(u, u), _official_attn(u, u))  # teacher self-attention
    torch.testing.assert_close(attention(ae, u), _official_attn(ae, u))  # AE is the query, U key and value


def test_frn_layout_and_output_halves(tiny):
    acts: dict[str, torch.Tensor] = {}
    tiny.frn.bn3.register_forward_hook(lambda _m, _i, o: acts.__setitem__("bn3", o))
    with torch.no_grad():
        out = tiny.frn(torch.randn(2, 48, 32, 32))
    assert out.shape == (2, 96, 32, 32) and (out >= 0).all()  # 2 x target_dim, ReLU'd
    assert acts["bn3"].shape == (2, 192, 8, 8) and (acts["bn3"] < 0).any()  # no ReLU after conv3
    with torch.no_grad():
        assert tiny.ae(torch.randn(2, 3, 256, 256)).shape == (2, 48, 32, 32)


def test_map_head_is_upsample_then_reflect_blur():
    torch.manual_seed(0)
    d = torch.rand(3, 2, 32, 32, dtype=torch.float64)
    h = torch.from_numpy(map_head(32, 256))
    ref = _kornia_blur(F.interpolate(d.reshape(6, 1, 32, 32), size=256, mode="bilinear", align_corners=False))
    assert (h @ d @ h.T - ref.reshape(3, 2, 256, 256)).abs().max().item() < 1e-10
    torch.testing.assert_close(h.sum(1), torch.ones(256, dtype=torch.float64))  # so blur(affine) = affine(blur)


def test_forward_is_the_official_eval_branch(tiny):
    m = create_model("ulsad-tiny").eval()
    m.load_state_dict(tiny.state_dict())
    m.set_quantiles(torch.tensor([[0.8, 1.9], [0.3, 0.7]]))
    x = torch.randn(2, 3, 256, 256)
    with torch.no_grad():
        amap, score = m(x)
        u = m.features(x)
        rec, ae = m.frn(u), m.ae(x)
        ml = _official_distance(u, rec[:, :48], 0.5)[:, None]
        mg = _official_distance(ae, rec[:, 48:], 0.5)[:, None]
        ml = F.interpolate(ml, size=(256, 256), mode="bilinear")
        mg = F.interpolate(mg, size=(256, 256), mode="bilinear")
        ml = 0.1 * (ml - 0.8) / (1.9 - 0.8)
        mg = 0.1 * (mg - 0.3) / (0.7 - 0.3)
        ref = 0.5 * _kornia_blur(ml) + 0.5 * _kornia_blur(mg)
    torch.testing.assert_close(amap, ref, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(score, ref.amax(dim=(1, 2, 3)), atol=2e-5, rtol=1e-4)


def test_training_loss_is_the_official_sum_and_trains_frn_and_ae(tiny):
    m = create_model("ulsad-tiny")
    m.load_state_dict(tiny.state_dict())
    m.train()
    x = torch.randn(2, 3, 256, 256)
    bn = m.backbone.bn1.running_mean.clone()
    torch.manual_seed(1)
    loss = m.training_loss(x, step=0)
    with torch.no_grad():  # same BN batch statistics (train mode), official formula
        u = m.features(x)
        ae, rec = m.ae(x), m.frn(u)
        ref = (_official_distance(u, rec[:, :48], 0.5).mean()
               + _official_distance(_official_attn(u, u), _official_attn(ae, u), 0.5).mean()
               + _official_distance(ae, rec[:, 48:], 0.5).mean())
    torch.testing.assert_close(loss.detach(), ref)
    loss.backward()
    assert torch.equal(m.backbone.bn1.running_mean, bn)  # backbone BN frozen in train mode
    assert {id(p) for p in m.trainable_parameters()} == {id(p) for p in [*m.frn.parameters(), *m.ae.parameters()]}
    assert all(p.grad is not None for p in m.trainable_parameters())
    assert all(p.grad is None for p in m.backbone.parameters())


# -- constants -------------------------------------------------------------------------------------------------

def test_fit_constants_and_calibrate_follow_the_code(tiny):
    m = create_model("ulsad-tiny").eval()
    m.load_state_dict(tiny.state_dict())
    torch.manual_seed(2)
    imgs = torch.randn(6, 3, 256, 256)
    with torch.no_grad():
        m.fit_constants([{"image": imgs[:4]}, {"image": imgs[4:]}], torch.device("cpu"))
        y = m.pooled_features(imgs).double()
    torch.testing.assert_close(m.feat_mean.flatten().double(), y.mean(dim=(0, 2, 3)), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(
        m.feat_std.flatten().double(), y.permute(1, 0, 2, 3).reshape(48, -1).std(1, correction=0), atol=1e-6, rtol=1e-5
    )
    assert m.constants_fitted and not m.quantiles_set
    with torch.no_grad():
        unset_map, _ = m(imgs[:2])
        raw = m.raw_maps(imgs[:3])
        torch.testing.assert_close(unset_map, m.raw_maps(imgs[:2]).mean(1, keepdim=True))  # no normalisation yet
        # the anomalous image (label 1) is skipped, as in the code's map_norm_quantiles
        m.calibrate([{"image": imgs[:2], "label": torch.tensor([0, 0])},
                     {"image": imgs[2:4], "label": torch.tensor([0, 1])}], torch.device("cpu"))
    q = m.quantiles
    for br in range(2):
        ref = torch.quantile(raw[:, br].flatten(), torch.tensor([0.9, 0.995]))
        torch.testing.assert_close(q[br], ref)
        normed = (raw[:, br] - m.map_shift[0, br]) * m.map_scale[0, br]
        torch.testing.assert_close(torch.quantile(normed.flatten(), torch.tensor([0.9, 0.995])),
                                   torch.tensor([0.0, 0.1]), atol=1e-5, rtol=0)
    # quantiles survive a state-dict round trip, and the baked normalisation follows them
    fresh = create_model("ulsad-tiny")
    fresh.load_state_dict(m.state_dict())
    assert torch.equal(fresh.quantiles, q) and torch.equal(fresh.map_scale, m.map_scale)
    with pytest.raises(ConfigError, match="q_0.995 > q_0.9"):
        m.set_quantiles(torch.tensor([[1.0, 1.0], [0.0, 1.0]]))


def test_quantile_pair_subsamples_large_pools():
    v = torch.rand(2**24 + 1000)
    q = quantile_pair(v)
    assert q.shape == (2,) and abs(q[0].item() - 0.9) < 2e-3 and abs(q[1].item() - 0.995) < 2e-3


def test_backbone_weights_round_trip_and_strict_keys(tiny, tmp_path):
    sd = {k: v.clone() for k, v in tiny.backbone.state_dict().items()}
    full = {**sd, "layer4.0.conv1.weight": torch.zeros(1), "fc.weight": torch.zeros(2, 2)}  # classifier checkpoint
    save_file(full, str(tmp_path / "wrn.safetensors"))
    m = create_model("ulsad-tiny", weights=str(tmp_path / "wrn.safetensors"))
    for k, v in m.backbone.state_dict().items():
        assert torch.equal(v, sd[k]), k
    assert m.encoder_weights.startswith("file:")
    torch.save({k: v for k, v in sd.items() if k != "layer2.0.conv1.weight"}, tmp_path / "missing.pth")
    with pytest.raises(ConfigError, match=r"1 missing key\(s\) \['layer2.0.conv1.weight'\]"):
        create_model("ulsad-tiny", weights=str(tmp_path / "missing.pth"))
    torch.save({**sd, "head.weight": torch.zeros(3)}, tmp_path / "unexpected.pth")
    with pytest.raises(ConfigError, match=r"unexpected key\(s\) \['head.weight'\]"):
        create_model("ulsad-tiny", weights=str(tmp_path / "unexpected.pth"))


# -- lab to line -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """synth (a texture and an object with logical defects) -> train 2 iterations -> eval -> export."""
    from edge_ad.cli.main import main
    from edge_ad.data.synth import generate
    from edge_ad.export.exporter import export_package

    root = tmp_path_factory.mktemp("ulsad")
    data, run = root / "data", root / "run"
    generate(data, categories=["fabric", "screw_plate"], per_category=8, size=96, seed=5)
    assert main(["train", "--model", "ulsad-tiny", "--data", str(data), "--out", str(run), "--iters", "2",
                 "--batch", "4", "--no-pretrained", "--workers", "0", "--no-progress", "--val-fraction", "0.25"]) == 0
    assert main(["eval", "--run", str(run), "--json", str(root / "eval.json"), "--no-progress",
                 "--overlays", "0"]) == 0
    pkg, summary = export_package(run=str(run), out=root / "pkg")
    return root, data, run, pkg, summary


@pytest.mark.slow
def test_eval_reports_logical_and_structural_defects(pipeline):
    root = pipeline[0]
    rep = json.loads((root / "eval.json").read_text())
    kinds = rep["defect_kinds"]
    assert kinds["logical"]["n_images"] == 3 and kinds["logical"]["n_categories"] == 1  # screw_plate only
    assert kinds["structural"]["n_images"] == 10 and kinds["structural"]["n_categories"] == 2
    assert 0.0 <= kinds["logical"]["image_auroc"] <= 1.0
    assert {"missing_part", "extra_part", "misplaced_part"} <= set(rep["defect_types"]["screw_plate"])
    assert any("RANDOM-INIT" in n for n in rep["notes"])


@pytest.mark.slow
def test_package_carries_every_constant_in_graph_and_manifest(pipeline):
    from edge_ad.evaluate import rundir

    _, _, run, pkg, summary = pipeline
    model, _, _ = rundir.load_run(run)
    assert model.constants_fitted and model.quantiles_set  # fit_constants (train) and calibrate (held out) ran
    assert summary["parity"]["max_abs_map_diff"] <= 1e-4 and summary["parity"]["score_spearman"] >= 0.999
    man = json.loads((pkg / "manifest.json").read_text())
    c = man["constants"]
    assert c["status"] == {"channel_stats": "fitted", "quantiles": "calibrated"}
    np.testing.assert_allclose(c["channel_mean"], model.feat_mean.flatten().numpy(), rtol=1e-6)
    np.testing.assert_allclose(c["channel_std"], model.feat_std.flatten().numpy(), rtol=1e-6)
    q = model.quantiles.numpy()
    np.testing.assert_allclose([c["quantiles"][k] for k in ("qa_local", "qb_local", "qa_global", "qb_global")],
                               q.ravel(), rtol=1e-6)
    assert all(v > 0 for v in c["channel_std"]) and q[0, 1] > q[0, 0] and q[1, 1] > q[1, 0]
    # baked into the graph as named initializers with the same values
    g = onnx.load(str(pkg / "model.onnx"))
    inits = {t.name: numpy_helper.to_array(t) for t in g.graph.initializer}
    np.testing.assert_allclose(inits["model.feat_mean"].ravel(), c["channel_mean"], rtol=1e-6)
    np.testing.assert_allclose(inits["model.feat_std"].ravel(), c["channel_std"], rtol=1e-6)
    np.testing.assert_allclose(inits[c["rederive"]["shift_initializer"]].ravel(), q[:, 0], rtol=1e-6)
    np.testing.assert_allclose(inits[c["rederive"]["scale_initializer"]].ravel(), 0.1 / (q[:, 1] - q[:, 0]), rtol=1e-5)
    assert not {"Softmax", "Pad", "Einsum"} & {n.op_type for n in g.graph.node}  # attention is training-only


@pytest.mark.slow
def test_detector_predicts_the_pytorch_score(pipeline):
    import cv2

    from edge_ad.evaluate import rundir
    from edge_ad.export.onnx_export import PackagedModel
    from edge_ad.runtime import Detector

    _, data, run, pkg, _ = pipeline
    model, _, _ = rundir.load_run(run)
    img = cv2.imread(str(next(data.glob("screw_plate/test/missing_part/*.png"))))
    with torch.no_grad():
        _, ref = PackagedModel(model, model.preprocess)(torch.from_numpy(model.preprocess.apply(img)[None]))
    res = Detector.load(pkg, backend="onnxruntime").predict(img)
    assert abs(res.score - float(ref[0])) <= 1e-4 and res.anomaly_map.shape == img.shape[:2]


@pytest.mark.slow
def test_rederive_reproduces_then_updates_quantiles_on_a_converted_graph(pipeline):
    from edge_ad.data.mvtec import load_samples
    from edge_ad.export.constants import rederive_constants, rederive_package_constants
    from edge_ad.export.fp16 import convert_to_fp16
    from edge_ad.runtime.package import load_package

    _, data, run, pkg_dir, _ = pipeline
    pkg = load_package(pkg_dir)
    held = {str(p) for p in json.loads((run / "val_split.json").read_text())["holdout"]}
    good = [s for s in load_samples(data, None, split="train") if str(s.path) in held]
    fp32 = onnx.load(str(pkg.onnx_path()))
    c0 = pkg.manifest["constants"]["quantiles"]
    # on the fp32 graph and the same held-out images, the PyTorch calibration is reproduced
    _, same, info = rederive_package_constants(fp32, pkg, good)
    assert info["rederived"] and info["n_images"] == len(good)
    for k, v in c0.items():
        assert same["quantiles"][k] == pytest.approx(v, rel=1e-4), k
    # fp16 graph: new quantiles, written into the (still fp32) normalisation initializers
    half, _ = convert_to_fp16(fp32)
    new_graph, new, _ = rederive_package_constants(half, pkg, good)
    assert (
        new["status"]["quantiles"].startswith("re-derived")
        and new["channel_mean"] == pkg.manifest["constants"]["channel_mean"]
    )
    inits = {t.name: numpy_helper.to_array(t) for t in new_graph.graph.initializer}
    qa = np.array([new["quantiles"]["qa_local"], new["quantiles"]["qa_global"]])
    qb = np.array([new["quantiles"]["qb_local"], new["quantiles"]["qb_global"]])
    np.testing.assert_allclose(inits["model.map_shift"].ravel(), qa, rtol=1e-6)
    np.testing.assert_allclose(inits["model.map_scale"].ravel(), 0.1 / (qb - qa), rtol=1e-5)
    for k, v in c0.items():
        assert new["quantiles"][k] == pytest.approx(v, rel=0.05), k  # fp16 moves them a little
    # the un-normalised maps do not depend on the constants: re-deriving again is a fixed point
    _, again, _ = rederive_package_constants(new_graph, pkg, good)
    assert again["quantiles"] == pytest.approx(new["quantiles"], rel=1e-6)
    # models without a recipe pass through; a graph without the named initializers is refused
    same_graph, same_c, rep = rederive_constants(fp32, {"x": 1}, [])
    assert same_graph is fp32 and same_c == {"x": 1} and rep["rederived"] is False
    renamed = onnx.ModelProto()
    renamed.CopyFrom(fp32)
    for t in renamed.graph.initializer:
        if t.name == "model.map_shift":
            t.name = "other"
    with pytest.raises(ConfigError, match="model.map_shift"):
        rederive_package_constants(renamed, pkg, good)
