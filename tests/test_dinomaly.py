"""Dinomaly: parameter counts, wiring (taps, reversal, groups), linear attention, hard-mining loss,
pos-embed baking, the constant-matrix head, encoder-weight loading and a clean ONNX export."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from edge_ad.errors import ConfigError
from edge_ad.models import count_parameters, create_model
from edge_ad.models.dinomaly import Dinomaly, hard_mining_cosine_loss, hard_mining_p
from edge_ad.models.layers import (
    LinearAttention,
    interpolate_pos_embed_dinov2,
    map_head_matrix,
)


@pytest.fixture(scope="module")
def tiny(build_tiny):
    return build_tiny("dinomaly-tiny")


# -- sizes --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "name, dim, total, trainable, spec_total, spec_trainable",
    [
        ("dinomaly-s", 384, 37_434_624, 15_377_280, 37.44, 15.4),
        ("dinomaly-b", 768, 148_007_424, 61_425_408, 148.01, 61.4),
        ("dinomaly-l", 1024, 413_534_208, 109_163_520, 413.54, 109.2),
    ],
)
def test_parameter_counts_match_the_spec(name, dim, total, trainable, spec_total, spec_trainable):
    got_total, got_trainable = count_parameters(name)
    assert (got_total, got_trainable) == (total, trainable)
    # trainable = bottleneck (8D^2+5D) + 8 decoder blocks (12D^2+13D each)
    assert got_trainable == 104 * dim * dim + 109 * dim
    assert round(got_trainable / 1e6, 1) == spec_trainable
    # The spec counts the official DINOv2 module, which also holds the (unused) D-dim mask_token; timm drops it.
    assert round((got_total + dim) / 1e6, 2) == spec_total


def test_variant_configuration():
    with torch.device("meta"):
        s, large = create_model("dinomaly-s"), create_model("dinomaly-l")
    assert s.target_layers == tuple(range(2, 10)) and large.target_layers == (4, 6, 8, 10, 12, 14, 16, 18)
    assert s.preprocess.resize == (448, 448) and s.preprocess.crop == (392, 392) and s.grid == 28
    assert s.encoder.pos_embed.shape[1] == 37 * 37 and s.pos_embed_baked.shape == (1, 784, 384)
    assert s.topk == 655 and s.head_matrix.shape == (256, 28)
    assert [b.attn.num_heads for b in large.decoder] == [16] * 8 and all(b.norm1.eps == 1e-8 for b in large.decoder)
    assert not any(p.requires_grad for p in s.encoder.parameters())
    cfg = s.default_train_config()
    assert cfg["optimizer"] == "stable_adamw" and cfg["lr"] == 2e-3 and cfg["final_lr"] == 2e-4
    assert (cfg["eps"], cfg["amsgrad"], cfg["warmup_iters"], cfg["iters"], cfg["batch"]) == (
        1e-10,
        True,
        100,
        10000,
        16,
    )
    assert (cfg["grad_clip"], cfg["seed"], cfg["weight_decay"], tuple(cfg["betas"])) == (0.1, 1, 1e-4, (0.9, 0.999))


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="multiple of 14"):
        create_model("dinomaly-tiny", crop=230)
    with pytest.raises(ConfigError, match="unknown option"):
        create_model("dinomaly-tiny", crops=224)
    with pytest.raises(ConfigError, match="TensorRT"):
        create_model("dinomaly-tiny", eval_size=700)


# -- wiring -------------------------------------------------------------------------------------------------

def test_taps_reversal_and_group_pairing():
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    enc = VisionTransformer(img_size=56, patch_size=14, embed_dim=64, depth=12, num_heads=1, reg_tokens=4,
                            no_embed_class=True, num_classes=0)
    m = Dinomaly(enc, range(2, 10), crop=56, resize=64).eval()
    enc_out: dict[int, torch.Tensor] = {}
    dec_out: dict[int, torch.Tensor] = {}
    for i, b in enumerate(m.encoder.blocks):
        b.register_forward_hook(lambda _m, _i, o, i=i: enc_out.__setitem__(i, o))
    for j, b in enumerate(m.decoder):
        b.register_forward_hook(lambda _m, _i, o, j=j: dec_out.__setitem__(j, o))
    bott_in: list[torch.Tensor] = []
    m.bottleneck[0].register_forward_pre_hook(lambda _m, args: bott_in.append(args[0]))

    en, de = m.features(torch.randn(2, 3, 56, 56))
    assert sorted(enc_out) == list(range(10))  # blocks 10, 11 never run
    torch.testing.assert_close(bott_in[0], sum(enc_out[i] for i in range(2, 10)) / 8)  # mean, prefix tokens kept
    assert bott_in[0].shape[1] == 5 + 16

    def grid(t: torch.Tensor) -> torch.Tensor:  # drop CLS + 4 registers, [B, D, n, n]
        return t[:, 5:].transpose(1, 2).reshape(2, 64, 4, 4)

    torch.testing.assert_close(en[0], grid(sum(enc_out[i] for i in (2, 3, 4, 5)) / 4))
    torch.testing.assert_close(en[1], grid(sum(enc_out[i] for i in (6, 7, 8, 9)) / 4))
    torch.testing.assert_close(de[0], grid(sum(dec_out[j] for j in (7, 6, 5, 4)) / 4))  # low-level <-> last blocks
    torch.testing.assert_close(de[1], grid(sum(dec_out[j] for j in (3, 2, 1, 0)) / 4))


def test_token_layout_is_cls_registers_patches(tiny):
    """Official prepare_tokens: [cls + pos[0], registers (no pos), patches + pos[1:]]; timm folds pos[0] into cls."""
    x = torch.randn(1, 3, 224, 224)
    captured: list[torch.Tensor] = []
    h = tiny.encoder.blocks[0].register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    tiny.encode(x)
    h.remove()
    t = captured[0]
    enc = tiny.encoder
    patches = enc.patch_embed.proj(x).flatten(2).transpose(1, 2) + enc.pos_embed
    torch.testing.assert_close(t[:, 0], enc.cls_token[:, 0])
    torch.testing.assert_close(t[:, 1:5], enc.reg_token)
    torch.testing.assert_close(t[:, 5:], patches)


# -- components ---------------------------------------------------------------------------------------------

def test_linear_attention_equals_explicit_form():
    torch.manual_seed(0)
    la = LinearAttention(128, 2, eps=0.0)
    x = torch.randn(2, 21, 128)
    q, k, v = la.qkv(x).reshape(2, 21, 3, 2, 64).permute(2, 0, 3, 1, 4)
    q, k = F.elu(q) + 1, F.elu(k) + 1
    attn = q @ k.transpose(-2, -1)
    attn = attn / attn.sum(dim=-1, keepdim=True)  # (q'k'^T)/rowsum, the reference LinearAttention
    ref = la.proj((attn @ v).transpose(1, 2).reshape(2, 21, 128))
    torch.testing.assert_close(la(x), ref, rtol=1e-5, atol=1e-6)


def test_hard_mining_schedule_and_gradient_scaling():
    assert [hard_mining_p(s) for s in (0, 500, 1000, 2000)] == [0.0, 0.45, 0.9, 0.9]
    torch.manual_seed(0)
    a = [torch.randn(3, 8, 4, 4) for _ in range(2)]
    b0 = [(x + 0.5 * torch.randn_like(x)) for x in a]

    def grads(p: float) -> tuple[torch.Tensor, list[torch.Tensor]]:
        b = [x.clone().requires_grad_(True) for x in b0]
        loss = hard_mining_cosine_loss(a, b, p)
        loss.backward()
        return loss.detach(), [x.grad for x in b]

    loss_plain, g_plain = grads(0.0)
    loss_hm, g_hm = grads(0.5)
    # the loss value is the plain global cosine: one cosine per image over C*H*W, mean over batch and groups
    ref = sum((1 - F.cosine_similarity(x.flatten(1), y.flatten(1))).mean() for x, y in zip(a, b0)) / 2
    torch.testing.assert_close(loss_plain, ref)
    torch.testing.assert_close(loss_hm, ref)
    for x, y, gp, gh in zip(a, b0, g_plain, g_hm):
        d = 1 - F.cosine_similarity(x, y, dim=1)
        thr = torch.topk(d.flatten(), int(d.numel() * 0.5)).values[-1]  # batch-wide threshold
        easy = (d < thr).unsqueeze(1).expand_as(gp)
        assert easy[:, 0].sum().item() == d.numel() // 2
        torch.testing.assert_close(gh[easy], 0.1 * gp[easy])
        torch.testing.assert_close(gh[~easy], gp[~easy])


def test_pos_embed_baking_is_the_official_interpolation():
    torch.manual_seed(0)
    pos = torch.randn(1, 37 * 37, 32)
    # DINOv2 interpolate_pos_encoding for a 392x392 input (w0 = h0 = 28, interpolate_offset 0.1)
    sx = sy = (28 + 0.1) / math.sqrt(37 * 37)
    ref = F.interpolate(pos.reshape(1, 37, 37, 32).permute(0, 3, 1, 2), scale_factor=(sx, sy), mode="bicubic",
                        antialias=False)
    assert ref.shape[-2:] == (28, 28)
    ref = ref.permute(0, 2, 3, 1).reshape(1, -1, 32)
    assert torch.equal(interpolate_pos_embed_dinov2(pos, 28), ref)
    assert not torch.allclose(ref, F.interpolate(pos.reshape(1, 37, 37, 32).permute(0, 3, 1, 2), size=(28, 28),
                                                  mode="bicubic").permute(0, 2, 3, 1).reshape(1, -1, 32))


def test_model_rebakes_pos_embed_for_its_grid_and_after_loading():
    m = create_model("dinomaly-tiny", crop=280)  # 20x20 tokens from a native 16x16 grid
    assert m.preprocess.resize == (320, 320) and m.pos_embed_baked.shape == (1, 400, 128)
    assert torch.equal(m.pos_embed_baked, interpolate_pos_embed_dinov2(m.encoder.pos_embed, 20))
    sd = m.state_dict()
    assert "pos_embed_baked" not in sd and "head_matrix" not in sd
    sd["encoder.pos_embed"] = torch.randn_like(sd["encoder.pos_embed"])
    m.load_state_dict(sd)
    assert torch.equal(m.pos_embed_baked, interpolate_pos_embed_dinov2(sd["encoder.pos_embed"], 20))


@pytest.mark.parametrize("grid, size", [(28, 392), (16, 224)])
def test_head_matrix_equals_resize_resize_blur(grid, size):
    torch.manual_seed(0)
    a = torch.rand(2, grid, grid, dtype=torch.float64)
    A = torch.from_numpy(map_head_matrix(grid, size, 256))
    # reference evaluation: align_corners=True to input size, align_corners=False to 256, zero-padded 5x5 sigma 4
    m = F.interpolate(a[:, None], size=size, mode="bilinear", align_corners=True)
    m = F.interpolate(m, size=256, mode="bilinear", align_corners=False)
    xy = torch.stack(torch.meshgrid(torch.arange(5.0), torch.arange(5.0), indexing="xy"), dim=-1).double()
    k = torch.exp(-((xy - 2.0) ** 2).sum(-1) / (2 * 4.0**2))
    m = F.conv2d(m, (k / k.sum())[None, None], padding=2)
    assert (A @ a @ A.T - m[:, 0]).abs().max().item() < 1e-6


# -- the export face ----------------------------------------------------------------------------------------

def test_tiny_forward_map_and_score(tiny):
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        amap, score = tiny(x)
        en, de = tiny.features(x)
    assert amap.shape == (2, 1, 256, 256) and score.shape == (2,) and amap.dtype == torch.float32
    assert en[0].shape == (2, 128, 16, 16)
    torch.testing.assert_close(score, amap.flatten(1).topk(655).values.mean(1))  # top 1% of 256x256
    a = sum(1 - F.cosine_similarity(e, d, dim=1) for e, d in zip(en, de)) / 2
    torch.testing.assert_close(tiny.token_map(en, de), a)
    with torch.no_grad():
        torch.testing.assert_close(tiny(x)[0], amap)  # eval: dropout off, deterministic


def test_training_loss_trains_only_bottleneck_and_decoder():
    m = create_model("dinomaly-tiny").train()
    loss = m.training_loss(torch.randn(2, 3, 224, 224), step=0)
    loss.backward()
    assert torch.isfinite(loss) and 0 < loss.item() < 2
    trainable = {id(p) for p in m.trainable_parameters()}
    assert trainable == {id(p) for p in [*m.bottleneck.parameters(), *m.decoder.parameters()]}
    assert all(p.grad is not None for p in m.trainable_parameters())
    assert all(p.grad is None for p in m.encoder.parameters())
    assert set(m.trainable_state_dict()) == {n for n, p in m.named_parameters() if p.requires_grad}


@pytest.mark.slow
def test_onnx_export_is_clean_and_matches(tiny):
    import onnx
    import onnxruntime as ort

    x = torch.randn(2, 3, 224, 224)
    buf = io.BytesIO()
    torch.onnx.export(tiny, (x,), buf, dynamo=False, opset_version=17, input_names=["x"],
                      output_names=["anomaly_map", "score"], dynamic_axes={"x": {0: "b"}, "anomaly_map": {0: "b"}})
    g = onnx.load_from_string(buf.getvalue())
    ops = {n.op_type for n in g.graph.node}
    assert "Einsum" not in ops and "Resize" not in ops
    consts = {i.name: i for i in g.graph.initializer}
    consts.update({n.output[0]: n.attribute[0].t for n in g.graph.node if n.op_type == "Constant"})
    topk = [n for n in g.graph.node if n.op_type == "TopK"]
    assert len(topk) == 1 and onnx.numpy_helper.to_array(consts[topk[0].input[1]]).tolist() == [655]
    dims = [d.dim_value for d in g.graph.output[0].type.tensor_type.shape.dim[1:]]
    assert dims == [1, 256, 256]
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    amap, score = sess.run(None, {"x": x.numpy()})
    with torch.no_grad():
        ref_map, ref_score = tiny(x)
    assert np.abs(amap - ref_map.numpy()).max() <= 1e-4
    assert np.abs(score - ref_score.numpy()).max() <= 1e-4


# -- encoder weights ----------------------------------------------------------------------------------------

def test_encoder_weights_round_trip_and_strict_keys(tiny, tmp_path: Path):
    sd = {k: v.clone() for k, v in tiny.encoder.state_dict().items()}
    path = tmp_path / "enc.safetensors"
    save_file(sd, str(path))
    m = create_model("dinomaly-tiny", weights=str(path))
    for k, v in m.encoder.state_dict().items():
        assert torch.equal(v, sd[k]), k
    assert m.encoder_weights.startswith("file:") and len(m.encoder_weights) == 5 + 64

    missing = {k: v for k, v in sd.items() if k != "blocks.3.attn.qkv.weight"}
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(ConfigError, match=r"1 missing key\(s\) \['blocks.3.attn.qkv.weight'\]"):
        create_model("dinomaly-tiny", weights=str(tmp_path / "missing.pth"))
    torch.save({**sd, "head.weight": torch.zeros(3)}, tmp_path / "unexpected.pth")
    with pytest.raises(ConfigError, match=r"unexpected key\(s\) \['head.weight'\]"):
        create_model("dinomaly-tiny", weights=str(tmp_path / "unexpected.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="not a readable"):
        create_model("dinomaly-tiny", weights=str(tmp_path / "junk.pth"))


def test_official_dinov2_checkpoint_layout_is_converted(tiny, tmp_path: Path):
    """The DINOv2 hub file has cls without pos, pos_embed with a cls entry, register_tokens and mask_token."""
    sd = tiny.encoder.state_dict()
    pos0 = torch.randn(1, 1, 128)
    official = {k: v.clone() for k, v in sd.items() if k not in ("cls_token", "reg_token", "pos_embed")}
    official.update(cls_token=sd["cls_token"] - pos0, pos_embed=torch.cat([pos0, sd["pos_embed"]], 1),
                    register_tokens=sd["reg_token"].clone(), mask_token=torch.zeros(1, 128))
    torch.save(official, tmp_path / "dinov2_vitt14_reg4_pretrain.pth")
    m = create_model("dinomaly-tiny", weights=str(tmp_path / "dinov2_vitt14_reg4_pretrain.pth"))
    for k, v in m.encoder.state_dict().items():
        torch.testing.assert_close(v, sd[k], msg=k)
