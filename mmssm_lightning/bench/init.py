"""Random Mamba weights that are not chaotic, for measurements that compare outputs (batch
invariance at scale): ``mamba_ssm``'s initialisation (state-spaces/mamba at 107eb60,
``mamba_ssm/models/mixer_seq_simple.py::_init_weights`` with ``rescale_prenorm_residual=True``, and
``mamba_ssm/modules/mamba_simple.py::Mamba.__init__``) applied to a HF ``MambaForCausalLM``.

HF's ``MambaPreTrainedModel`` draws every Linear weight from N(0, ``initializer_range`` = 0.1): at
Mamba-2.8B's width in_proj and x_proj outputs have standard deviations of ~5-7 and the 64-layer
stack amplifies a 1e-4 change of its input into an 83% change of its last hidden state (fp32), so
two runs that differ by rounding alone give unrelated outputs and invariance "to rounding" cannot be
observed. ``mamba_ssm`` keeps PyTorch's default Linear / Conv1d initialisation (U(+-1/sqrt(fan_in))),
zero Linear biases, embeddings N(0, 0.02), Mamba §3.6's dt projection and S4D-real A, and divides
out_proj by sqrt(n_layer) (GPT-2's residual scaling): the residual stream then grows slowly with
depth and a perturbation stays of its own size (:func:`perturbation_gain`).
"""

from __future__ import annotations

import math

import torch
from transformers import PreTrainedModel


@torch.no_grad()
def mamba_ssm_init(lm: PreTrainedModel, seed: int = 0) -> None:
    """Re-initialise a HF ``MambaForCausalLM`` in place as ``mamba_ssm`` initialises a new model."""
    cfg = lm.config
    if cfg.model_type != "mamba":
        raise ValueError(f"mamba_ssm_init: a Mamba LLM is needed, not {cfg.model_type}")
    device = next(lm.parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)

    def uniform(t: torch.Tensor, bound: float) -> None:
        t.uniform_(-bound, bound, generator=g)

    n = cfg.num_hidden_layers
    lm.backbone.embeddings.weight.normal_(0.0, 0.02, generator=g)
    for layer in lm.backbone.layers:
        m = layer.mixer
        uniform(m.in_proj.weight, 1 / math.sqrt(m.in_proj.in_features))
        uniform(m.x_proj.weight, 1 / math.sqrt(m.x_proj.in_features))
        uniform(m.out_proj.weight, 1 / math.sqrt(m.out_proj.in_features) / math.sqrt(n))
        for lin in (m.in_proj, m.x_proj, m.out_proj):
            if lin.bias is not None:
                lin.bias.zero_()
        fan_in = m.conv1d.weight[0].numel()  # depthwise: one channel x the kernel width
        uniform(m.conv1d.weight, 1 / math.sqrt(fan_in))
        if m.conv1d.bias is not None:
            uniform(m.conv1d.bias, 1 / math.sqrt(fan_in))
        uniform(m.dt_proj.weight, m.time_step_rank**-0.5 * cfg.time_step_scale)
        lo, hi = math.log(cfg.time_step_min), math.log(cfg.time_step_max)
        dt = torch.exp(torch.rand(m.dt_proj.bias.shape, device=device, generator=g) * (hi - lo) + lo)
        dt = dt.clamp(min=cfg.time_step_floor)
        m.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1
        d_state = m.A_log.shape[1]
        m.A_log.copy_(
            torch.log(torch.arange(1, d_state + 1, device=device, dtype=torch.float32)).expand_as(m.A_log)
        )
        m.D.fill_(1.0)
        layer.norm.weight.fill_(1.0)
    lm.backbone.norm_f.weight.fill_(1.0)
    head = lm.get_output_embeddings()
    if head.weight.data_ptr() != lm.backbone.embeddings.weight.data_ptr():
        uniform(head.weight, 1 / math.sqrt(head.in_features))


@torch.no_grad()
def perturbation_gain(lm: PreTrainedModel, length: int = 256, rel: float = 1e-3, seed: int = 0) -> float:
    """||h(x + dx) - h(x)|| / ||h(x)|| of the last position's final hidden state for random input
    embeddings x and a random dx with ||dx|| = ``rel`` ||x|` per position: ~``rel`` for a well-behaved
    stack, ~1 for a chaotic one."""
    p = next(lm.parameters())
    g = torch.Generator(device=p.device).manual_seed(seed)
    x = torch.randn(1, length, lm.config.hidden_size, device=p.device, generator=g)
    dx = torch.randn(x.shape, device=p.device, generator=g)
    dx = dx * (rel * x.norm(dim=-1, keepdim=True) / dx.norm(dim=-1, keepdim=True))

    def last_hidden(e: torch.Tensor) -> torch.Tensor:
        return lm.base_model(inputs_embeds=e.to(p.dtype), use_cache=False)[0][:, -1].float()

    h0, h1 = last_hidden(x), last_hidden(x + dx)
    return float((h1 - h0).norm() / h0.norm().clamp(min=1e-30)) if torch.isfinite(h0).all() else float("nan")
