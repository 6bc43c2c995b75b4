"""The selective scan of Mamba (Gu & Dao 2023, §3.2 Alg. 2: h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t,
y_t = C_t h_t + D u_t, gated by SiLU(z_t)) as Triton kernels, forward and backward, with the semantics of
``mamba_ssm.ops.selective_scan_interface.selective_scan_fn`` (real A, shared or grouped B/C, float32
state, delta bias + softplus, D skip, z gate, last state) plus sequence resets for packed batches.

Layout, and why. Triton places a tile's elements on threads by the contiguity of the memory it was
loaded from, and a scan along an axis is cheap only when that axis lives inside one thread (across
lanes every element pays log2(lanes) shuffle rounds). So the kernels read u, delta, z (and dy)
**channel-last**: a (T, BD) tile of T time steps x BD channels, d contiguous, puts lanes on
channels (VEC adjacent channels each) and the T steps of a chunk in registers. The recurrence over
a chunk is then a sequential in-register scan, and the inner loop over the N states costs, per
(t, d, n): one exp2 (log2 e folded into A) and four FP32 ops (delta*A, h*a, +delta*u*B, +h*C) — the
floor for this recurrence (checked in the sm_90 PTX). Inputs laid out (b, d, l) with l contiguous
(mamba_ssm's layout) are transposed once by :func:`_to_channel_last`; Mamba's own projections
produce channel-last tensors, so :func:`~mmssm_lightning.models.ssm.mixer_forward` feeds the
kernels without copies. B and C are copied to float32 (b, G, L / T, N, T) — 0.5 MB at the Cobra
shape — so each state's chunk of B_n / C_n is one vector load at a constant offset, the same for
all lanes of a program.

Forward: grid (D / BD, batch); each program walks its chunks in order, states carried in registers.
Backward: a recompute pass (the forward kernel writing the state at each chunk start into a
transient (b, L / T, N, D) float32 buffer, and dz, the one gradient that needs y), then one program
per (channel block, batch) walks the chunks in reverse: per state n it recomputes h over the chunk
from the stored start state, runs the adjoint g_t = C_t dy_t + exp(delta_{t+1} A) g_{t+1} as a
forward scan over flipped rows (its carry is a_T g_T of the later chunk), and accumulates du,
ddelta (through softplus), dD, ddelta_bias and dA. dB and dC need a sum over channels: each program
writes its block's sums per (n, t) to a (b, D / BD, L / T, N, T) float32 buffer, summed afterwards
(deterministic; atomics only when a block straddles two B/C groups). Kept for backward: the inputs
only (no O(B D L N) states).

Bound at the Cobra recipe's scan (B 16, D 5120, L 985, N 16): 1.29e9 state updates, one exp2
each; an H200 does 16 exp2 / clock / SM (0.31 ms) and 128 FP32 ops / clock / SM (4 ops / update:
0.15 ms), against 0.15 ms to stream u, delta, z, y. The sm_90 SASS issues ~9 instructions per
update forward (the softplus / SiLU per (t, d), conversions and address math included) and ~38
backward (recompute pass 10, reverse pass 28): scripts/sass_selective_scan.py.

Packing: ``seq_idx`` (b, L) int32 restarts the state wherever it changes between t-1 and t (the
exp(delta A) factor is zeroed there, in both passes), so several sequences packed into one row
scan independently; ``cu_seqlens`` converts with :func:`seq_idx_from_cu_seqlens`. The causal
conv before the scan must reset too (``causal_conv1d`` takes the same ``seq_idx``).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)
LN2 = tl.constexpr(0.6931471805599453)
# (VEC channels per lane, T steps per chunk, warps per program, pipeline stages of the forward's
# chunk loop: 2 prefetches the next chunk through cp.async); a program holds 32 * warps * VEC
# channels. VEC >= 2 so that Triton sees contiguity along channels (VEC = 1 ties and puts lanes on
# time). None spills in the common path on sm_90 (experiments/benchmarks/README.md); the tuner times
# them on the device. A backward config sets the recompute pass's stages too.
FWD_CONFIGS = ((4, 4, 1, 2), (4, 4, 1, 1), (2, 4, 1, 2), (2, 4, 1, 1), (2, 8, 1, 2))
BWD_CONFIGS = ((4, 4, 1, 1), (2, 8, 1, 2), (2, 4, 1, 2), (2, 4, 1, 1))
INTERPRETER_CONFIG = (1, 4, 1, 1)


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


INTERPRET = tl.constexpr(_interpreting())  # Triton reads the switch when a kernel is defined, too


@triton.jit
def _scan_combine(a1, b1, a2, b2):
    # step (a1, b1) then (a2, b2): h -> a2 (a1 h + b1) + b2
    return a1 * a2, b1 * a2 + b2


@triton.jit
def _adjoint_combine(p_late, f_late, g_late, p_early, f_early, g_early):
    # g_t = c_t + a_{t+1} g_{t+1} over time-reversed rows. A span [t..s] is (product of its a after
    # the first step, its first a, g_t from the c in the span); the span later in time comes first.
    q = p_early * f_late
    return q * p_late, f_early, g_early + q * g_late


@triton.jit
def _rcp(x):
    # 1 / x as one MUFU op (the `/` operator emits a ~10-instruction IEEE-range division)
    if INTERPRET:
        return 1.0 / x
    else:
        return tl.inline_asm_elementwise(
            "rcp.approx.ftz.f32 $0, $1;", "=r,r", [x], dtype=tl.float32, is_pure=True, pack=1
        )


@triton.jit
def _softplus(x):
    # log1p(exp(x)) below 20 (mamba_ssm's threshold), exp2 / log2 being single MUFU ops; log1p(e)
    # by its series where 1 + e would round e away (error < e^4 / 4 < 3e-9)
    e = tl.exp2(x * LOG2E)
    lp = tl.where(e < 0.01, e * (1.0 - e * (0.5 - e * 0.3333333333333333)), tl.log2(1.0 + e) * LN2)
    return tl.where(x <= 20.0, lp, x)


@triton.jit
def _sigmoid(x):
    return _rcp(1.0 + tl.exp2(-x * LOG2E))


@triton.jit
def _row(tile, idx, i):
    # row i of a (rows, BD) tile whose rows are in-thread: the select folds to a register pick
    return tl.sum(tl.where(idx[:, None] == i, tile, -0.0), axis=0)


@triton.jit
def _resets(seq_ptr, b, t, tm, length):
    # True where a packed sequence starts at t (its state must not see t-1)
    cur = tl.load(seq_ptr + b * length + t, mask=tm, other=0)
    prev = tl.load(seq_ptr + b * length + t - 1, mask=tm & (t > 0), other=0)
    return (t > 0) & (cur != prev)


@triton.jit
def _delta(dl_ptr, bias, t, d, m2, s_b, s_l, b, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    # delta after bias and softplus; 0 outside the sequence, so exp(0 * A) = 1 carries the state
    dl = tl.load(dl_ptr + b * s_b + t[:, None] * s_l + d[None, :], mask=m2, other=0.0).to(tl.float32)
    if HAS_BIAS:
        dl += bias[None, :]
    if SOFTPLUS:
        dl = _softplus(dl)
    return tl.where(m2, dl, 0.0)


@triton.jit
def _fwd_kernel(
    u_ptr,
    dl_ptr,
    z_ptr,
    g_ptr,
    out_ptr,
    A2_ptr,
    B_ptr,
    C_ptr,
    D_ptr,
    bias_ptr,
    seq_ptr,
    st_ptr,
    last_ptr,
    dim,
    length,
    lpad,
    cpg,
    n_groups,
    s_ub,
    s_ul,
    s_db,
    s_dl,
    s_zb,
    s_zl,
    s_gb,
    s_gl,
    NR: tl.constexpr,
    NP: tl.constexpr,
    T: tl.constexpr,
    VEC: tl.constexpr,
    BD: tl.constexpr,
    HAS_D: tl.constexpr,
    HAS_Z: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr,
    HAS_SEQ: tl.constexpr,
    ROW_GROUPS: tl.constexpr,
    RECOMPUTE: tl.constexpr,
    STAGES: tl.constexpr,
):
    """Forward: out = (C h + D u) * silu(z), and the last state. ``RECOMPUTE`` (the first pass of
    backward): the state at each chunk start into ``st`` and, with z, dz = dout * y * silu'(z) into
    ``out`` (y is only needed there, so the backward kernel carries no y)."""
    pid = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    d = pid * BD + tl.max_contiguous(tl.arange(0, BD), VEC)
    dm = d < dim
    nn = tl.arange(0, NP)
    nm = nn < NR
    tt = tl.arange(0, T)
    A2 = tl.load(A2_ptr + nn[:, None] * dim + d[None, :], mask=nm[:, None] & dm[None, :], other=0.0)
    if HAS_D:
        Dv = tl.load(D_ptr + d, mask=dm, other=0.0)
    bias = tl.load(bias_ptr + d, mask=dm, other=0.0) if HAS_BIAS else tl.zeros([BD], dtype=tl.float32)
    # B / C laid out (b, G, chunk, N, T): a state's T values sit at a constant offset in the chunk
    if ROW_GROUPS:
        bc_row = ((b * n_groups + d // cpg) * lpad * NR)[None, :] + tt[:, None]  # blocks span groups
    else:
        bc_row = (b * n_groups + (pid * BD) // cpg) * lpad * NR + tt
    WANT_Y: tl.constexpr = (not RECOMPUTE) or HAS_Z
    nchunks = tl.cdiv(length, T)
    H = tl.zeros([NP, BD], dtype=tl.float32)
    for c in tl.range(nchunks, num_stages=STAGES):
        t = c * T + tt
        tm = t < length
        m2 = tm[:, None] & dm[None, :]
        u = tl.load(u_ptr + b * s_ub + t[:, None] * s_ul + d[None, :], mask=m2, other=0.0).to(tl.float32)
        dl = _delta(dl_ptr, bias, t, d, m2, s_db, s_dl, b, HAS_BIAS, SOFTPLUS)
        du = dl * u
        if HAS_SEQ:
            reset = _resets(seq_ptr, b, t, tm, length)
        if RECOMPUTE:
            st = st_ptr + ((b * nchunks + c) * NR + nn[:, None]) * dim + d[None, :]
            tl.store(st, H, mask=nm[:, None] & dm[None, :])
        y = tl.zeros([T, BD], dtype=tl.float32)
        for n in tl.static_range(NR):
            bc = bc_row + (c * NR + n) * T
            if ROW_GROUPS:
                Bn = tl.load(B_ptr + bc, mask=dm[None, :], other=0.0)
            else:
                Bn = tl.load(B_ptr + bc)[:, None]
            a = tl.exp2(dl * _row(A2, nn, n)[None, :])
            if HAS_SEQ:
                a = tl.where(reset[:, None], 0.0, a)
            x = du * Bn
            x = tl.where(tt[:, None] == 0, x + a * _row(H, nn, n)[None, :], x)
            _, h = tl.associative_scan((a, x), 0, _scan_combine)
            if WANT_Y:
                if ROW_GROUPS:
                    Cn = tl.load(C_ptr + bc, mask=dm[None, :], other=0.0)
                else:
                    Cn = tl.load(C_ptr + bc)[:, None]
                y += h * Cn
            h_last = tl.sum(tl.where(tt[:, None] == T - 1, h, -0.0), axis=0)
            H = tl.where(nn[:, None] == n, h_last[None, :], H)
        if WANT_Y:
            if HAS_D:
                y += Dv[None, :] * u
            o = out_ptr + b * dim * length + t[:, None] * dim + d[None, :]
            if HAS_Z:
                z = tl.load(z_ptr + b * s_zb + t[:, None] * s_zl + d[None, :], mask=m2, other=0.0)
                z = z.to(tl.float32)
                sz = _sigmoid(z)
                if RECOMPUTE:
                    dout = tl.load(g_ptr + b * s_gb + t[:, None] * s_gl + d[None, :], mask=m2, other=0.0)
                    y = dout.to(tl.float32) * y * sz * (1.0 + z * (1.0 - sz))
                else:
                    y = y * z * sz
            tl.store(o, y.to(out_ptr.dtype.element_ty), mask=m2)
    if not RECOMPUTE:
        tl.store(last_ptr + (b * NR + nn[:, None]) * dim + d[None, :], H, mask=nm[:, None] & dm[None, :])


@triton.jit
def _bwd_kernel(
    u_ptr,
    dl_ptr,
    z_ptr,
    g_ptr,
    A2_ptr,
    B_ptr,
    C_ptr,
    D_ptr,
    bias_ptr,
    seq_ptr,
    st_ptr,
    du_ptr,
    ddl_ptr,
    dA_ptr,
    dD_ptr,
    dbias_ptr,
    dB_ptr,
    dC_ptr,
    w_ptr,
    dim,
    length,
    lpad,
    cpg,
    n_groups,
    nblk,
    s_ub,
    s_ul,
    s_db,
    s_dl,
    s_zb,
    s_zl,
    s_gb,
    s_gl,
    NR: tl.constexpr,
    T: tl.constexpr,
    VEC: tl.constexpr,
    BD: tl.constexpr,
    HAS_D: tl.constexpr,
    HAS_Z: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr,
    HAS_SEQ: tl.constexpr,
    ROW_GROUPS: tl.constexpr,
):
    """du, ddelta (through softplus), dA, dD, ddelta_bias and dB / dC per channel block; chunks in
    reverse, the chunk-start states from the recompute pass. The loop over states is a runtime loop
    (unrolled, every state's loads are hoisted and the registers spill), so the per-state vectors
    (A2 row, the adjoint carry w = a_T g_T of the chunk after, the dA sum) live in memory: each
    thread rereads only what it wrote itself (one pointer expression, one layout)."""
    pid = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    d = pid * BD + tl.max_contiguous(tl.arange(0, BD), VEC)
    dm = d < dim
    tt = tl.arange(0, T)
    if HAS_D:
        Dv = tl.load(D_ptr + d, mask=dm, other=0.0)
    bias = tl.load(bias_ptr + d, mask=dm, other=0.0) if HAS_BIAS else tl.zeros([BD], dtype=tl.float32)
    if ROW_GROUPS:
        bc_row = ((b * n_groups + d // cpg) * lpad * NR)[None, :] + tt[:, None]
    else:
        bc_row = (b * n_groups + (pid * BD) // cpg) * lpad * NR + tt
    part_row = (b * nblk + pid) * lpad * NR + tt  # this block's dB / dC sums, laid out as B / C
    state_row = b * NR * dim + d  # (b, N, D): dA and the adjoint carries
    out_b = b * dim * length  # du, ddelta: contiguous (b, l, d)
    nchunks = tl.cdiv(length, T)
    dD = tl.zeros([BD], dtype=tl.float32)
    dbias = tl.zeros([BD], dtype=tl.float32)
    ones = tl.full([T, BD], 1.0, tl.float32)
    for cc in range(nchunks):
        c = nchunks - 1 - cc
        t = c * T + tt
        tm = t < length
        m2 = tm[:, None] & dm[None, :]
        dl = _delta(dl_ptr, bias, t, d, m2, s_db, s_dl, b, HAS_BIAS, SOFTPLUS)
        du = dl * tl.load(u_ptr + b * s_ub + t[:, None] * s_ul + d[None, :], mask=m2, other=0.0).to(
            tl.float32
        )
        dy = tl.load(g_ptr + b * s_gb + t[:, None] * s_gl + d[None, :], mask=m2, other=0.0).to(tl.float32)
        if HAS_Z:
            z = tl.load(z_ptr + b * s_zb + t[:, None] * s_zl + d[None, :], mask=m2, other=0.0).to(tl.float32)
            dy = dy * z * _sigmoid(z)  # dL/dy before the gate
        if HAS_SEQ:
            reset = _resets(seq_ptr, b, t, tm, length)
        gB = tl.zeros([T, BD], dtype=tl.float32)
        ddl = tl.zeros([T, BD], dtype=tl.float32)
        for n in range(NR):
            a2 = tl.load(A2_ptr + n * dim + d, mask=dm, other=0.0)
            bc = bc_row + (c * NR + n) * T
            if ROW_GROUPS:
                Bn = tl.load(B_ptr + bc, mask=dm[None, :], other=0.0)
                Cn = tl.load(C_ptr + bc, mask=dm[None, :], other=0.0)
            else:
                Bn = tl.load(B_ptr + bc)[:, None]
                Cn = tl.load(C_ptr + bc)[:, None]
            h0 = tl.load(st_ptr + ((b * nchunks + c) * NR + n) * dim + d, mask=dm, other=0.0)
            a = tl.exp2(dl * a2[None, :])
            if HAS_SEQ:
                a = tl.where(reset[:, None], 0.0, a)
            x = du * Bn
            _, h = tl.associative_scan(
                (a, tl.where(tt[:, None] == 0, x + a * h0[None, :], x)), 0, _scan_combine
            )
            cg = dy * Cn
            if c < nchunks - 1:
                w = tl.load(w_ptr + state_row + n * dim, mask=dm, other=0.0)
                cg = tl.where(tt[:, None] == T - 1, cg + w[None, :], cg)
            # reverse=True would flip through lane shuffles; flipping the in-thread axis is free
            _, _, g = tl.associative_scan((ones, tl.flip(a, 0), tl.flip(cg, 0)), 0, _adjoint_combine)
            g = tl.flip(g, 0)
            if ROW_GROUPS:
                tl.atomic_add(dB_ptr + bc, g * du, mask=m2, sem="relaxed")
                tl.atomic_add(dC_ptr + bc, dy * h, mask=m2, sem="relaxed")
            else:
                part = part_row + (c * NR + n) * T
                tl.store(dB_ptr + part, tl.sum(g * du, axis=1))
                tl.store(dC_ptr + part, tl.sum(dy * h, axis=1))
            gB += g * Bn
            ga = g * (h - x)  # g_t a_t h_{t-1}: the gradient through exp(delta_t A)
            ddl += ga * (a2 * LN2)[None, :]
            dA_n = tl.sum(ga * dl, axis=0)
            if c < nchunks - 1:
                dA_n += tl.load(dA_ptr + state_row + n * dim, mask=dm, other=0.0)
            tl.store(dA_ptr + state_row + n * dim, dA_n, mask=dm)
            tl.store(
                w_ptr + state_row + n * dim, tl.sum(tl.where(tt[:, None] == 0, a * g, -0.0), axis=0), mask=dm
            )
        u = tl.load(u_ptr + b * s_ub + t[:, None] * s_ul + d[None, :], mask=m2, other=0.0).to(tl.float32)
        dxu = gB * dl
        ddl += gB * u
        if HAS_D:
            dxu += dy * Dv[None, :]
            dD += tl.sum(dy * u, axis=0)
        if SOFTPLUS:  # softplus' = sigmoid of its input
            dlr = tl.load(dl_ptr + b * s_db + t[:, None] * s_dl + d[None, :], mask=m2, other=0.0)
            dlr = dlr.to(tl.float32)
            if HAS_BIAS:
                dlr += bias[None, :]
            ddl = ddl * _sigmoid(dlr)
        ddl = tl.where(m2, ddl, 0.0)
        if HAS_BIAS:
            dbias += tl.sum(ddl, axis=0)
        o = out_b + t[:, None] * dim + d[None, :]
        tl.store(du_ptr + o, dxu.to(du_ptr.dtype.element_ty), mask=m2)
        tl.store(ddl_ptr + o, ddl.to(ddl_ptr.dtype.element_ty), mask=m2)
        tl.debug_barrier()  # the carries stored this chunk are read back by the next, whatever the layout
    if HAS_D:
        tl.store(dD_ptr + b * dim + d, dD, mask=dm)
    if HAS_BIAS:
        tl.store(dbias_ptr + b * dim + d, dbias, mask=dm)


@triton.jit
def _transpose_kernel(x_ptr, y_ptr, rows, cols, s_b, s_r, s_c, BR: tl.constexpr, BC: tl.constexpr):
    # y[b, c, r] = x[b, r, c]; both sides coalesced (Triton moves the tile through shared memory)
    b = tl.program_id(2).to(tl.int64)
    r = tl.program_id(0) * BR + tl.arange(0, BR)
    c = tl.program_id(1) * BC + tl.arange(0, BC)
    m = (r[:, None] < rows) & (c[None, :] < cols)
    v = tl.load(x_ptr + b * s_b + r[:, None] * s_r + c[None, :] * s_c, mask=m)
    tl.store(y_ptr + (b * cols + c[None, :]) * rows + r[:, None], v, mask=m)


def _to_channel_last(x: torch.Tensor) -> torch.Tensor:
    """(b, d, l) -> the same values as a (b, d, l) view of a (b, l, d) buffer (stride(1) == 1)."""
    if x.stride(1) == 1:
        return x
    b, d, length = x.shape
    y = torch.empty(b, length, d, device=x.device, dtype=x.dtype)
    grid = (triton.cdiv(d, 64), triton.cdiv(length, 64), b)
    _transpose_kernel[grid](x, y, d, length, x.stride(0), x.stride(1), x.stride(2), BR=64, BC=64)
    return y.transpose(1, 2)


def _chunked_bc(m: torch.Tensor, groups: int, n: int, length: int, chunk: int) -> torch.Tensor:
    """B or C as float32 (b, G, L / chunk, N, chunk), zero past L: per chunk, state n's steps sit
    at a constant offset (0.5 MB at the Cobra shape)."""
    b, nchunks = m.shape[0], triton.cdiv(length, chunk)
    padded = m.new_zeros(b, groups, n, nchunks * chunk, dtype=torch.float32)
    padded[..., :length] = m.reshape(b, groups, n, length)
    return padded.view(b, groups, n, nchunks, chunk).transpose(2, 3).contiguous()


def _unchunk(part: torch.Tensor, length: int) -> torch.Tensor:
    """(b, G, L / chunk, N, chunk) -> (b, G, N, L)."""
    b, g, nchunks, n, chunk = part.shape
    return part.permute(0, 1, 3, 2, 4).reshape(b, g, n, nchunks * chunk)[..., :length]


def _block_d(vec: int, warps: int) -> int:
    """Channels per program: 32 lanes x warps x VEC (8 lanes in the interpreter, whose 'lanes' are
    numpy columns: smaller tiles run faster there)."""
    return (8 if _interpreting() else 32) * warps * vec


def _next_pow2(v: int) -> int:
    return 1 << max(0, (v - 1).bit_length())


_TUNED: dict[tuple, tuple[int, ...]] = {}


def _pick(kind: str, key: tuple, candidates, run) -> tuple[int, ...]:
    """The fastest candidate config for ``key``, timed once per process on the GPU (``run(cfg)``
    launches it); the interpreter, and a call inside CUDA-graph capture (no timing there), take the
    first candidate."""
    full = (kind, *key)
    if full in _TUNED:
        return _TUNED[full]
    if len(candidates) == 1 or _interpreting() or torch.cuda.is_current_stream_capturing():
        choice = candidates[0]
    else:
        times = [triton.testing.do_bench(lambda c=c: run(c), warmup=3, rep=10) for c in candidates]
        choice = candidates[min(range(len(candidates)), key=times.__getitem__)]
    _TUNED[full] = choice
    return choice


def _configs(table, dim: int, cpg: int, groups: int, config):
    """Candidate configs: the one asked for, or the table's with blocks inside a group when B/C are
    grouped (otherwise the kernels gather B/C per channel: ROW_GROUPS)."""
    if config is not None:
        return [(*config, 1)[:4]]  # stages default to 1
    if _interpreting():
        return [INTERPRETER_CONFIG]
    fits = [c for c in table if _block_d(c[0], c[2]) <= max(64, _next_pow2(dim))]
    if groups > 1:
        fits = [c for c in fits if cpg % _block_d(c[0], c[2]) == 0] or fits
    return fits or [(2, 4, 1, 1)]


class _Inputs:
    """The kernels' view of selective_scan_fn's arguments (channel-last u / delta / z, padded B / C)."""

    def __init__(self, u, delta, A, B, C, D, z, delta_bias, seq_idx, chunk: int):
        if u.dim() != 3 or delta.shape != u.shape or (z is not None and z.shape != u.shape):
            raise ValueError(
                f"selective scan: u, delta (and z) must share one (b, d, l) shape, got {u.shape}"
            )
        self.batch, self.dim, self.length = u.shape
        self.nr = A.shape[1]
        self.np = _next_pow2(self.nr)
        self.groups = 1 if B.dim() == 3 else B.shape[1]
        if self.dim % self.groups:
            raise ValueError(f"selective scan: {self.dim} channels do not split into {self.groups} groups")
        self.cpg = self.dim // self.groups
        self.u, self.delta = _to_channel_last(u), _to_channel_last(delta)
        self.z = None if z is None else _to_channel_last(z)
        self.A2 = (A.float() * LOG2E.value).t().contiguous()
        self.D = None if D is None else D.float().contiguous()
        self.bias = None if delta_bias is None else delta_bias.float().contiguous()
        self.seq = None if seq_idx is None else seq_idx.to(torch.int32).contiguous()
        self.set_chunk(B, C, chunk)

    def set_chunk(self, B, C, chunk: int) -> None:
        self.chunk = chunk
        self.nchunks = triton.cdiv(self.length, chunk)
        self.lpad = self.nchunks * chunk
        self.B = _chunked_bc(B, self.groups, self.nr, self.length, chunk)
        self.C = _chunked_bc(C, self.groups, self.nr, self.length, chunk)

    def common(self, vec: int, warps: int) -> dict:
        bd = _block_d(vec, warps)
        return {
            "NR": self.nr,
            "NP": self.np,
            "T": self.chunk,
            "VEC": vec,
            "BD": bd,
            "HAS_D": self.D is not None,
            "HAS_Z": self.z is not None,
            "HAS_BIAS": self.bias is not None,
            "HAS_SEQ": self.seq is not None,
            "ROW_GROUPS": self.groups > 1 and self.cpg % bd != 0,
            "num_warps": warps,
        }


def _fwd_args(x: _Inputs, dout: torch.Tensor | None, out, st, last):
    z = x.z if x.z is not None else x.u
    g = dout if dout is not None else x.u
    return (
        x.u,
        x.delta,
        z,
        g,
        out,
        x.A2,
        x.B,
        x.C,
        x.D if x.D is not None else x.A2,
        x.bias if x.bias is not None else x.A2,
        x.seq if x.seq is not None else x.A2,
        st,
        last,
        x.dim,
        x.length,
        x.lpad,
        x.cpg,
        x.groups,
        x.u.stride(0),
        x.u.stride(2),
        x.delta.stride(0),
        x.delta.stride(2),
        z.stride(0),
        z.stride(2),
        g.stride(0),
        g.stride(2),
    )


def _forward(x: _Inputs, softplus: bool, vec: int, warps: int, stages: int):
    """y (b, l, d) in u's dtype and the float32 last state (b, N, D)."""
    dev = x.u.device
    out = torch.empty(x.batch, x.length, x.dim, device=dev, dtype=x.u.dtype)
    last = torch.empty(x.batch, x.nr, x.dim, device=dev, dtype=torch.float32)
    grid = (triton.cdiv(x.dim, _block_d(vec, warps)), x.batch)
    _fwd_kernel[grid](
        *_fwd_args(x, None, out, x.A2, last),
        SOFTPLUS=softplus,
        RECOMPUTE=False,
        STAGES=stages,
        **x.common(vec, warps),
    )
    return out, last


def _backward(x: _Inputs, dout: torch.Tensor, softplus: bool, vec: int, warps: int, stages: int):
    """du, ddelta, dz (channel-last, the inputs' dtypes) and float32 dA (D, N), dD, dbias, dB, dC
    (b, G, N, L)."""
    dev = x.u.device
    bd = _block_d(vec, warps)
    nblk = triton.cdiv(x.dim, bd)
    kw = x.common(vec, warps)
    st = torch.empty(x.batch, x.nchunks, x.nr, x.dim, device=dev, dtype=torch.float32)
    dz = torch.empty(x.batch, x.length, x.dim, device=dev, dtype=x.z.dtype) if x.z is not None else None
    _fwd_kernel[(nblk, x.batch)](
        *_fwd_args(x, dout, dz if dz is not None else x.A2, st, x.A2),
        SOFTPLUS=softplus,
        RECOMPUTE=True,
        STAGES=stages,
        **kw,
    )
    du = torch.empty(x.batch, x.length, x.dim, device=dev, dtype=x.u.dtype)
    ddl = torch.empty(x.batch, x.length, x.dim, device=dev, dtype=x.delta.dtype)
    dA = torch.empty(x.batch, x.nr, x.dim, device=dev, dtype=torch.float32)
    w = torch.empty_like(dA)  # the adjoint's carry between chunks
    dD = torch.empty(x.batch, x.dim, device=dev, dtype=torch.float32)
    dbias = torch.empty(x.batch, x.dim, device=dev, dtype=torch.float32)
    row_groups = kw["ROW_GROUPS"]
    shape = (x.batch, x.groups if row_groups else nblk, x.nchunks, x.nr, x.chunk)
    dB = (torch.zeros if row_groups else torch.empty)(shape, device=dev, dtype=torch.float32)
    dC = torch.zeros_like(dB) if row_groups else torch.empty_like(dB)
    z = x.z if x.z is not None else x.u
    kw.pop("NP")
    _bwd_kernel[(nblk, x.batch)](
        x.u,
        x.delta,
        z,
        dout,
        x.A2,
        x.B,
        x.C,
        x.D if x.D is not None else x.A2,
        x.bias if x.bias is not None else x.A2,
        x.seq if x.seq is not None else x.A2,
        st,
        du,
        ddl,
        dA,
        dD,
        dbias,
        dB,
        dC,
        w,
        x.dim,
        x.length,
        x.lpad,
        x.cpg,
        x.groups,
        nblk,
        x.u.stride(0),
        x.u.stride(2),
        x.delta.stride(0),
        x.delta.stride(2),
        z.stride(0),
        z.stride(2),
        dout.stride(0),
        dout.stride(2),
        SOFTPLUS=softplus,
        **kw,
    )
    if not row_groups:  # block sums -> group sums
        dB = dB.view(x.batch, x.groups, nblk // x.groups, *shape[2:]).sum(2)
        dC = dC.view(x.batch, x.groups, nblk // x.groups, *shape[2:]).sum(2)
    L = x.length
    return (
        du.transpose(1, 2),
        ddl.transpose(1, 2),
        None if dz is None else dz.transpose(1, 2),
        dA.sum(0).t(),
        dD.sum(0),
        dbias.sum(0),
        _unchunk(dB, L),
        _unchunk(dC, L),
    )


def _key(x: _Inputs, softplus: bool) -> tuple:
    return (
        x.batch,
        x.dim,
        x.nr,
        x.groups,
        _next_pow2(x.length),
        x.u.dtype,
        x.D is not None,
        x.z is not None,
        x.bias is not None,
        softplus,
        x.seq is not None,
    )


class SelectiveScanFn(torch.autograd.Function):
    """Autograd wrapper: saves the inputs only; backward recomputes the states (see module doc)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, seq_idx, fwd_config, bwd_config):
        groups = 1 if B.dim() == 3 else B.shape[1]
        fwd_cands = _configs(FWD_CONFIGS, u.shape[1], u.shape[1] // groups, groups, fwd_config)
        x = _Inputs(u, delta, A, B, C, D, z, delta_bias, seq_idx, fwd_cands[0][1])

        def run(cfg):
            if cfg[1] != x.chunk:
                x.set_chunk(B, C, cfg[1])
            return _forward(x, delta_softplus, cfg[0], cfg[2], cfg[3])

        cfg = _pick("fwd", _key(x, delta_softplus), fwd_cands, run)
        y, last = run(cfg)
        ctx.save_for_backward(x.u, x.delta, A, B, C, D, x.z, delta_bias, seq_idx)
        ctx.softplus, ctx.bwd_config = delta_softplus, bwd_config
        ctx.shapes = (B.shape, C.shape, B.dtype, C.dtype)
        ctx.mark_non_differentiable(last)
        return y.transpose(1, 2), last.transpose(1, 2).contiguous()

    @staticmethod
    def backward(ctx, dy, _dlast):
        u, delta, A, B, C, D, z, delta_bias, seq_idx = ctx.saved_tensors
        groups = 1 if B.dim() == 3 else B.shape[1]
        cands = _configs(BWD_CONFIGS, u.shape[1], u.shape[1] // groups, groups, ctx.bwd_config)
        x = _Inputs(u, delta, A, B, C, D, z, delta_bias, seq_idx, cands[0][1])
        dout = _to_channel_last(dy)

        def run(cfg):
            if cfg[1] != x.chunk:
                x.set_chunk(B, C, cfg[1])
            return _backward(x, dout, ctx.softplus, cfg[0], cfg[2], cfg[3])

        cfg = _pick("bwd", _key(x, ctx.softplus), cands, run)
        du, ddl, dz, dA, dD, dbias, dB, dC = run(cfg)
        return (
            du,
            ddl,
            dA.to(A.dtype),
            dB.reshape(B.shape).to(B.dtype),
            dC.reshape(C.shape).to(C.dtype),
            None if D is None else dD.to(D.dtype),
            dz,
            None if delta_bias is None else dbias.to(delta_bias.dtype),
            None,
            None,
            None,
            None,
        )


def selective_scan_triton(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    seq_idx: torch.Tensor | None = None,
    fwd_config: tuple[int, ...] | None = None,
    bwd_config: tuple[int, ...] | None = None,
):
    """``selective_scan_fn`` of mamba_ssm, in Triton.

    ``u``, ``delta``, ``z``: (b, d, l), any strides (channel-last, ``stride(1) == 1``, is read in
    place; otherwise transposed once); ``A``: (d, n) real; ``B``, ``C``: (b, n, l) or (b, g, n, l);
    ``D``, ``delta_bias``: (d,); ``seq_idx``: optional (b, l) int, the state restarts where it
    changes. Returns y (b, d, l) in ``u``'s dtype, laid out channel-last (``.contiguous()`` gives
    mamba_ssm's layout) [and the float32 last state (b, d, n), not differentiable].
    ``fwd_config`` / ``bwd_config``: (channels per lane, steps per chunk, warps[, stages]) instead of
    tuning (see ``FWD_CONFIGS``).
    """
    y, last = SelectiveScanFn.apply(
        u, delta, A, B, C, D, z, delta_bias, delta_softplus, seq_idx, fwd_config, bwd_config
    )
    return (y, last) if return_last_state else y


def seq_idx_from_cu_seqlens(cu_seqlens: torch.Tensor, length: int) -> torch.Tensor:
    """(1, length) int32 sequence index of a packed row from cumulative lengths [0, l1, l1+l2, ...]."""
    pos = torch.arange(length, device=cu_seqlens.device)
    return (torch.searchsorted(cu_seqlens[1:].contiguous(), pos, right=True)).to(torch.int32)[None]
