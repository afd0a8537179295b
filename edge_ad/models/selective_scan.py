"""Mamba's selective scan (`mamba_ssm` `selective_scan_fn`) in pure PyTorch, exportable to ONNX and TensorRT.

Recurrence (`selective_scan_ref` semantics, as MambaAD's SS2D calls it: z=None, delta_softplus=True), channels
c in [0, G*d), group g = c // d (MambaAD: one group per scan direction, B and C shared by the group's channels):

    dt[c,t] = softplus(delta[c,t] + delta_bias[c])               (threshold 20, as torch/CUDA softplus)
    h[c,n,t] = exp(dt[c,t] A[c,n]) h[c,n,t-1] + dt[c,t] B[g,n,t] u[c,t],   h[c,n,-1] = 0
    y[c,t]   = sum_n C[g,n,t] h[c,n,t] + D[c] u[c,t]

`selective_scan` evaluates it in chunks of Q steps (Q the divisor of L nearest min(sqrt(L), 32) from below: 32 steps
for MambaAD's 64x64 stage), with the time axis split as (L/Q chunks, Q steps):

1. every chunk's end state from a zero start, by Q sequential steps run on all chunks at once (Mul, Add on
   (batch, G, L/Q, d, N) tensors);
2. the states entering the chunks by the odd/even parallel scan `linear_recurrence` over the L/Q chunk ends, with
   the chunk's decay exp(A * sum(dt)) (a short recurrence: log2(L/Q) levels);
3. the Q steps again from those states, each step's output y = C h as a batched MatMul over the N states.

The decays exp(dt A) of each step are in (0, 1] and only ever multiplied, never divided or exponentiated as a
cumulative sum (the log-space cumsum trick overflows), so the result stays at fp32 rounding of the sequential
reference; the graph is static dataflow (Split, Mul, Add, Exp, MatMul, Slice, Concat, Reshape, Transpose): no
Loop/Scan/Pad, so the same graph runs in ONNX Runtime and TensorRT. The previous form, an odd/even parallel scan
over all L steps, made O(log L) passes of strided slices and interleaves over the (batch, G, d, N, L) state; this
one touches the state 7 times (decay, input, two passes of multiply-add) and never along a stride: MambaAD at 256
runs 2.2x faster on ONNX Runtime CPU with 33 % less peak memory (docs/performance.md).

The state-space-duality form (Mamba-2: the intra-chunk part as a masked (Q, Q) matmul over a segment-sum decay)
needs one scalar decay per head; Mamba-1's A is diagonal per (channel, state), so that matrix would be Q times
the size of the state itself, and the intra-chunk part is the recurrence above instead. Without a fused kernel
the (batch, G, d, N, L) state is written at least ~5 times by any exact graph, which bounds what a CPU runtime
can gain here.

The CUDA kernel computes exp as exp2f(x log2 e): expect ~1e-6 relative differences from it, as from any
PyTorch reference.
"""

from __future__ import annotations

import math

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


def _take(x: torch.Tensor, dim: int, sl: slice) -> torch.Tensor:
    """x[..., sl, ...] with `sl` applied along `dim` (ONNX: one Slice)."""
    return x[(slice(None),) * dim + (sl,)]


def _column(x: torch.Tensor, dim: int, value: float) -> torch.Tensor:
    """A slab of `value` shaped like x's first entry along `dim`, built as x[.., :1, ..] * 0 + value (Slice, Mul, Add),
    not with Pad: torch exports a Pad on a dynamic-batch tensor with computed pads, which TensorRT needs as
    constants. Exact for finite x; a non-finite x has poisoned the scan already."""
    col = _take(x, dim, slice(0, 1)) * 0.0
    return col + value if value else col


def _interleave(even: torch.Tensor, odd: torch.Tensor, dim: int) -> torch.Tensor:
    """even[i] at 2i and odd[i] at 2i+1 along `dim` (ONNX: Unsqueeze, Concat, Reshape to a constant shape whose
    first dim, the batch, stays -1, so the graph has no Shape ops)."""
    shape = [int(v) for v in even.shape]
    shape[dim] *= 2
    return torch.stack([even, odd], dim=dim + 1).reshape([-1, *shape[1:]])


def _fill_even(a0: torch.Tensor, b0: torch.Tensor, h_odd: torch.Tensor, dim: int) -> torch.Tensor:
    """Even states from the odd ones: h[2i] = a[2i] h[2i-1] + b[2i], and h[0] = b[0] (zero initial state)."""
    rest = _take(a0, dim, slice(1, None)) * _take(h_odd, dim, slice(0, -1)) + _take(b0, dim, slice(1, None))
    return torch.cat([_take(b0, dim, slice(0, 1)), rest], dim=dim)


def linear_recurrence(a: torch.Tensor, b: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """All states of h_t = a_t h_{t-1} + b_t, h_{-1} = 0, along `dim` of a and b (same shape).

    Odd/even reduction: with a0, a1 (b0, b1) the even/odd steps, the odd states solve the half-length
    recurrence with coefficients (a1 a0, a1 b0 + b1); the even states follow as a0 h_odd[t-1] + b0.
    Odd lengths are padded with the identity step (a = 1, b = 0) and trimmed. Working along any `dim` lets callers
    keep their layout (a transpose to put time last would be pushed through every later op by ORT).
    """
    dim = dim % a.dim()
    n = int(a.shape[dim])  # int(): a constant in the trace, so the graph has no Shape ops
    if n == 1:
        return b
    if n % 2:
        a = torch.cat([a, _column(a, dim, 1.0)], dim=dim)
        b = torch.cat([b, _column(b, dim, 0.0)], dim=dim)
    a0, a1 = _take(a, dim, slice(0, None, 2)), _take(a, dim, slice(1, None, 2))
    b0, b1 = _take(b, dim, slice(0, None, 2)), _take(b, dim, slice(1, None, 2))
    h_odd = linear_recurrence(a1 * a0, a1 * b0 + b1, dim)
    h = _interleave(_fill_even(a0, b0, h_odd, dim), h_odd, dim)
    return _take(h, dim, slice(0, n)) if n % 2 else h


#: the most steps per chunk: beyond ~32 the per-step ops get too small to pay for their nodes (measured:
#: docs/performance.md, "MambaAD's chunked selective scan")
MAX_CHUNK = 32


def chunk_length(length: int) -> int:
    """Steps per chunk: the largest divisor of `length` not above min(sqrt(length), MAX_CHUNK) (a square L = s*s
    gives s up to 32), which balances the Q sequential steps against the log2(L/Q) levels of the chunk recurrence."""
    q = max(1, min(math.isqrt(length), MAX_CHUNK))
    while length % q:
        q -= 1
    return q


def _steps(x: torch.Tensor, groups: int, chunks: int, q: int, state_last: bool = False) -> list[torch.Tensor]:
    """(batch, G*c, L) -> q tensors, step t of every chunk: (batch, G, L/q, c, 1), or (batch, G, L/q, 1, c) with
    `state_last` (ONNX: Reshape, Transpose, Split; no Squeeze/Unsqueeze)."""
    c = int(x.shape[1]) // groups
    x = x.reshape(-1, groups, c, chunks, q)
    if state_last:
        return list(x.permute(0, 1, 3, 4, 2).split(1, dim=3))
    return list(x.permute(0, 1, 3, 2, 4).split(1, dim=4))


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    delta_bias: torch.Tensor,
    chunk: int | None = None,
) -> torch.Tensor:
    """Selective scan with delta_softplus=True and no z gating, computed in float32.

    u, delta: (batch, G*d, L); A: (G*d, N), negative; B, C: (batch, G, N, L); D, delta_bias: (G*d,).
    Returns y: (batch, G*d, L) float32. `chunk` (steps per chunk, a divisor of L) defaults to `chunk_length(L)`.
    The largest intermediates are the per-step (batch, G, L/Q, d, N) decays and inputs, kept for the two passes.
    """
    # int(): static sizes are constants in the trace (the graph then has no Shape/Gather/Concat chains)
    gd, n_state = int(A.shape[0]), int(A.shape[1])
    g = int(B.shape[1])
    length = int(u.shape[-1])
    q = chunk_length(length) if chunk is None else int(chunk)
    if gd % g or q < 1 or length % q:
        raise ValueError(f"selective_scan: {gd} channels are not divisible into {g} groups, or chunk {q} does not "
                         f"divide L={length}")
    d, nc = gd // g, length // q
    u = _f32(u)
    dt = _softplus(_f32(delta) + _f32(delta_bias)[:, None])
    a5 = _f32(A).reshape(g, 1, d, n_state)  # broadcasts against (batch, G, L/Q, d, 1)
    dts = _steps(dt, g, nc, q)  # (batch, G, L/Q, d, 1)
    dus = _steps(dt * u, g, nc, q)
    bs = _steps(_f32(B).reshape(-1, g * n_state, length), g, nc, q, state_last=True)  # (batch, G, L/Q, 1, N)
    cs = _steps(_f32(C).reshape(-1, g * n_state, length), g, nc, q)  # (batch, G, L/Q, N, 1)
    decay = [torch.exp(t * a5) for t in dts]  # (batch, G, L/Q, d, N)
    inp = [x * b for x, b in zip(dus, bs)]
    h = inp[0]
    if nc > 1:
        for t in range(1, q):  # 1. chunk end states from zero
            h = decay[t] * h + inp[t]
        total = torch.exp(dt.reshape(-1, g, d, nc, q).sum(-1).transpose(2, 3).unsqueeze(-1) * a5)
        # 2. chunk recurrence along L/Q (dim 2, in place: no transposes); chunk k starts from the end of k-1
        ends = linear_recurrence(total, h, dim=2)
        start = torch.cat([_column(ends, 2, 0.0), ends[:, :, :-1]], dim=2)
        h = decay[0] * start + inp[0]
    ys = [torch.matmul(h, cs[0])]
    for t in range(1, q):  # 3. all states again, from the entering states; y = C h over the N states
        h = decay[t] * h + inp[t]
        ys.append(torch.matmul(h, cs[t]))
    y = torch.cat(ys, dim=-1)  # (batch, G, L/Q, d, Q)
    return y.permute(0, 1, 3, 2, 4).reshape(-1, gd, length) + _f32(D)[:, None] * u


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
