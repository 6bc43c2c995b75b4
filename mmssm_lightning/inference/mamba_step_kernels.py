"""Triton kernels for a Mamba decode step at small batch (Mamba §3.3.2's recurrent mode: Alg. 2
for one token).

At batch 1 a step reads every weight once (5.3 GB for Mamba-2.8B: 1.3 ms at the H200's copy
bandwidth), but the op-by-op step takes 3.0 ms: per layer in_proj + out_proj through cuBLAS stream
at 3.5 / 2.4 TB/s (26 us), and five small kernels (conv update, x_proj, dt_proj, state update,
add+norm) cost ~2-7 us each. Two things here, both measured in experiments/benchmarks/README.md:

* :func:`gemv`: a row-block GEMV for batch 1 (3.6 / 2.8 TB/s on those two matrices, and x_proj /
  dt_proj faster than cuBLAS's split-K): 3.02 -> 2.48 ms per step with all four projections.
* :class:`FusedMixerStep`: the four ops between the GEMVs as two kernels,
  ``_conv_x_proj`` (the causal-conv window update + SiLU for a block of channels, and that block's
  share of ``x_proj``: one partial sum per block, summed by the next kernel, so no atomics and
  nothing to zero) and ``_ssm_update`` (x_proj's sum -> ``dt_proj`` + bias + softplus,
  ``h = exp(dt A) h + dt B x``, ``y = C h + D x``, gated by ``SiLU(z)``). Fewer launches, but
  each program re-reads the partials and the window is shifted in place behind a barrier: 2.87 ms
  against 2.80 with Triton GEMVs for in_proj / out_proj (2.48 with all four), so the decoder's
  autotuning keeps the op kernels on an H200.

Rounding follows the op-by-op bf16 layer: in_proj, the conv output, x_proj and dt_proj outputs are
rounded to the weights' dtype; the SSM state and its arithmetic are float32.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import triton
import triton.language as tl

MAX_BATCH = 16  # the grids hold one program per batch row: larger batches take the op-by-op step


@triton.jit
def _conv_x_proj(
    xz_ptr,
    conv_state_ptr,
    conv_w_ptr,
    conv_b_ptr,
    xproj_w_ptr,
    xc_ptr,
    part_ptr,
    B,
    D,
    E,
    stride_xz,
    stride_cs_b,
    stride_cs_d,
    HAS_CONV_BIAS: tl.constexpr,
    KC: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_E: tl.constexpr,
):
    pid = tl.program_id(0)
    b = tl.program_id(1)
    ch = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    cm = ch < D
    x = tl.load(xz_ptr + b * stride_xz + ch, mask=cm, other=0.0)
    ks = tl.arange(0, BLOCK_K)
    km = cm[:, None] & (ks[None, :] < KC)
    cs = conv_state_ptr + b * stride_cs_b + ch[:, None] * stride_cs_d + ks[None, :]
    # the window shifted left by one, x appended: read whole, then (after every thread has read:
    # a tile element may live in several threads) written whole
    win = tl.load(cs + 1, mask=cm[:, None] & (ks[None, :] < KC - 1), other=0.0)
    win = tl.where(ks[None, :] == KC - 1, x[:, None].to(win.dtype), win)
    w = tl.load(conv_w_ptr + ch[:, None] * KC + ks[None, :], mask=km, other=0.0)
    out = tl.sum(win.to(tl.float32) * w.to(tl.float32), axis=1)
    if HAS_CONV_BIAS:
        out += tl.load(conv_b_ptr + ch, mask=cm, other=0.0).to(tl.float32)
    tl.debug_barrier()
    tl.store(cs, win, mask=km)
    xc = (out * tl.sigmoid(out)).to(xc_ptr.dtype.element_ty)
    tl.store(xc_ptr + b * D + ch, xc, mask=cm)
    xc = xc.to(tl.float32)
    for e0 in tl.static_range(0, BLOCK_E, 64):  # this block's share of x_proj, 64 rows at a time
        es = e0 + tl.arange(0, 64)
        wx = tl.load(
            xproj_w_ptr + es[:, None] * D + ch[None, :], mask=(es[:, None] < E) & cm[None, :], other=0.0
        )
        part = tl.sum(wx.to(tl.float32) * xc[None, :], axis=1)
        tl.store(part_ptr + (pid * B + b) * E + es, part, mask=es < E)


@triton.jit
def _ssm_update(
    part_ptr,
    n_parts,
    xc_ptr,
    xz_ptr,
    dtw_ptr,
    dtb_ptr,
    A_ptr,
    Dp_ptr,
    state_ptr,
    y_ptr,
    B,
    D,
    R,
    N,
    E,
    stride_xz,
    BLOCK_D: tl.constexpr,
    BLOCK_E: tl.constexpr,
    BLOCK_S: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    pid = tl.program_id(0)
    b = tl.program_id(1)
    ch = pid * BLOCK_D + tl.arange(0, BLOCK_D)
    cmask = ch < D
    es = tl.arange(0, BLOCK_E)
    ns = tl.arange(0, BLOCK_S)
    nmask = ns < N
    # x_proj(x) = (dt_low, B, C): the sum of the per-block partials, BLOCK_P of them per load
    xdbl = tl.zeros([BLOCK_E], dtype=tl.float32)
    for p0 in range(0, n_parts, BLOCK_P):
        ps = p0 + tl.arange(0, BLOCK_P)
        t = tl.load(
            part_ptr + (ps[:, None] * B + b) * E + es[None, :],
            mask=(ps[:, None] < n_parts) & (es[None, :] < E),
            other=0.0,
        )
        xdbl += tl.sum(t, axis=0)
    xdbl = xdbl.to(dtw_ptr.dtype.element_ty).to(tl.float32)  # rounded as x_proj's output is
    # dt_proj reads the first R entries; B and C are picked out with one-hot rows
    w = tl.load(dtw_ptr + ch[:, None] * R + es[None, :], mask=cmask[:, None] & (es[None, :] < R), other=0.0)
    dt = tl.sum(w.to(tl.float32) * xdbl[None, :], axis=1).to(dtw_ptr.dtype.element_ty).to(tl.float32)
    Bv = tl.sum(tl.where(es[None, :] == (R + ns)[:, None], xdbl[None, :], 0.0), axis=1)
    Cv = tl.sum(tl.where(es[None, :] == (R + N + ns)[:, None], xdbl[None, :], 0.0), axis=1)
    dt += tl.load(dtb_ptr + ch, mask=cmask, other=0.0).to(tl.float32)
    dt = tl.where(dt <= 20.0, tl.log(1.0 + tl.exp(dt)), dt)  # softplus, as selective_state_update
    x = tl.load(xc_ptr + b * D + ch, mask=cmask, other=0.0).to(tl.float32)
    z = tl.load(xz_ptr + b * stride_xz + D + ch, mask=cmask, other=0.0).to(tl.float32)
    sm = cmask[:, None] & nmask[None, :]
    A = tl.load(A_ptr + ch[:, None] * N + ns[None, :], mask=sm, other=0.0)
    sp = state_ptr + b * D * N + ch[:, None] * N + ns[None, :]
    h = tl.load(sp, mask=sm, other=0.0)
    h = h * tl.exp(dt[:, None] * A) + (dt * x)[:, None] * Bv[None, :]
    tl.debug_barrier()  # every thread holding a copy of an element has read it before it is overwritten
    tl.store(sp, h, mask=sm)
    y = tl.sum(h * Cv[None, :], axis=1) + tl.load(Dp_ptr + ch, mask=cmask, other=0.0).to(tl.float32) * x
    y = y * z * tl.sigmoid(z)
    tl.store(y_ptr + b * D + ch, y.to(y_ptr.dtype.element_ty), mask=cmask)


@triton.jit
def _gemv_rows(x_ptr, w_ptr, y_ptr, N, K, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """y[rows] = W[rows, :] @ x at batch 1; products summed elementwise, reduced once at the end."""
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        w = tl.load(
            w_ptr + rows[:, None] * K + ks[None, :], mask=(rows[:, None] < N) & (ks[None, :] < K), other=0.0
        )
        acc += w.to(tl.float32) * tl.load(x_ptr + ks, mask=ks < K, other=0.0).to(tl.float32)[None, :]
    tl.store(y_ptr + rows, tl.sum(acc, axis=1).to(y_ptr.dtype.element_ty), mask=rows < N)


def gemv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` for x (1, K). On an H200 this streams Mamba-2.8B's in_proj at
    3.6 TB/s and out_proj at 2.8 where cuBLAS reaches 3.5 and 2.4 (scripts/bench_gemv.py, whose
    sweep picked the tiles: tall matrices 8 rows x 256, wide ones 4 x 512). Rows per program shrink
    until the grid has two programs per multiprocessor, so small matrices still fill the GPU."""
    n, k = weight.shape
    weight = weight.contiguous()  # a no-op for nn.Linear weights: the kernel reads rows of K
    bn, bk, warps, stages = (8, 256, 4, 3) if n >= k else (4, 512, 8, 1)
    while bn > 1 and triton.cdiv(n, bn) < 2 * _multiprocessors(x.device):
        bn //= 2
    y = torch.empty(1, n, device=x.device, dtype=weight.dtype)
    _gemv_rows[(triton.cdiv(n, bn),)](
        x.contiguous(), weight, y, n, k, BLOCK_N=bn, BLOCK_K=bk, num_warps=warps, num_stages=stages
    )
    return y if bias is None else y + bias


@functools.lru_cache
def _multiprocessors(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 132


class FusedMixerStep:
    """``mixer(i, layer.mixer, h) -> out`` for :class:`~mmssm_lightning.inference.mamba_decode.MambaDecoder`:
    one token through layer ``i``'s mixer, its conv window and SSM state updated in place.

    Args:
        model: the HF ``MambaForCausalLM`` (weights used in place; ``A = -exp(A_log)`` precomputed).
        batch_size: 1 to ``MAX_BATCH``.
        conv_state / ssm_state: the decoder's (layers, b, d_inner, d_conv) / (layers, b, d_inner, d_state).
        block_n: channels per ``_conv_x_proj`` program (one x_proj partial each).
        block_d: channels per ``_ssm_update`` program.
        linear: ``(x, layer) -> y`` for in_proj / out_proj (the decoder's choice of GEMV).
        A: per layer ``-exp(A_log)`` in float32, where the caller holds it already.
    """

    def __init__(
        self,
        model,
        batch_size: int,
        conv_state: torch.Tensor,
        ssm_state: torch.Tensor,
        block_n: int = 64,
        block_d: int = 32,
        linear: Callable = lambda x, layer: layer(x),
        A: list[torch.Tensor] | None = None,
    ) -> None:
        if not 1 <= batch_size <= MAX_BATCH:
            raise ValueError(f"the fused Mamba step runs batch 1..{MAX_BATCH}, got {batch_size}")
        layers = model.backbone.layers
        m = layers[0].mixer
        if m.x_proj.bias is not None:
            raise ValueError("the fused Mamba step assumes x_proj without bias (HF's MambaMixer has none)")
        self.d_inner, self.d_state, self.d_conv, self.dt_rank = (
            m.intermediate_size,
            m.ssm_state_size,
            m.conv_kernel_size,
            m.time_step_rank,
        )
        self.e = self.dt_rank + 2 * self.d_state
        self.block_n, self.block_d = block_n, block_d
        self.linear = linear
        self.n_parts = triton.cdiv(self.d_inner, block_n)
        self.batch_size = batch_size
        self.conv_state, self.ssm_state = conv_state, ssm_state
        self.A = A if A is not None else [-torch.exp(layer.mixer.A_log.float()) for layer in layers]
        self.conv_w = [layer.mixer.conv1d.weight.squeeze(1).contiguous() for layer in layers]
        w = m.in_proj.weight
        self.xc = torch.zeros(batch_size, self.d_inner, device=w.device, dtype=w.dtype)
        self.y = torch.zeros(batch_size, self.d_inner, device=w.device, dtype=w.dtype)
        self.part = torch.zeros(self.n_parts, batch_size, self.e, device=w.device, dtype=torch.float32)

    def __call__(self, i: int, m, h: torch.Tensor) -> torch.Tensor:
        b, D, N, R, E = self.batch_size, self.d_inner, self.d_state, self.dt_rank, self.e
        xz = self.linear(h.to(m.in_proj.weight.dtype), m.in_proj)  # (b, 2 D), cuBLAS
        cs = self.conv_state[i]
        _conv_x_proj[(self.n_parts, b)](
            xz,
            cs,
            self.conv_w[i],
            m.conv1d.bias,
            m.x_proj.weight,
            self.xc,
            self.part,
            b,
            D,
            E,
            xz.stride(0),
            cs.stride(0),
            cs.stride(1),
            HAS_CONV_BIAS=m.conv1d.bias is not None,
            KC=self.d_conv,
            BLOCK_N=self.block_n,
            BLOCK_K=triton.next_power_of_2(self.d_conv),
            BLOCK_E=64 * triton.cdiv(E, 64),
        )
        _ssm_update[(triton.cdiv(D, self.block_d), b)](
            self.part,
            self.n_parts,
            self.xc,
            xz,
            m.dt_proj.weight,
            m.dt_proj.bias,
            self.A[i],
            m.D,
            self.ssm_state[i],
            self.y,
            b,
            D,
            R,
            N,
            E,
            xz.stride(0),
            BLOCK_D=self.block_d,
            BLOCK_E=triton.next_power_of_2(E),
            BLOCK_S=triton.next_power_of_2(N),
            BLOCK_P=min(16, triton.next_power_of_2(self.n_parts)),
        )
        return self.linear(self.y, m.out_proj)
