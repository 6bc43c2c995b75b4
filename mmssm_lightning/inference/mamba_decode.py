"""Greedy decoding of a Hugging Face ``MambaForCausalLM`` with static recurrent state and, on a GPU,
one CUDA graph per decode step (Mamba §3.3.2's recurrent mode, as ``mamba_ssm``'s own ``decode``
with ``cg=True`` runs it).

A Mamba step reads every weight once and touches a fixed-size state (conv window + SSM state per
layer), so at batch 1 it is bound by weight bytes / memory bandwidth: HF's step launches ~15
kernels per layer per token (960 for Mamba-2.8B), and launch latency alone caps it near 300 tok/s. Capturing
the step (all layers, final norm, LM head and the argmax) as one graph removes that.

The prefill takes ``inputs_embeds``, so the image tokens of a VLM go in as they are; it runs the
same kernels as training (``causal_conv1d_fn``, ``selective_scan_fn`` with the last state kept), with
the projections computed as ``W @ x`` over (channels, batch x length) as ``mamba_ssm``'s
``Mamba.forward`` does, so x, z and delta reach the kernels with unit stride along the sequence and
no transposing copies. A left-padded batch passes ``attention_mask``: the mixer's x is zeroed at pad
positions before the causal conv (the window of the first real token then holds zeros, as at batch
1) and after it (the conv bias would otherwise feed the pads' SiLU(bias) into the scan), so the SSM
state stays exactly zero through the pads. HF's ``MambaMixer`` masks the block's input before
in_proj and the conv output, which equals this when in_proj has no bias (HF's default); masking x
itself holds with a bias too. A prompt then gives the same state, logits and tokens at batch 1 and
inside any left-padded batch, to rounding (tests/test_inference.py).

On a GPU the step takes one kernel per op: the two GEMVs (cuBLAS, or at batch 1 a Triton GEMV
that streams faster), ``causal_conv1d_update``, ``x_proj``, ``dt_proj``, ``selective_state_update``
and ``mamba_ssm``'s fused residual-add + RMSNorm; ``fused_step`` replaces the four between the
GEMVs by two Triton kernels (:mod:`~mmssm_lightning.inference.mamba_step_kernels`), and ``autotune``
times each combination on the GPU at hand. Without the kernels
those fall back to PyTorch, which is how the CPU tests check the decoder against the model's own
forward (and the Triton step, in Triton's interpreter, against the PyTorch step). The residual stream
is float32 when ``residual_in_fp32``, as in HF's ``MambaBlock``; the fused norm (prefill and step
alike) reads it unrounded (as ``mamba_ssm`` does) where HF rounds it to the weights' dtype first.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from transformers import MambaForCausalLM

from mmssm_lightning.inference.cuda_graph import CudaGraphed, capture
from mmssm_lightning.models.ssm import causal_conv1d, selective_scan, use_kernels


@lru_cache(maxsize=1)
def _step_kernels() -> tuple | None:
    """(conv update, SSM state update, fused residual-add + RMSNorm) from causal_conv1d / mamba_ssm."""
    try:
        from causal_conv1d import causal_conv1d_update
        from mamba_ssm.ops.triton.layer_norm import layer_norm_fn
        from mamba_ssm.ops.triton.selective_state_update import selective_state_update
    except ImportError:
        return None
    return causal_conv1d_update, selective_state_update, layer_norm_fn


@lru_cache(maxsize=1)
def _has_triton() -> bool:
    try:
        import mmssm_lightning.inference.mamba_step_kernels  # noqa: F401
    except ImportError:
        return False
    return True


def _conv_update_torch(x, conv_state, weight, bias):
    """x (b, d); conv_state (b, d, k) shifted left in place, x appended; depthwise conv + SiLU."""
    conv_state.copy_(torch.roll(conv_state, shifts=-1, dims=-1))
    conv_state[:, :, -1] = x
    out = (conv_state * weight).sum(-1)
    if bias is not None:
        out = out + bias
    return F.silu(out).to(x.dtype)


def _scan_torch(x, delta, A, B, C, D, z, dt_bias):
    """The prefill's selective scan without the kernels: the step's recurrence run over the prompt
    (float32; x, delta, z (b, d, L), B, C (b, N, L)). Returns y (b, d, L) in x's dtype and the last
    state (b, d, N). For inference this is ~15x faster on CPU than the chunked scan of
    :mod:`~mmssm_lightning.models.ssm`, which keeps backward's memory low instead."""
    delta = F.softplus(delta.float() + dt_bias.float()[:, None])
    decay = torch.exp(delta.unsqueeze(-1) * A[:, None, :])  # (b, d, L, N)
    inputs = (delta * x.float()).unsqueeze(-1) * B.float().transpose(1, 2).unsqueeze(1)
    C = C.float()
    state = x.new_zeros(x.shape[0], x.shape[1], A.shape[1], dtype=torch.float32)
    ys = []
    for t in range(x.shape[-1]):
        state = decay[:, :, t] * state + inputs[:, :, t]
        ys.append((state * C[:, None, :, t]).sum(-1))
    y = torch.stack(ys, dim=-1) + D.float()[:, None] * x.float()
    return (y * F.silu(z.float())).to(x.dtype), state


def _state_update_torch(state, x, dt, A, B, C, D, z, dt_bias):
    """One step of the recurrence in float32: state (b, d, n) updated in place; returns y (b, d)."""
    dt = F.softplus(dt.float() + dt_bias.float())
    state.copy_(state * torch.exp(dt[..., None] * A) + (dt * x.float())[..., None] * B.float()[:, None, :])
    y = (state * C.float()[:, None, :]).sum(-1) + D.float() * x.float()
    return (y * F.silu(z.float())).to(x.dtype)


class MambaDecoder:
    """Args:
    model: a ``MambaForCausalLM`` (weights are used in place, not copied).
    batch_size: the batch the static state is allocated for.
    cuda_graph: capture the decode step on a GPU (ignored on CPU).
    backend: ``auto`` | ``cuda`` | ``torch`` for the kernels (see :mod:`~mmssm_lightning.models.ssm`).
    fused_step: the mixer's step as two GEMVs around two Triton kernels
        (:mod:`~mmssm_lightning.inference.mamba_step_kernels`).
        ``True``: used (also on CPU tensors under ``TRITON_INTERPRET=1``, as the tests run it);
        ``False``: one kernel per op; ``None``: one kernel per op unless ``autotune`` finds the
        fused step faster (on an H200 it is not: 2.87 vs 2.48 ms per step for Mamba-2.8B).
    graph_prefill: replay the prefill from a CUDA graph per prompt shape (GPU; for repeated shapes,
        see :mod:`~mmssm_lightning.inference.cuda_graph`).
    gemv: ``linear`` | ``mv`` | ``triton``: how the step's projections multiply at batch 1 (cuBLAS's
        ``F.linear`` or ``torch.mv`` kernels, or :func:`~mmssm_lightning.inference.mamba_step_kernels.gemv`;
        the fused step keeps x_proj / dt_proj inside its kernels).
    autotune: on the first graph capture, time every step variant (fused step or not, unless
        ``fused_step`` says; x each gemv at batch 1, ``triton`` where Triton is there) as a graph and
        keep the fastest (``self.tuning`` holds the ms per step of each).
    """

    def __init__(
        self,
        model: MambaForCausalLM,
        batch_size: int,
        cuda_graph: bool = True,
        backend: str = "auto",
        fused_step: bool | None = None,
        graph_prefill: bool = False,
        gemv: str = "linear",
        autotune: bool = False,
    ) -> None:
        if gemv not in ("linear", "mv", "triton"):
            raise ValueError(f"gemv must be 'linear', 'mv' or 'triton', got {gemv!r}")
        self.model = model
        cfg = model.config
        self.layers = model.backbone.layers
        self.batch_size = batch_size
        self.backend = backend
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        mixer = self.layers[0].mixer
        self.d_inner, self.d_state, self.d_conv = (
            mixer.intermediate_size,
            mixer.ssm_state_size,
            mixer.conv_kernel_size,
        )
        self.dt_rank = mixer.time_step_rank
        self.residual_in_fp32 = cfg.residual_in_fp32
        n = len(self.layers)
        self.conv_state = torch.zeros(
            n, batch_size, self.d_inner, self.d_conv, device=self.device, dtype=self.dtype
        )
        self.ssm_state = torch.zeros(
            n, batch_size, self.d_inner, self.d_state, device=self.device, dtype=torch.float32
        )
        # -exp(A_log) once, not per step
        self.A = [-torch.exp(layer.mixer.A_log.detach().float()) for layer in self.layers]
        self.use_graph = cuda_graph and self.device.type == "cuda"
        self.kernels = _step_kernels() if use_kernels(backend, p) else None
        self.graph: torch.cuda.CUDAGraph | None = None
        self.tokens = torch.zeros(batch_size, dtype=torch.long, device=self.device)
        self.gemv = gemv
        self.autotune = autotune and self.use_graph
        # the fused step is built where it may be used: asked for, or a candidate of the autotuning
        wanted = fused_step if fused_step is not None else (None if self.autotune else False)
        self._fused_candidate = self._fused_step(wanted)
        self.fused = self._fused_candidate if fused_step else None
        self.tuning: dict[str, float] = {}
        self.logits: torch.Tensor | None = None
        self._prefill = self._prefill_logits
        if graph_prefill and self.device.type == "cuda":
            # a benchmark's prompts fall into a few length buckets (Engine pads to a multiple of 16):
            # keep a graph for each rather than capture again on every change of bucket
            self._prefill = CudaGraphed(self._prefill, max_graphs=8)

    def _fused_step(self, wanted: bool | None):
        """``wanted``: True (must build), None (build if possible), False (do not)."""
        if wanted is False or (wanted is None and self.kernels is None):
            return None
        try:
            from mmssm_lightning.inference.mamba_step_kernels import FusedMixerStep

            return FusedMixerStep(
                self.model, self.batch_size, self.conv_state, self.ssm_state, linear=self._linear, A=self.A
            )
        except (ImportError, ValueError):
            if wanted:
                raise
            return None

    def _linear(self, x: torch.Tensor, layer: torch.nn.Linear, bias: bool = True) -> torch.Tensor:
        """``layer(x)`` (without its bias if not ``bias``) through the chosen GEMV at batch 1."""
        b = layer.bias if bias else None
        if x.shape[0] == 1 and self.gemv == "mv":
            out = torch.mv(layer.weight, x[0])[None]
            return out if b is None else out + b
        if x.shape[0] == 1 and self.gemv == "triton":
            from mmssm_lightning.inference.mamba_step_kernels import gemv

            return gemv(x, layer.weight, b)
        return F.linear(x, layer.weight, b)

    # -- prefill -----------------------------------------------------------------------------
    @torch.no_grad()
    def prefill(
        self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Run the prompt (b, L, D), left-padded where ``attention_mask`` (b, L) has zeros, and fill the
        states; returns the first greedy token (b,). ``self.logits`` holds the last position's float32
        logits (b, V) until the next prefill."""
        if inputs_embeds.shape[0] != self.batch_size:
            raise ValueError(
                f"MambaDecoder was built for batch {self.batch_size}, got {inputs_embeds.shape[0]}"
            )
        # A = -exp(A_log) read afresh (in place: graphs hold these tensors): the weights may have been
        # trained since this decoder was built (validation generation between training steps)
        for A, layer in zip(self.A, self.layers):
            A.copy_(-torch.exp(layer.mixer.A_log.float()))
        args = (inputs_embeds.to(self.dtype),)
        if attention_mask is not None:
            args += (attention_mask.to(self.dtype),)
        self.logits = self._prefill(*args)
        self.tokens.copy_(self.logits.argmax(-1))
        return self.tokens.clone()

    def _mixer_prefill(self, i: int, m, h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, length, _ = h.shape
        # (2 d_inner, b L): x and z come out as (b, d_inner, L) views with unit stride along L
        xz = torch.mm(m.in_proj.weight, h.reshape(b * length, -1).t())
        if m.in_proj.bias is not None:
            xz = xz + m.in_proj.bias[:, None]
        x, z = xz.view(-1, b, length).transpose(0, 1).chunk(2, dim=1)
        if mask is not None:
            x = x * mask[:, None, :]  # pads enter the conv window as the zeros of batch 1's padding
        k = self.d_conv
        self.conv_state[i].copy_(x[..., -k:] if length >= k else F.pad(x, (k - length, 0)))
        x = causal_conv1d(x, m.conv1d.weight.squeeze(1), m.conv1d.bias, self.backend)
        if mask is not None:
            x = x * mask[:, None, :]  # and leave it as zeros: the SSM state stays 0 through the pads
        d = x.shape[1]
        x_dbl = torch.mm(m.x_proj.weight, x.transpose(0, 1).reshape(d, b * length))  # (R + 2N, b L)
        dt, B, C = x_dbl.split([self.dt_rank, self.d_state, self.d_state], dim=0)
        delta = torch.mm(m.dt_proj.weight, dt).view(d, b, length).transpose(0, 1)
        B = B.view(-1, b, length).transpose(0, 1).contiguous()
        C = C.view(-1, b, length).transpose(0, 1).contiguous()
        if use_kernels(self.backend, x):
            y, last = selective_scan(
                x,
                delta,
                self.A[i],
                B,
                C,
                m.D.float(),
                z,
                m.dt_proj.bias.float(),
                delta_softplus=True,
                return_last_state=True,
                backend="cuda",
            )
        else:
            y, last = _scan_torch(x, delta, self.A[i], B, C, m.D, z, m.dt_proj.bias)
        self.ssm_state[i].copy_(last)
        out = F.linear(y.transpose(0, 1).reshape(d, b * length).t(), m.out_proj.weight, m.out_proj.bias)
        return out.view(b, length, -1)

    def _prefill_logits(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self._forward(x, lambda i, m, h: self._mixer_prefill(i, m, h, mask))

    # -- shared by prefill and step ---------------------------------------------------------------
    def _add_norm(self, x: torch.Tensor, residual: torch.Tensor | None, norm, block: bool = True):
        """residual + x (the residual stream), then RMSNorm of it: (normed, new residual)."""
        if self.kernels is not None:
            return self.kernels[2](
                x,
                norm.weight,
                None,
                residual=residual,
                prenorm=True,
                residual_in_fp32=self.residual_in_fp32,
                eps=norm.variance_epsilon,
                is_rms_norm=True,
            )
        residual = x if residual is None else residual + x
        if self.residual_in_fp32:
            residual = residual.float()
        # HF rounds a block's input to the weights' dtype before its norm, but not norm_f's input
        return norm(residual.to(norm.weight.dtype) if block else residual), residual

    def _forward(self, hidden: torch.Tensor, mixer) -> torch.Tensor:
        """All blocks (``mixer(i, layer.mixer, normed)`` each), norm_f, LM head: float32 logits (b, V)
        of the last position. ``hidden``: (b, L, D) for the prefill, (b, D) for a step."""
        residual = None
        for i, layer in enumerate(self.layers):
            h, residual = self._add_norm(hidden, residual, layer.norm)
            hidden = mixer(i, layer.mixer, h)
        if hidden.dim() == 3:  # only the last position is decoded from
            hidden, residual = hidden[:, -1].contiguous(), residual[:, -1].contiguous()
        h, _ = self._add_norm(hidden, residual, self.model.backbone.norm_f, block=False)
        return self.model.lm_head(h.to(self.model.lm_head.weight.dtype)).float()

    # -- one step ------------------------------------------------------------------------------
    def _step(self) -> None:
        """self.tokens -> next greedy tokens, written back into self.tokens (graph-capturable)."""
        embeds = self.model.backbone.embeddings(self.tokens)
        self.tokens.copy_(self._forward(embeds, self.fused or self._mixer_step).argmax(-1))

    def _mixer_step(self, i: int, m, h: torch.Tensor) -> torch.Tensor:
        x, z = self._linear(h, m.in_proj).chunk(2, dim=-1)  # (b, d_inner)
        w = m.conv1d.weight.squeeze(1)
        if self.kernels is not None:
            conv_update, state_update, _ = self.kernels
            x = conv_update(x, self.conv_state[i], w, m.conv1d.bias, "silu")
        else:
            x = _conv_update_torch(x, self.conv_state[i], w, m.conv1d.bias)
        dt, B, C = self._linear(x, m.x_proj).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = self._linear(dt, m.dt_proj, bias=False)  # the state update adds the bias before softplus
        if self.kernels is not None:
            y = state_update(
                self.ssm_state[i], x, dt, self.A[i], B, C, m.D, z=z, dt_bias=m.dt_proj.bias, dt_softplus=True
            )
        else:
            y = _state_update_torch(self.ssm_state[i], x, dt, self.A[i], B, C, m.D, z, m.dt_proj.bias)
        return self._linear(y, m.out_proj)

    def _capture(self) -> None:
        saved = (self.tokens.clone(), self.conv_state.clone(), self.ssm_state.clone())
        self.graph, _ = capture(self._step)
        for dst, src in zip((self.tokens, self.conv_state, self.ssm_state), saved):
            dst.copy_(src)  # the warm-up advanced the state: restore it

    def _tune(self, replays: int = 20) -> None:
        """Capture each step variant, time its replays, keep the fastest (states restored after)."""
        saved = (self.tokens.clone(), self.conv_state.clone(), self.ssm_state.clone())
        fused = self._fused_candidate
        gemvs = (
            ("linear",) if self.batch_size > 1 else ("linear", "mv") + (("triton",) if _has_triton() else ())
        )
        fusions = [fused] if self.fused is not None else dict.fromkeys([fused, None])
        variants = [(f, g) for f in fusions for g in gemvs]
        for f, g in variants:
            self.fused, self.gemv = f, g
            self._capture()
            for _ in range(3):
                self.graph.replay()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(replays):
                self.graph.replay()
            end.record()
            end.synchronize()
            self.tuning[f"{'fused' if f is not None else 'ops'}_{g}"] = start.elapsed_time(end) / replays
        best = min(self.tuning, key=self.tuning.get)
        self.fused, self.gemv = (fused if best.startswith("fused") else None), best.split("_")[1]
        for dst, src in zip((self.tokens, self.conv_state, self.ssm_state), saved):
            dst.copy_(src)
        self.graph = None

    @torch.no_grad()
    def step(self) -> torch.Tensor:
        """Advance every sequence by one token; returns the new tokens (b,) (a view: copy to keep)."""
        if self.use_graph:
            if self.graph is None:
                if self.autotune and not self.tuning:
                    self._tune()
                self._capture()
            self.graph.replay()
        else:
            self._step()
        return self.tokens

    @torch.no_grad()
    def decode(self, n: int) -> torch.Tensor:
        """The next ``n`` greedy tokens after a prefill (or earlier steps): (b, n)."""
        out = torch.empty(self.batch_size, n, dtype=torch.long, device=self.device)
        for t in range(n):
            out[:, t] = self.step()
        return out

    @torch.no_grad()
    def generate(self, inputs_embeds: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        """Exactly ``max_new_tokens`` greedy tokens (EOS not special): (b, max_new_tokens)."""
        first = self.prefill(inputs_embeds)
        return torch.cat([first[:, None], self.decode(max_new_tokens - 1)], dim=1)
