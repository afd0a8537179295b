"""The pure-PyTorch selective scan: the chunked scan vs a sequential float64 loop of the reference recurrence and
vs the odd/even parallel scan over all L steps that edge-ad used before it, its softplus, gradients, and a clean
ONNX export (no Loop/Scan, TensorRT rules, ORT parity)."""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edge_ad.models.selective_scan import (
    _log1p,
    _softplus,
    chunk_length,
    linear_recurrence,
    selective_scan,
    selective_scan_ref,
)


def _oddeven_scan(u, delta, a, b, c, dd, bias):
    """The previous `selective_scan` (odd/even parallel scan over all L steps), kept here as the parity anchor."""
    gd, n = a.shape
    g, length = b.shape[1], u.shape[-1]
    d, half = gd // g, length // 2
    dt = _softplus(delta + bias[:, None])
    dt5, du5 = dt.reshape(-1, g, d, 1, length), (dt * u).reshape(-1, g, d, 1, length)
    b5, c5, a5 = b.reshape(-1, g, 1, n, length), c.reshape(-1, g, 1, n, length), a.reshape(1, g, d, n, 1)
    a0, a1 = (torch.exp(dt5[..., i::2] * a5).reshape(-1, half) for i in (0, 1))
    b0, b1 = ((du5[..., i::2] * b5[..., i::2]).reshape(-1, half) for i in (0, 1))
    h_odd = linear_recurrence(a1 * a0, a1 * b0 + b1)
    h_even = torch.cat([b0[:, :1], a0[:, 1:] * h_odd[:, :-1] + b0[:, 1:]], dim=1)
    y_even = (h_even.reshape(-1, g, d, n, half) * c5[..., 0::2]).sum(3)
    y_odd = (h_odd.reshape(-1, g, d, n, half) * c5[..., 1::2]).sum(3)
    y = torch.stack([y_even.reshape(-1, half), y_odd.reshape(-1, half)], dim=-1).flatten(1).reshape(-1, gd, length)
    return y + dd[:, None] * u


def _problem(length: int, groups: int = 8, d: int = 4, n: int = 16, batch: int = 2, shift: float = 0.0, seed: int = 0):
    """MambaAD-like inputs in float64: S4D-real A, init-like dt bias (softplus(bias) in [1e-3, 0.1])."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(batch, groups * d, length, generator=g, dtype=torch.float64)
    delta = 0.5 * torch.randn(batch, groups * d, length, generator=g, dtype=torch.float64) + shift
    a = -torch.arange(1, n + 1, dtype=torch.float64).repeat(groups * d, 1)
    b = torch.randn(batch, groups, n, length, generator=g, dtype=torch.float64)
    c = torch.randn(batch, groups, n, length, generator=g, dtype=torch.float64)
    dd = torch.rand(groups * d, generator=g, dtype=torch.float64) + 0.5
    dt = torch.exp(torch.rand(groups * d, generator=g, dtype=torch.float64) * (math.log(0.1) - math.log(1e-3))
                   + math.log(1e-3))
    bias = dt + torch.log(-torch.expm1(-dt))
    return u, delta, a, b, c, dd, bias


def _rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    return float((got.double() - ref).abs().max() / ref.abs().max())


@pytest.mark.parametrize("length", [64, 196, 256, 1024, 4096])  # MambaAD's L = side^2; 196: an odd chunk count
@pytest.mark.parametrize("shift", [0.0, 3.0, 25.0])  # init-like dt, large dt, the softplus pass-through branch
def test_chunked_scan_equals_sequential_float64_reference_and_the_previous_scan(length, shift):
    groups, d = (8, 2) if length == 4096 else (8, 4)
    args = _problem(length, groups=groups, d=d, shift=shift, seed=length)
    ref = selective_scan_ref(*args)
    args32 = [t.float() for t in args]
    got = selective_scan(*args32)
    assert got.dtype == torch.float32 and got.shape == ref.shape
    assert _rel_err(got, ref) <= 1e-5
    if length % 2 == 0:
        assert _rel_err(got, _oddeven_scan(*args32).double()) <= 1e-5


@pytest.mark.parametrize("chunk", [1, 2, 5, 16, 80])  # 1: all in the chunk recurrence; 80 = L: all sequential
def test_any_chunk_length_gives_the_same_scan(chunk):
    args = _problem(80, groups=2, d=3, n=4, seed=chunk)
    ref = selective_scan_ref(*args)
    assert _rel_err(selective_scan(*(t.float() for t in args), chunk=chunk), ref) <= 1e-5
    with pytest.raises(ValueError, match="does not divide L=80"):
        selective_scan(*(t.float() for t in args), chunk=7)


def test_chunk_length_balances_steps_and_chunks():
    assert [chunk_length(s * s) for s in (8, 16, 32, 64, 56, 28)] == [8, 16, 32, 32, 32, 28]
    assert chunk_length(1) == 1 and chunk_length(13) == 1 and chunk_length(80) == 8


def test_reference_loop_is_the_recurrence():
    """One step and two steps written out by hand (independent of the loop's vectorisation)."""
    u, delta, a, b, c, dd, bias = _problem(2, groups=2, d=3, n=4, batch=1)
    y = selective_scan_ref(u, delta, a, b, c, dd, bias)
    dt = F.softplus(delta + bias[:, None])
    bb, cc = b.repeat_interleave(3, 1)[0], c.repeat_interleave(3, 1)[0]  # (6, N, L): B/C shared per group
    h0 = dt[0, :, 0, None] * bb[..., 0] * u[0, :, 0, None]
    h1 = torch.exp(dt[0, :, 1, None] * a) * h0 + dt[0, :, 1, None] * bb[..., 1] * u[0, :, 1, None]
    torch.testing.assert_close(y[0, :, 0], (h0 * cc[..., 0]).sum(-1) + dd * u[0, :, 0])
    torch.testing.assert_close(y[0, :, 1], (h1 * cc[..., 1]).sum(-1) + dd * u[0, :, 1])


@pytest.mark.parametrize("length", [1, 2, 7, 13, 64])
def test_linear_recurrence_any_length(length):
    g = torch.Generator().manual_seed(length)
    a = torch.rand(5, length, generator=g, dtype=torch.float64)
    b = torch.randn(5, length, generator=g, dtype=torch.float64)
    h, hs = torch.zeros(5, dtype=torch.float64), []
    for t in range(length):
        h = a[:, t] * h + b[:, t]
        hs.append(h)
    torch.testing.assert_close(linear_recurrence(a, b), torch.stack(hs, 1), rtol=1e-12, atol=1e-12)


def test_softplus_threshold_and_log1p_accuracy():
    x = torch.cat([torch.linspace(-40, 40, 4001), torch.tensor([20.0, 20.0001, -6.9])])
    ref = F.softplus(x.double())  # threshold 20, log1p, on the same float32 inputs
    got = _softplus(x).double()
    assert float(((got - ref).abs() / ref.abs()).max()) <= 4e-7
    y = torch.logspace(-12, 2, 500, dtype=torch.float32)
    assert float(((_log1p(y).double() - torch.log1p(y.double())) / torch.log1p(y.double())).abs().max()) <= 4e-7
    # naive log(1 + y) in float32 is ~1e-4 off at y = 1e-3, the typical dt at init: the reason _log1p exists
    naive = torch.log(1 + torch.tensor(1e-3, dtype=torch.float32)).double()
    assert abs(float(naive) / math.log1p(1e-3) - 1) > 1e-5


def test_gradients_match_the_reference():
    args64 = [t.requires_grad_(True) for t in _problem(64, groups=2, d=2, n=4, batch=1)]
    args32 = [t.detach().float().requires_grad_(True) for t in args64]
    w = torch.randn(args64[0].shape, dtype=torch.float64)
    (selective_scan_ref(*args64) * w).sum().backward()
    (selective_scan(*args32) * w.float()).sum().backward()
    for ref, got in zip(args64, args32):
        assert got.grad is not None and torch.isfinite(got.grad).all()
        assert _rel_err(got.grad, ref.grad) <= 1e-4


def test_onnx_export_has_no_control_flow_and_matches():
    import onnx
    import onnxruntime as ort

    from edge_ad.export.graph_check import check_graph, op_histogram

    class Scan(torch.nn.Module):
        def __init__(self, a: torch.Tensor, dd: torch.Tensor, bias: torch.Tensor) -> None:
            super().__init__()
            self.register_buffer("a", a)
            self.register_buffer("dd", dd)
            self.register_buffer("bias", bias)

        def forward(self, u, delta, b, c):
            return selective_scan(u, delta, self.a, b, c, self.dd, self.bias)

    def export(length: int) -> tuple[onnx.ModelProto, tuple[torch.Tensor, ...], torch.Tensor]:
        u, delta, a, b, c, dd, bias = _problem(length, groups=4, d=2, n=16, batch=2, seed=length)
        mod = Scan(a.float(), dd.float(), bias.float())
        inputs = tuple(t.float() for t in (u, delta, b, c))
        buf = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(mod, inputs, buf, dynamo=False, opset_version=17, input_names=["u", "delta", "b", "c"],
                              dynamic_axes={k: {0: "batch"} for k in ("u", "delta", "b", "c")})
        return onnx.load_from_string(buf.getvalue()), inputs, selective_scan_ref(u, delta, a, b, c, dd, bias)

    odd, _, _ = export(196)  # 14 chunks of 14: the chunk recurrence meets an odd length (7)
    big, inputs, ref = export(1024)
    for graph in (odd, big):
        assert check_graph(graph) == []
        assert not {"Loop", "Scan", "If", "Einsum", "Softplus", "Shape", "Pad"} & set(op_histogram(graph)["ops"])
    # Q = 32 steps of ~8 nodes each, plus log2(32) levels of the chunk recurrence: a few hundred nodes, where the
    # odd/even scan over all 1024 steps needs 2 log2(1024) levels of ~20 nodes on the full-length state
    assert len(big.graph.node) < 600
    sess = ort.InferenceSession(big.SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {k: v.numpy() for k, v in zip(("u", "delta", "b", "c"), inputs)})
    assert _rel_err(torch.from_numpy(np.asarray(y)), ref) <= 1e-5
