"""Mamba's selective scan (`mamba_ssm` `selective_scan_fn`) in pure PyTorch, exportable to ONNX and TensorRT.

Recurrence (`selective_scan_ref` semantics, as MambaAD's SS2D calls it: z=None, delta_softplus=True), channels
c in [0, G*d), group g = c // d (MambaAD: one group per scan direction, B and C shared by the group's channels):

    dt[c,t] = softplus(delta[c,t] + delta_bias[c])               (threshold 20, as torch/CUDA softplus)
    h[c,n,t] = exp(dt[c,t] A[c,n]) h[c,n,t-1] + dt[c,t] B[g,n,t] u[c,t],   h[c,n,-1] = 0
    y[c,t]   = sum_n C[g,n,t] h[c,n,t] + D[c] u[c,t]

`selective_scan` evaluates it with a work-efficient odd/even parallel scan (Blelloch-style; spec section 9.3,
option F): pair neighbouring steps, solve the half-length problem recursively, fill in the even steps. It only
multiplies decays in (0, 1] and adds, never divides by or exponentiates a cumulative sum, so it stays at fp32
rounding (the cumsum-of-log-decay trick overflows), and it is static dataflow: Slice(step 2), Mul, Add, Pad,
Concat, Reshape, Exp, ReduceSum; no Loop/Scan, so the same graph runs in ONNX Runtime and TensorRT. The
recursion unrolls at trace time: 2 log2(L) levels deep, O(L) work.

The CUDA kernel computes exp as exp2f(x log2 e): expect ~1e-6 relative differences from it, as from any
PyTorch reference. The ONNX `Scan` form (spec option C, faster on a 2-core CPU) is not offered: it needs the
dynamo exporter and is excluded from edge-ad's TensorRT path, and one graph for every backend matters more.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _log1p(y: torch.Tensor) -> torch.Tensor:
    """log(1 + y) to a few ulp with plain Log/Add/Div (ONNX has no Log1p, and log(1 + y) in fp32 loses ~1e-4
    relative at y = 1e-3, the typical dt at init): Goldberg's log(u) * y / (u - 1), u = 1 + y; y where u == 1.
    The denominator is kept nonzero so the unused branch cannot put NaN into gradients."""
    u = 1.0 + y
    den = u - 1.0
    exact = den == 0
    return torch.where(exact, y, torch.log(u) * (y / (den + exact.to(den.dtype))))


def _softplus(x: torch.Tensor) -> torch.Tensor:
    """softplus with PyTorch's threshold 20 (x above it passes through), written out because ONNX `Softplus`
    has no threshold and can overflow in fp16."""
    return torch.where(x > 20.0, x, _log1p(torch.exp(torch.clamp(x, max=20.0))))


def _f32(t: torch.Tensor) -> torch.Tensor:
    """float32 view of t; no Cast node in the trace when it already is float32."""
    return t if t.dtype == torch.float32 else t.float()


def _interleave(even: torch.Tensor, odd: torch.Tensor) -> torch.Tensor:
    """(M, n), (M, n) -> (M, 2n) with even[:, i] at 2i and odd[:, i] at 2i+1 (ONNX: Unsqueeze, Concat, Flatten)."""
    return torch.stack([even, odd], dim=-1).flatten(1)


def _fill_even(a0: torch.Tensor, b0: torch.Tensor, h_odd: torch.Tensor) -> torch.Tensor:
    """Even states from the odd ones: h[2i] = a[2i] h[2i-1] + b[2i], and h[0] = b[0] (zero initial state)."""
    return torch.cat([b0[:, :1], a0[:, 1:] * h_odd[:, :-1] + b0[:, 1:]], dim=1)


def linear_recurrence(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """All states of h_t = a_t h_{t-1} + b_t, h_{-1} = 0, along the last dim of (M, L) tensors.

    Odd/even reduction: with a0, a1 (b0, b1) the even/odd steps, the odd states solve the half-length
    recurrence with coefficients (a1 a0, a1 b0 + b1); the even states follow as a0 h_odd[t-1] + b0.
    Odd lengths are padded with the identity step (a = 1, b = 0) and trimmed.
    """
    n = int(a.shape[-1])  # int(): a constant in the trace, so the graph has no Shape ops
    if n == 1:
        return b
    if n % 2:
        a = F.pad(a, (0, 1), value=1.0)
        b = F.pad(b, (0, 1), value=0.0)
    a0, a1 = a[:, 0::2], a[:, 1::2]
    b0, b1 = b[:, 0::2], b[:, 1::2]
    h_odd = linear_recurrence(a1 * a0, a1 * b0 + b1)
    h = _interleave(_fill_even(a0, b0, h_odd), h_odd)
    return h[:, :n] if n % 2 else h


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    delta_bias: torch.Tensor,
) -> torch.Tensor:
    """Selective scan with delta_softplus=True and no z gating, computed in float32.

    u, delta: (batch, G*d, L); A: (G*d, N), negative; B, C: (batch, G, N, L); D, delta_bias: (G*d,).
    Returns y: (batch, G*d, L) float32. L must be even (MambaAD: 64..4096); the top level splits even and odd
    steps itself, so no full-length (batch, G*d, N, L) tensor is ever built: the largest intermediates are
    (batch, G, d, N, L/2).
    """
    # int(): static sizes are constants in the trace (the graph then has no Shape/Gather/Concat chains)
    gd, n_state = int(A.shape[0]), int(A.shape[1])
    g = int(B.shape[1])
    length = int(u.shape[-1])
    if gd % g or length % 2:
        raise ValueError(f"selective_scan: {gd} channels are not divisible into {g} groups, or L={length} is odd")
    d = gd // g
    u = _f32(u)
    dt = _softplus(_f32(delta) + _f32(delta_bias)[:, None])
    du = dt * u
    dt5 = dt.reshape(-1, g, d, 1, length)
    du5 = du.reshape(-1, g, d, 1, length)
    b5 = _f32(B).reshape(-1, g, 1, n_state, length)
    c5 = _f32(C).reshape(-1, g, 1, n_state, length)
    a5 = _f32(A).reshape(1, g, d, n_state, 1)
    half = length // 2
    a0 = torch.exp(dt5[..., 0::2] * a5).reshape(-1, half)
    a1 = torch.exp(dt5[..., 1::2] * a5).reshape(-1, half)
    b0 = (du5[..., 0::2] * b5[..., 0::2]).reshape(-1, half)
    b1 = (du5[..., 1::2] * b5[..., 1::2]).reshape(-1, half)
    h_odd = linear_recurrence(a1 * a0, a1 * b0 + b1)
    h_even = _fill_even(a0, b0, h_odd)
    y_even = (h_even.reshape(-1, g, d, n_state, half) * c5[..., 0::2]).sum(3)
    y_odd = (h_odd.reshape(-1, g, d, n_state, half) * c5[..., 1::2]).sum(3)
    y = _interleave(y_even.reshape(-1, half), y_odd.reshape(-1, half)).reshape(-1, gd, length)
    return y + _f32(D)[:, None] * u


def selective_scan_ref(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    delta_bias: torch.Tensor,
) -> torch.Tensor:
    """The recurrence step by step in the inputs' dtype (use float64 as the ground truth): a transcription of
    `mamba_ssm`'s `selective_scan_ref` for grouped B/C. Python loop over L: for checking only, never exported."""
    batch, gd, length = u.shape
    g = B.shape[1]
    d = gd // g
    dt = F.softplus(delta + delta_bias[:, None])  # threshold 20
    bb = B.repeat_interleave(d, dim=1)  # (batch, G*d, N, L)
    cc = C.repeat_interleave(d, dim=1)
    h = u.new_zeros(batch, gd, A.shape[1])
    ys = []
    for t in range(length):
        h = torch.exp(dt[:, :, t, None] * A) * h + dt[:, :, t, None] * bb[..., t] * u[:, :, t, None]
        ys.append((h * cc[..., t]).sum(-1))
    return torch.stack(ys, dim=-1) + D[:, None] * u
