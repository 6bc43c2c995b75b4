"""The selective state space layer of Mamba (Gu & Dao 2023, §3.2 Alg. 2 and §3.4 Fig. 3), with three
backends that compute the same function:

* ``triton``: our Triton selective scan (:mod:`~mmssm_lightning.models.kernels.selective_scan_triton`,
  forward and backward, channel-last), with ``causal_conv1d``'s kernel for the convolution where
  it is installed;
* ``cuda``: the ``mamba_ssm`` selective-scan and ``causal_conv1d`` CUDA kernels;
* ``torch``: a pure-PyTorch selective scan (:func:`selective_scan_torch`), chunked so that a
  sequence of L tokens takes L / chunk_size sequential steps instead of L.

``backend="auto"`` takes the Triton scan on a GPU of compute capability 8.0 or newer where
``triton`` imports (it is tuned for Hopper: experiments/benchmarks/README.md), else the
``mamba_ssm`` kernels where they can run, else PyTorch. The discretisation is the zero-order hold
of Mamba eq. (4) for A (``exp(delta * A)``) and the simplified Euler step ``delta * B`` for B,
exactly as the kernels do.

:class:`MambaMixer` is one Mamba layer with the parameter names of ``mamba_ssm.modules.mamba_simple.Mamba``
and of Hugging Face's ``MambaMixer`` (``in_proj``, ``conv1d``, ``x_proj``, ``dt_proj``, ``A_log``,
``D``, ``out_proj``), so released Mamba weights (e.g. mamba-130m for Q-Mamba) load by name; its
forward (:func:`mixer_forward`) also drives Hugging Face's mixer in training
(:mod:`~mmssm_lightning.models.hf_mamba`). :class:`SelectiveSSM` is the bare SSM over K scan
directions at once (VMamba's SS2D core, used by the MambaVLM projector, §3.2 eq. 7), each direction
with its own parameters.
"""

from __future__ import annotations

import math
import os
from functools import lru_cache
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Backend = Literal["auto", "cuda", "torch", "triton"]
_BACKENDS = ("auto", "cuda", "torch", "triton")


@lru_cache(maxsize=1)
def kernels() -> tuple | None:
    """``(selective_scan_fn, causal_conv1d_fn)`` from mamba_ssm / causal_conv1d, or None."""
    try:
        from causal_conv1d import causal_conv1d_fn
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except ImportError:
        return None
    return selective_scan_fn, causal_conv1d_fn


@lru_cache(maxsize=1)
def triton_scan():
    """Our Triton ``selective_scan_triton``, or None without ``triton``."""
    try:
        from mmssm_lightning.models.kernels.selective_scan_triton import selective_scan_triton
    except ImportError:
        return None
    return selective_scan_triton


@lru_cache(maxsize=1)
def conv_kernel():
    """``causal_conv1d_fn`` (CUDA) where installed, else None."""
    try:
        from causal_conv1d import causal_conv1d_fn
    except ImportError:
        return None
    return causal_conv1d_fn


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def resolve_backend(backend: Backend, x: torch.Tensor) -> str:
    """The scan that runs for ``backend`` on ``x``: ``triton``, ``cuda`` or ``torch``. Asking for
    a backend that cannot run is an error naming why (``triton`` runs on CPU tensors only in
    Triton's interpreter, ``TRITON_INTERPRET=1``)."""
    if backend not in _BACKENDS:
        raise ValueError(f"ssm backend must be one of {_BACKENDS}, got {backend!r}")
    if backend == "torch":
        return "torch"
    if backend == "triton":
        if triton_scan() is None:
            raise RuntimeError("ssm backend 'triton' was asked for but triton is not installed")
        if not x.is_cuda and not _interpreting():
            raise RuntimeError("ssm backend 'triton' needs the input on a GPU (or TRITON_INTERPRET=1)")
        return "triton"
    if backend == "cuda":
        use_kernels(backend, x)  # raises with the reason
        return "cuda"
    if x.is_cuda and triton_scan() is not None and torch.cuda.get_device_capability(x.device)[0] >= 8:
        return "triton"
    return "cuda" if use_kernels(backend, x) else "torch"


def use_kernels(backend: Backend, x: torch.Tensor) -> bool:
    """Whether the ``mamba_ssm`` / ``causal_conv1d`` CUDA kernels run (the decoder's step kernels
    follow this; the prefill scan follows :func:`resolve_backend`)."""
    if backend not in _BACKENDS:
        raise ValueError(f"ssm backend must be one of {_BACKENDS}, got {backend!r}")
    if backend == "torch":
        return False
    available = kernels() is not None and x.is_cuda
    if backend == "cuda" and not available:
        why = (
            "mamba_ssm / causal_conv1d are not installed"
            if kernels() is None
            else "the input is not on a GPU"
        )
        raise RuntimeError(f"ssm backend 'cuda' was asked for but {why}; use backend 'auto' or 'torch'")
    return available


def _expand_groups(m: torch.Tensor, d: int) -> torch.Tensor:
    """B or C as (b, n, l) or (b, g, n, l) -> (b, d|1, n, l): channel c reads group c // (d / g)."""
    if m.dim() == 3:
        return m.unsqueeze(1)
    g = m.shape[1]
    if d % g:
        raise ValueError(f"selective scan: {d} channels do not split into {g} groups")
    return m.repeat_interleave(d // g, dim=1)


def _linear_scan(log_a: torch.Tensor, x: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """All states of h_t = exp(log_a_t) * h_{t-1} + x_t, h_{-1} = 0, along dim -2 of (..., l, n).

    Within a chunk of T steps h_t = exp(S_t) h_0 + sum_{s<=t} exp(S_t - S_s) x_s, with S the running
    sum of log_a: every exponent is <= 0, so nothing overflows however large delta grows; chunks
    are chained through their last state (L / T sequential steps).
    """
    length = x.shape[-2]
    h = x.new_zeros(*x.shape[:-2], x.shape[-1])
    out = torch.empty_like(x)
    for start in range(0, length, chunk_size):
        sl = slice(start, start + chunk_size)
        cum = log_a[..., sl, :].cumsum(-2)  # (..., t, n)
        t = cum.shape[-2]
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()[:, :, None]
        decay = (
            (cum.unsqueeze(-2) - cum.unsqueeze(-3)).masked_fill_(~causal, float("-inf")).exp_()
        )  # (..., t, s, n)
        states = (decay * x[..., sl, :].unsqueeze(-3)).sum(-2) + cum.exp() * h.unsqueeze(-2)
        out[..., sl, :] = states
        h = states[..., -1, :]
    return out


class _SelectiveScan(torch.autograd.Function):
    """y_t = sum_n C_t h_t with h_t = exp(delta_t A) h_{t-1} + delta_t u_t B_t, in float32.

    Canonical shapes: ``u``, ``delta`` (b, g, c, l) for g groups of c channels; ``A`` (g, c, n);
    ``B``, ``C`` (b, g, 1, l, n). Only these inputs are kept for backward: the (b, d, l, n) states
    are recomputed there and freed again, as the CUDA kernel does, so a deep stack of Mamba layers
    fits in memory on the PyTorch path too. The backward is the adjoint recurrence
    g_t = C_t dy_t + exp(delta_{t+1} A) g_{t+1}, run as the same scan in reverse.
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, chunk_size):
        log_a = delta.unsqueeze(-1) * A[None, :, :, None, :]
        h = _linear_scan(log_a, (delta * u).unsqueeze(-1) * B, chunk_size)
        ctx.save_for_backward(u, delta, A, B, C)
        ctx.chunk_size = chunk_size
        last = h[..., -1, :].contiguous()
        ctx.mark_non_differentiable(last)
        return (h * C).sum(-1), last

    @staticmethod
    def backward(ctx, dy, _d_last):
        u, delta, A, B, C = ctx.saved_tensors
        chunk = ctx.chunk_size
        du_ = delta * u
        log_a = delta.unsqueeze(-1) * A[None, :, :, None, :]
        h = _linear_scan(log_a, du_.unsqueeze(-1) * B, chunk)
        # a_{t+1} sits at t; the reverse scan starts from zero, so the last slot's value is moot.
        shifted = torch.cat([log_a[..., 1:, :], torch.zeros_like(log_a[..., :1, :])], dim=-2)
        g = _linear_scan(shifted.flip(-2), (dy.unsqueeze(-1) * C).flip(-2), chunk).flip(-2)
        h_prev = torch.cat([torch.zeros_like(h[..., :1, :]), h[..., :-1, :]], dim=-2)
        d_log_a = g * log_a.exp() * h_prev
        gB = (g * B).sum(-1)
        d_delta = (d_log_a * A[None, :, :, None, :]).sum(-1) + gB * u
        d_u = gB * delta
        d_A = (d_log_a * delta.unsqueeze(-1)).sum((0, 3))
        d_B = (g * du_.unsqueeze(-1)).sum(2, keepdim=True)
        d_C = (dy.unsqueeze(-1) * h).sum(2, keepdim=True)
        return d_u, d_delta, d_A, d_B, d_C, None


def selective_scan_torch(
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
    chunk_size: int = 8,
):
    """Same signature and layout as ``mamba_ssm``'s ``selective_scan_fn``.

    ``u``, ``delta``, ``z``: (b, d, l); ``A``: (d, n); ``B``, ``C``: (b, n, l) or grouped
    (b, g, n, l); ``D``, ``delta_bias``: (d,). Returns y (b, d, l) in ``u``'s dtype [and the
    float32 state after the last step, (b, d, n)].
    """
    dtype = u.dtype
    b, d, length = u.shape
    n = A.shape[1]
    u, delta = u.float(), delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias.float()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    g = 1 if B.dim() == 3 else B.shape[1]
    if d % g:
        raise ValueError(f"selective scan: {d} channels do not split into {g} groups")

    def groups(m: torch.Tensor) -> torch.Tensor:  # (b, [g,] n, l) -> (b, g, 1, l, n)
        return m.float().reshape(b, g, 1, n, length).transpose(-1, -2)

    y, last = _SelectiveScan.apply(
        u.view(b, g, d // g, length),
        delta.view(b, g, d // g, length),
        A.float().view(g, d // g, n),
        groups(B),
        groups(C),
        chunk_size,
    )
    y = y.reshape(b, d, length)
    if D is not None:
        y = y + D.float()[:, None] * u
    if z is not None:
        y = y * F.silu(z.float())
    y = y.to(dtype)
    return (y, last.reshape(b, d, n)) if return_last_state else y


def selective_scan_reference(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, return_last_state=False
):
    """The recurrence h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t, y_t = C_t h_t, one step at a
    time in float64: slow, obviously right, for tests only."""
    u, delta = u.double(), delta.double()
    if delta_bias is not None:
        delta = delta + delta_bias.double()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    b, d, length = u.shape
    Bf, Cf = _expand_groups(B.double(), d), _expand_groups(C.double(), d)  # (b, d|1, n, l)
    h = u.new_zeros(b, d, A.shape[1])
    ys = []
    for t in range(length):
        h = (
            torch.exp(delta[:, :, t, None] * A.double()) * h
            + (delta[:, :, t] * u[:, :, t])[..., None] * Bf[..., t]
        )
        ys.append((h * Cf[..., t]).sum(-1))
    y = torch.stack(ys, dim=-1)
    if D is not None:
        y = y + D.double()[:, None] * u
    if z is not None:
        y = y * F.silu(z.double())
    return (y, h) if return_last_state else y


def selective_scan(
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
    backend: Backend = "auto",
    chunk_size: int = 8,
):
    kind = resolve_backend(backend, u)
    if kind == "triton":
        return triton_scan()(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    if kind == "cuda":
        scan_fn = kernels()[0]
        return scan_fn(
            u, delta, A, B.contiguous(), C.contiguous(), D, z, delta_bias, delta_softplus, return_last_state
        )
    return selective_scan_torch(
        u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, chunk_size
    )


def causal_conv1d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, backend: Backend = "auto"
) -> torch.Tensor:
    """Depthwise causal conv + SiLU. ``x``: (b, d, l), L-contiguous or channel-last (``causal_conv1d``'s
    kernel returns the layout it was given; the F.conv1d fallback returns L-contiguous);
    ``weight``: (d, k)."""
    kind = resolve_backend(backend, x)
    if kind != "torch" and x.is_cuda and conv_kernel() is not None:
        return conv_kernel()(x, weight, bias, activation="silu")
    k = weight.shape[1]
    out = F.conv1d(
        x,
        weight.unsqueeze(1).to(x.dtype),
        None if bias is None else bias.to(x.dtype),
        padding=k - 1,
        groups=x.shape[1],
    )
    return F.silu(out[..., : x.shape[-1]])


def _masked(x: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """(b, l, d) with padded positions zeroed, as Hugging Face's Mamba does before in_proj and x_proj."""
    return x if attention_mask is None else (x * attention_mask[:, :, None]).to(x.dtype)


def mixer_forward(
    m: nn.Module,
    hidden: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    backend: Backend = "auto",
    chunk_size: int = 8,
) -> torch.Tensor:
    """One Mamba layer on ``m``'s parameters (``in_proj``, ``conv1d``, ``x_proj``, ``dt_proj``, ``A_log``,
    ``D``, ``out_proj``; ours or Hugging Face's). ``(b, l, d_model) -> (b, l, d_model)``.

    Every projection is one GEMM on a (b, l, .) activation (no batched einsums), and on the Triton
    backend nothing is copied between them: in_proj's output is read channel-last by the conv
    (``causal_conv1d`` keeps that layout) and by the scan, x_proj / dt_proj produce (b, l, .)
    tensors the scan reads in place, and the scan's channel-last output feeds out_proj as is.
    ``attention_mask`` (b, l) zeroes padded positions before in_proj and after the conv, as
    Hugging Face's MambaMixer does."""
    n, r = m.A_log.shape[1], m.dt_proj.in_features
    kind = resolve_backend(backend, hidden)
    x, z = m.in_proj(_masked(hidden, attention_mask)).transpose(1, 2).chunk(2, dim=1)  # (b, d, l) views
    if kind != "triton":
        x, z = x.contiguous(), z.contiguous()
    x = causal_conv1d(x, m.conv1d.weight.squeeze(1), m.conv1d.bias, kind)
    x = _masked(x.transpose(1, 2), attention_mask)  # (b, l, d)
    dt, B, C = m.x_proj(x).split([r, n, n], dim=-1)
    delta = F.linear(dt, m.dt_proj.weight)  # its bias enters the scan, in float32
    y = selective_scan(
        x.transpose(1, 2) if kind == "triton" else x.transpose(1, 2).contiguous(),
        delta.transpose(1, 2) if kind == "triton" else delta.transpose(1, 2).contiguous(),
        -torch.exp(m.A_log.float()),
        B.transpose(1, 2),
        C.transpose(1, 2),
        m.D.float(),
        z,
        m.dt_proj.bias.float(),
        delta_softplus=True,
        backend=kind,
        chunk_size=chunk_size,
    )
    return m.out_proj(y.transpose(1, 2))


def _dt_rank(d_model: int, dt_rank: int | str) -> int:
    return math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)


def _init_dt_bias(d: int, dt_min: float, dt_max: float, floor: float) -> torch.Tensor:
    """Mamba §3.6: softplus(bias) log-uniform in [dt_min, dt_max]; stored as softplus^-1."""
    dt = torch.exp(torch.rand(d) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=floor)
    return dt + torch.log(-torch.expm1(-dt))


def _s4d_real_A_log(d: int, n: int) -> torch.Tensor:
    """S4D-real initialisation A = -(1..N) per channel, stored as log(-A)."""
    return torch.log(torch.arange(1, n + 1, dtype=torch.float32)).repeat(d, 1)


class MambaMixer(nn.Module):
    """One Mamba layer (Gu & Dao 2023, Fig. 3): in_proj -> causal depthwise conv -> SiLU -> selective
    SSM, gated by SiLU(z) -> out_proj. ``(B, L, d_model) -> (B, L, d_model)``.

    Args:
        d_model: layer width. d_state: N. d_conv: conv width. expand: d_inner / d_model.
        dt_rank: rank of the delta projection (``auto`` = ceil(d_model / 16)).
        backend: ``auto`` | ``triton`` | ``cuda`` | ``torch`` (see module docstring).
        chunk_size: steps the PyTorch scan solves in parallel.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | str = "auto",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        conv_bias: bool = True,
        bias: bool = False,
        backend: Backend = "auto",
        chunk_size: int = 8,
    ) -> None:
        super().__init__()
        if backend not in _BACKENDS:
            raise ValueError(f"ssm backend must be one of {_BACKENDS}, got {backend!r}")
        self.d_inner = expand * d_model
        self.d_state = d_state
        self.dt_rank = _dt_rank(d_model, dt_rank)
        self.backend = backend
        self.chunk_size = chunk_size
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias)
        self.conv1d = nn.Conv1d(
            self.d_inner, self.d_inner, d_conv, groups=self.d_inner, padding=d_conv - 1, bias=conv_bias
        )
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        dt_std = self.dt_rank**-0.5
        nn.init.uniform_(self.dt_proj.weight, -dt_std, dt_std)
        with torch.no_grad():
            self.dt_proj.bias.copy_(_init_dt_bias(self.d_inner, dt_min, dt_max, dt_init_floor))
        self.A_log = nn.Parameter(_s4d_real_A_log(self.d_inner, d_state))
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return mixer_forward(self, hidden, attention_mask, self.backend, self.chunk_size)


class SelectiveSSM(nn.Module):
    """The selective SSM alone, run over K sequences with K parameter sets at once (VMamba's SS2D
    core; MambaVLM eq. 7 "H_vi = SSM(H_vi), i = 1..4"). ``(B, K, L, d) -> (B, K, L, d)``.

    Args:
        d_inner: channels. num_directions: K. shared: one parameter set for all K directions.
        d_state, dt_rank, dt_*: as :class:`MambaMixer`.
    """

    def __init__(
        self,
        d_inner: int,
        num_directions: int,
        d_state: int = 16,
        dt_rank: int | str = "auto",
        shared: bool = False,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        backend: Backend = "auto",
        chunk_size: int = 8,
    ) -> None:
        super().__init__()
        self.d_inner, self.d_state, self.num_directions = d_inner, d_state, num_directions
        self.dt_rank = _dt_rank(d_inner, dt_rank)
        self.backend, self.chunk_size = backend, chunk_size
        p = 1 if shared else num_directions
        std = d_inner**-0.5
        self.x_proj_weight = nn.Parameter(
            torch.empty(p, self.dt_rank + 2 * d_state, d_inner).uniform_(-std, std)
        )
        dt_std = self.dt_rank**-0.5
        self.dt_proj_weight = nn.Parameter(torch.empty(p, d_inner, self.dt_rank).uniform_(-dt_std, dt_std))
        self.dt_proj_bias = nn.Parameter(
            torch.stack([_init_dt_bias(d_inner, dt_min, dt_max, dt_init_floor) for _ in range(p)])
        )
        self.A_log = nn.Parameter(_s4d_real_A_log(d_inner, d_state).repeat(p, 1, 1))
        self.D = nn.Parameter(torch.ones(p, d_inner))

    def _per_direction(self, p: torch.Tensor) -> torch.Tensor:
        return p.expand(self.num_directions, *p.shape[1:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, k, length, d = x.shape
        if k != self.num_directions:
            raise ValueError(f"SelectiveSSM built for {self.num_directions} directions got {k}")
        x_dbl = torch.einsum("bkld,kcd->bkcl", x, self._per_direction(self.x_proj_weight))
        dt, B, C = x_dbl.split([self.dt_rank, self.d_state, self.d_state], dim=2)
        delta = torch.einsum("bkrl,kdr->blkd", dt, self._per_direction(self.dt_proj_weight))
        # (b, K d, l) views of channel-last (b, l, K d) tensors: the Triton scan reads them in place
        y = selective_scan(
            x.transpose(1, 2).reshape(b, length, k * d).transpose(1, 2),
            delta.reshape(b, length, k * d).transpose(1, 2),
            -torch.exp(self._per_direction(self.A_log).float()).reshape(k * d, self.d_state),
            B.contiguous(),  # (b, k, n, l): one group per direction
            C.contiguous(),
            self._per_direction(self.D).float().reshape(k * d),
            None,
            self._per_direction(self.dt_proj_bias).float().reshape(k * d),
            delta_softplus=True,
            backend=self.backend,
            chunk_size=self.chunk_size,
        )
        return y.view(b, k, d, length).transpose(2, 3)
