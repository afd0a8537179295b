"""MambaAD: scan orders (checksums, 4x4 tables), the 8 directions vs a literal port of the official
scatter/rot90 encode-decode, SS2D vs the official forward with the sequential reference scan, parameter
counts, wiring, loss, the anomaly head vs scipy, encoder weights, export parity and the CLI end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from edge_ad.errors import ConfigError
from edge_ad.models import count_parameters, create_model
from edge_ad.models.mambaad import SS2D, gaussian_reflect_matrix, lss_grouping
from edge_ad.models.scan_orders import SCAN_METHODS, direction_permutations, scan_order
from edge_ad.models.selective_scan import selective_scan_ref


@pytest.fixture(scope="module")
def tiny(build_tiny):
    return build_tiny("mambaad-tiny")


# -- scan orders --------------------------------------------------------------------------------------------

# spec section 5.1: sum_i i * P[i]
CHECKSUMS = {
    ("sweep", 8): 85_344, ("sweep", 64): 22_898_104_320,
    ("scan", 8): 85_008, ("scan", 64): 22_896_706_560,
    ("zorder", 8): 83_360, ("zorder", 64): 22_118_344_704,
    ("zigzag", 8): 80_570, ("zigzag", 64): 21_242_074_896,
    ("hilbert", 8): 65_688, ("hilbert", 16): 4_231_504, ("hilbert", 32): 270_148_384, ("hilbert", 64): 17_243_064_384,
}

# spec section 5.1: entry = step at which that pixel of a 4x4 grid is visited
TABLES_4X4 = {
    "sweep": [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15]],
    "scan": [[0, 1, 2, 3], [7, 6, 5, 4], [8, 9, 10, 11], [15, 14, 13, 12]],
    "zorder": [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]],
    "zigzag": [[0, 1, 5, 6], [2, 4, 7, 12], [3, 8, 11, 13], [9, 10, 14, 15]],
    "hilbert": [[0, 1, 14, 15], [3, 2, 13, 12], [4, 7, 8, 11], [5, 6, 9, 10]],
}


@pytest.mark.parametrize("method, size", sorted(CHECKSUMS))
def test_scan_order_checksums(method, size):
    p = scan_order(method, size)
    assert sorted(p.tolist()) == list(range(size * size))
    assert int((np.arange(size * size) * p).sum()) == CHECKSUMS[(method, size)]


@pytest.mark.parametrize("method", SCAN_METHODS)
def test_scan_order_4x4_tables(method):
    assert np.argsort(scan_order(method, 4)).reshape(4, 4).tolist() == TABLES_4X4[method]


@pytest.mark.parametrize("size, first", [(8, "down"), (16, "right"), (32, "down"), (64, "right")])
def test_hilbert_orientation(size, first):
    p = scan_order("hilbert", size)
    r, c = np.divmod(p, size)
    assert (p[0], p[-1]) == (0, size - 1)  # top-left to top-right
    assert np.all(np.abs(np.diff(r)) + np.abs(np.diff(c)) == 1)  # unit Manhattan steps
    assert p[1] == (size if first == "down" else 1)


def _official_encode_decode(x: torch.Tensor, p: torch.Tensor, y: torch.Tensor | None = None):
    """Literal port of the official forward_core's view/encode (scatter with index_flat_inv) and the
    decode/undo-view/sum; `y` (B,8,d,L) are per-direction outputs (default: the encoded sequences)."""
    b, _, h, w = x.shape
    n = h * w
    p_inv = torch.argsort(p)

    def enc(t):
        return torch.zeros_like(t).scatter_(2, p_inv.view(1, 1, -1).expand(t.shape), t)

    def dec(t):
        return torch.zeros_like(t).scatter_(2, p.view(1, 1, -1).expand(t.shape), t)

    xs = [enc(x.reshape(b, -1, n)), enc(x.transpose(2, 3).contiguous().view(b, -1, n)),
          enc(torch.rot90(x, 1, dims=(2, 3)).contiguous().view(b, -1, n)),
          enc(torch.rot90(x, 1, dims=(2, 3)).transpose(2, 3).contiguous().view(b, -1, n))]
    xs = torch.stack(xs, 1)
    xs = torch.cat([xs, xs.flip(-1)], 1)
    out_y = xs if y is None else y
    inv_y = out_y[:, 4:].flip(-1)
    ys = []
    for src in (out_y, inv_y):
        ys.append(dec(src[:, 0]))
        ys.append(dec(src[:, 1]).view(b, -1, w, h).transpose(2, 3).contiguous().view(b, -1, n))
        ys.append(torch.rot90(dec(src[:, 2]).view(b, -1, w, h), 3, dims=(2, 3)).contiguous().view(b, -1, n))
        ys.append(torch.rot90(dec(src[:, 3]).view(b, -1, w, h).transpose(2, 3), 3, dims=(2, 3)).contiguous()
                  .view(b, -1, n))
    return xs, sum(ys)


@pytest.mark.parametrize("method", ["hilbert", "zigzag"])
@pytest.mark.parametrize("size", [8, 16])
def test_directions_equal_official_scatter_rot90_encode_decode(method, size):
    ss = SS2D(8, size, method)
    x = torch.randn(2, 16, size, size)
    y = torch.randn(2, 8, 16, size * size)
    xs_ref, merged_ref = _official_encode_decode(x, ss.scans.index_flat.view(-1), y)
    assert torch.equal(ss.scans.encode(x.reshape(2, 16, -1), 16), xs_ref)
    torch.testing.assert_close(ss.scans.merge(y, 16), merged_ref, rtol=0, atol=1e-5)
    assert torch.equal(torch.from_numpy(direction_permutations(method, size)).view(-1), ss.scans.perm)


def _official_ss2d(ss: SS2D, x: torch.Tensor) -> torch.Tensor:
    """The official SS2D.forward in float64 (einsum projections, scatter scans, the sequential reference scan)."""
    p = {k: v.double() for k, v in ss.state_dict().items() if not k.startswith("scans")}
    b, h, w, _ = x.shape
    n, k, r, ns = h * w, 8, ss.dt_rank, ss.d_state
    xz = x @ p["in_proj.weight"].t()
    xi, z = xz.chunk(2, dim=-1)
    xi = F.silu(F.conv2d(xi.permute(0, 3, 1, 2), p["conv2d.weight"], p["conv2d.bias"], padding=1, groups=ss.d_inner))
    xs, _ = _official_encode_decode(xi, ss.scans.index_flat.view(-1))
    x_dbl = torch.einsum("bkdl,kcd->bkcl", xs, p["x_proj_weight"])
    dts, bs, cs = torch.split(x_dbl, [r, ns, ns], dim=2)
    dts = torch.einsum("bkrl,kdr->bkdl", dts, p["dt_projs_weight"])
    out_y = selective_scan_ref(xs.reshape(b, -1, n), dts.reshape(b, -1, n), -torch.exp(p["A_logs"]), bs, cs,
                               p["Ds"], p["dt_projs_bias"].reshape(-1)).view(b, k, -1, n)
    _, y = _official_encode_decode(xi, ss.scans.index_flat.view(-1), out_y)
    y = F.layer_norm(y.transpose(1, 2).reshape(b, h, w, -1), (ss.d_inner,), p["out_norm.weight"], p["out_norm.bias"])
    return (y * F.silu(z)) @ p["out_proj.weight"].t()


def test_ss2d_equals_official_forward_with_reference_scan():
    torch.manual_seed(0)
    ss = SS2D(16, 8, "hilbert").eval()
    with torch.no_grad():
        ss.out_norm.weight.uniform_(0.5, 1.5)
        ss.out_norm.bias.normal_(0, 0.1)
    x = torch.randn(2, 8, 8, 16)
    with torch.no_grad():
        got = ss(x)
        ref = _official_ss2d(ss, x.double())
    assert float((got.double() - ref).abs().max() / ref.abs().max()) <= 1e-5


# -- sizes and wiring ---------------------------------------------------------------------------------------

def _ss2d_params(c: int) -> int:
    d, r, n, k = 2 * c, math.ceil(c / 16), 16, 8
    return 2 * d * c + 10 * d + k * (r + 2 * n) * d + k * d * r + 2 * k * d + k * d * n + 2 * d + c * d


def test_parameter_count_matches_the_spec():
    total, trainable = count_parameters("mambaad")
    with torch.device("meta"):
        m = create_model("mambaad")
    enc = sum(p.numel() for p in m.net_t.parameters())
    neck = sum(p.numel() for p in m.mff_oce.parameters())
    index = sum(p.numel() for n, p in m.named_parameters() if ".scans." in n)
    dec = sum(p.numel() for p in m.net_s.parameters()) - index
    # independent closed form of the decoder: HSS = SS2D + LayerNorm; LSS = HSS x n + 4 1x1 + DW 5x5/7x7 + fuse
    groups = {512: (1, 3), 256: (2, 2), 128: (2, 3), 64: (1, 3)}
    closed = 0
    for c, (mods, per) in groups.items():
        lss = per * (_ss2d_params(c) + 2 * c) + 4 * (c * c + c) + 25 * c + 49 * c + 3 * c * c + c
        closed += mods * lss + (0 if c == 512 else 8 * c * c + 2 * c)  # PatchExpand2D
    assert dec == closed == 15_986_624
    assert index == 2 * (3 * 64 + 4 * 256 + 6 * 1024 + 3 * 4096) == 39_296  # scans.index_flat(_inv) x 16 SS2D
    assert enc == 8_170_304 and neck == 1_458_304
    assert total == enc + neck + dec + index == 25_654_528
    assert trainable == neck + dec == 17_444_928
    # spec: encoder 8.17 + neck 1.46 + decoder 15.99 + index 0.04 = "25.66" M (sum of rounded parts; exact 25.6545),
    # paper: 25.7 M
    assert [round(v / 1e6, 2) for v in (enc, neck, dec, index)] == [8.17, 1.46, 15.99, 0.04]
    assert round(total / 1e6, 1) == 25.7


def test_variant_configuration_and_official_layout():
    with torch.device("meta"):
        m = create_model("mambaad")
    layers = m.net_s.layers_up
    assert [[len(b.smm_blocks) for b in layer.blocks] for layer in layers] == [[3], [2, 2], [3, 3], [3]]
    assert [lss_grouping(d) for d in (3, 4, 6, 2, 9)] == [(1, 3), (2, 2), (2, 3), (1, 2), (3, 3)]
    dpr = [[round(b.smm_blocks[0].drop_path.drop_prob, 3) for b in layer.blocks] for layer in layers]
    assert dpr == [[0.2], [0.16, 0.147], [0.107, 0.093], [0.027]]
    ss = layers[0].blocks[0].smm_blocks[0].self_attention
    assert (ss.d_inner, ss.dt_rank, ss.size) == (1024, 32, 8)
    assert ss.x_proj_weight.shape == (8, 64, 1024) and ss.dt_projs_weight.shape == (8, 1024, 32)
    assert ss.A_logs.shape == (8192, 16) and ss.Ds.shape == (8192,) and ss.scans.index_flat.shape == (1, 1, 64)
    assert [layer.blocks[0].smm_blocks[0].self_attention.size for layer in layers] == [8, 16, 32, 64]
    assert all(n.eps == 1e-5 for n in m.net_s.modules() if isinstance(n, torch.nn.LayerNorm))
    ins = [n for n in m.net_s.modules() if isinstance(n, torch.nn.InstanceNorm2d)]
    assert len(ins) == 6 * 6 and not any(n.affine or n.track_running_stats for n in ins)
    keys = set(m.state_dict())
    for k in ("net_s.layers_up.1.blocks.1.smm_blocks.1.self_attention.scans.index_flat_inv",
              "net_s.layers_up.2.blocks.0.conv77.0.weight", "net_s.layers_up.2.blocks.0.finalconv11.bias",
              "net_s.layers_up.3.upsample.expand.weight", "mff_oce.bn_layer.0.downsample.0.weight",
              "mff_oce.conv21.bias", "net_t.layer3.5.bn2.running_var"):
        assert k in keys, k
    assert not any(".perm" in k or "merge_index" in k or "head_" in k for k in keys)
    assert m.preprocess.resize == (256, 256) and m.preprocess.crop == (256, 256)
    cfg = m.default_train_config()
    assert (cfg["optimizer"], cfg["scheduler"], cfg["lr"], cfg["eps"], cfg["amsgrad"]) == (
        "adamw",
        "step",
        5e-3,
        1e-8,
        False,
    )
    assert (cfg["weight_decay"], tuple(cfg["betas"]), cfg["grad_clip"], cfg["batch"], cfg["seed"]) == (
        1e-4, (0.9, 0.999), 5.0, 16, 42)
    assert (cfg["step_at"], cfg["gamma"], cfg["iters"]) == (0.8, 0.1, 1000 * (3629 // 16))


def test_weight_decay_groups_follow_ader(tiny):
    decay, no_decay = tiny.param_groups(1e-4)
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in tiny.named_parameters()}
    dn = {names[id(p)] for p in decay["params"]}
    nn_ = {names[id(p)] for p in no_decay["params"]}
    assert len(dn) + len(nn_) == len(tiny.trainable_parameters())
    assert any(n.endswith("A_logs") for n in dn) and any(n.endswith("x_proj_weight") for n in dn)
    assert any(n.endswith(".Ds") for n in nn_) and any(n.endswith("conv1b7.0.bias") for n in nn_)
    assert not any("net_t" in n or "scans" in n for n in dn | nn_)


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="must be 256"):
        create_model("mambaad", crop=224)
    with pytest.raises(ConfigError, match="scan_type"):
        create_model("mambaad-tiny", scan_type="spiral")
    with pytest.raises(ConfigError, match="unknown option"):
        create_model("mambaad-tiny", depths=[2, 2])
    with pytest.raises(ConfigError, match="no pretrained encoder weights"):
        create_model("mambaad-tiny", pretrained=True)


def test_loading_a_checkpoint_rebuilds_the_scan_tables(tiny):
    sweep = create_model("mambaad-tiny", scan_type="sweep")
    ss = sweep.net_s.layers_up[2].blocks[0].smm_blocks[0].self_attention
    before = ss.scans.perm.clone()
    sweep.load_state_dict(tiny.state_dict())
    ref = tiny.net_s.layers_up[2].blocks[0].smm_blocks[0].self_attention.scans
    assert not torch.equal(before, ss.scans.perm) and torch.equal(ss.scans.perm, ref.perm)
    assert torch.equal(ss.scans.merge_index, ref.merge_index)
    bad = tiny.state_dict()
    key = "net_s.layers_up.2.blocks.0.smm_blocks.0.self_attention.scans.index_flat"
    bad[key] = torch.zeros_like(bad[key])
    with pytest.raises(ConfigError, match="not a permutation"):
        sweep.load_state_dict(bad)


def test_training_keeps_the_teacher_frozen_and_uses_5x_mse(tiny):
    m = create_model("mambaad-tiny").train()
    assert m.training and not m.net_t.training and m.mff_oce.training
    x = torch.randn(2, 3, 64, 64)
    bn = m.net_t.bn1
    stats = bn.running_mean.clone()
    loss = m.training_loss(x, step=0)
    loss.backward()
    assert torch.equal(bn.running_mean, stats)  # teacher BN statistics never move
    assert all(p.grad is None for p in m.net_t.parameters())
    assert all(p.grad is not None for p in m.trainable_parameters())
    assert {id(p) for p in m.trainable_parameters()} == {
        id(p) for p in [*m.mff_oce.parameters(), *m.net_s.parameters()] if p.requires_grad}
    m.eval()
    with torch.no_grad():
        ft, fs = m.features(x)
        ref = sum(5.0 * ((t - s) ** 2).mean() for t, s in zip(ft, fs))
        torch.testing.assert_close(m.training_loss(x, 0), ref)
    assert (
        [tuple(f.shape[1:]) for f in ft] == [tuple(f.shape[1:]) for f in fs] == [(16, 16, 16), (32, 8, 8), (64, 4, 4)]
    )


# -- the export face ----------------------------------------------------------------------------------------

def test_gaussian_matrix_is_scipy_reflect():
    from scipy.ndimage import gaussian_filter1d

    x = np.random.default_rng(0).random((3, 64))
    ref = gaussian_filter1d(x, sigma=4, axis=1, mode="reflect", truncate=4.0)
    assert np.abs(x @ gaussian_reflect_matrix(64).T - ref).max() < 1e-12


def test_anomaly_map_and_score_equal_the_reference_evaluation(tiny):
    from scipy.ndimage import gaussian_filter

    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        amap, score = tiny(x)
        ft, fs = tiny.features(x)
    assert amap.shape == (2, 1, 64, 64) and score.shape == (2,) and amap.dtype == torch.float32
    ref = sum(F.interpolate((1 - F.cosine_similarity(t, s, dim=1)).unsqueeze(1).double(), size=64, mode="bilinear",
                            align_corners=True) for t, s in zip(ft, fs)) / 9
    ref = np.stack([gaussian_filter(r[0], sigma=4) for r in ref.numpy()])
    assert np.abs(amap[:, 0].numpy() - ref).max() < 1e-5
    torch.testing.assert_close(score, amap.flatten(1).max(1).values)  # plain max, no pooling


@pytest.mark.slow
def test_tiny_export_is_tensorrt_clean_and_matches(tiny):
    from edge_ad.export.graph_check import check_graph, op_histogram
    from edge_ad.export.onnx_export import check_parity, export_onnx

    proto = export_onnx(tiny, opset=17)
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [17]
    assert check_graph(proto) == []
    ops = set(op_histogram(proto)["ops"])
    assert not {"Loop", "Scan", "Einsum", "ScatterElements", "ScatterND", "Resize", "Softplus", "Shape"} & ops
    imgs = np.random.default_rng(1).integers(0, 256, size=(3, 64, 64, 3), dtype=np.uint8)
    parity = check_parity(tiny, proto.SerializeToString(), imgs, batch=2)
    assert parity.max_abs_map_diff <= 1e-4 and parity.max_abs_score_diff <= 1e-4


@pytest.mark.slow
def test_full_size_mambaad_export_parity():
    """The paper-size model (random init) at 256x256: TensorRT-clean graph and ONNX Runtime parity."""
    from edge_ad.export.graph_check import check_graph
    from edge_ad.export.onnx_export import check_parity, export_onnx

    torch.manual_seed(0)
    m = create_model("mambaad").eval()
    proto = export_onnx(m, opset=17, dynamic_batch=True)
    assert check_graph(proto) == []
    imgs = np.random.default_rng(2).integers(0, 256, size=(1, 256, 256, 3), dtype=np.uint8)
    parity = check_parity(m, proto.SerializeToString(), imgs, batch=1)
    assert parity.map_hw == (256, 256) and parity.max_abs_map_diff <= 1e-4


# -- encoder weights ----------------------------------------------------------------------------------------

def test_encoder_weights_from_a_full_resnet_checkpoint(tiny, tmp_path: Path):
    sd = {k: torch.randn_like(v) if v.is_floating_point() else v.clone() for k, v in tiny.net_t.state_dict().items()}
    full = {**sd, "layer4.0.conv1.weight": torch.zeros(1), "fc.weight": torch.zeros(2), "fc.bias": torch.zeros(2)}
    save_file(full, str(tmp_path / "resnet.safetensors"))
    m = create_model("mambaad-tiny", weights=str(tmp_path / "resnet.safetensors"))
    for k, v in m.net_t.state_dict().items():
        assert torch.equal(v, sd[k]), k
    assert m.encoder_weights.startswith("file:") and len(m.encoder_weights) == 5 + 64

    torch.save({k: v for k, v in sd.items() if k != "layer2.0.conv1.weight"}, tmp_path / "missing.pth")
    with pytest.raises(ConfigError, match=r"1 missing key\(s\) \['layer2.0.conv1.weight'\]"):
        create_model("mambaad-tiny", weights=str(tmp_path / "missing.pth"))
    torch.save({**sd, "head.weight": torch.zeros(3)}, tmp_path / "unexpected.pth")
    with pytest.raises(ConfigError, match=r"unexpected key\(s\) \['head.weight'\]"):
        create_model("mambaad-tiny", weights=str(tmp_path / "unexpected.pth"))
    torch.save({**sd, "conv1.weight": torch.zeros(3, 3)}, tmp_path / "shape.pth")
    with pytest.raises(ConfigError, match="do not fit"):
        create_model("mambaad-tiny", weights=str(tmp_path / "shape.pth"))


def test_pretrained_uses_the_offline_cache(tmp_path: Path, monkeypatch):

    monkeypatch.setenv("EDGE_AD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="resnet34.bt_in1k"):
        create_model("mambaad", pretrained=True)


# -- lab to line ----------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_cli_train_eval_export_and_detector(tmp_path: Path):
    import cv2

    from edge_ad.cli.main import main
    from edge_ad.data.synth import generate
    from edge_ad.evaluate import rundir
    from edge_ad.export.exporter import PackagedModel
    from edge_ad.runtime import Detector

    data, run, pkg = tmp_path / "data", tmp_path / "run", tmp_path / "pkg"
    generate(data, categories=["fabric", "pcb"], per_category=5, size=64, seed=1)
    assert main(["train", "--model", "mambaad-tiny", "--data", str(data), "--out", str(run), "--iters", "2",
                 "--batch", "4", "--no-pretrained", "--workers", "0", "--no-progress", "--val-fraction", "0.2"]) == 0
    cfg = rundir.read_config(run)
    assert (cfg["optimizer"], cfg["scheduler"], cfg["grad_clip"]) == ("adamw", "step", 5.0)
    assert (
        main(["eval", "--run", str(run), "--json", str(tmp_path / "m.json"), "--no-progress", "--overlays", "0"]) == 0
    )
    rep = json.loads((tmp_path / "m.json").read_text())
    assert {"image_auroc", "pixel_auroc", "aupro"} <= set(rep["mean"])
    assert main(["export", "--run", str(run), "--out", str(pkg)]) == 0
    man = json.loads((pkg / "manifest.json").read_text())
    assert man["model"]["family"] == "mambaad" and man["onnx"]["opset"] == 17
    assert man["export_metrics"]["max_abs_map_diff"] <= 1e-4
    model, _, _ = rundir.load_run(run)
    img = cv2.imread(str(next(data.glob("*/test/*/*.png"))))
    with torch.no_grad():
        _, ref = PackagedModel(model, model.preprocess)(torch.from_numpy(model.preprocess.apply(img)[None]))
    res = Detector.load(pkg, backend="onnxruntime").predict(img)
    assert abs(res.score - float(ref[0])) <= 1e-4 and res.anomaly_map.shape == img.shape[:2]
