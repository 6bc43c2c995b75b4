"""Hugging Face's Mamba blocks with our mixer forward (``llm.mixer: fused``).

In training, HF's ``MambaMixer`` calls ``mamba_ssm``'s ``mamba_inner_fn``: its backward computes the
x_proj / dt_proj weight gradients as batched einsums that run as sm75 CUTLASS kernels (19% of the
Cobra step on an H200: experiments/benchmarks/README.md) and its selective scan is ``mamba_ssm``
2.3.2's. :class:`FusedMambaMixer` is HF's class with the same parameters (so weights, ``state_dict``
keys, FSDP's per-``MambaBlock`` wrapping and activation checkpointing are unchanged) whose forward
without a cache runs :func:`~mmssm_lightning.models.ssm.mixer_forward`: four real GEMMs, the causal
conv and the selective scan of the chosen backend (the Triton scan by default on a GPU). With a
cache (generation) it is HF's forward.
"""

from __future__ import annotations

from torch import nn
from transformers.models.mamba.modeling_mamba import MambaBlock
from transformers.models.mamba.modeling_mamba import MambaMixer as HFMambaMixer

from mmssm_lightning.models.ssm import Backend, mixer_forward

MIXERS = ("hf", "fused")


class FusedMambaMixer(HFMambaMixer):
    """HF's MambaMixer with :func:`mixer_forward` when no cache is passed. ``scan_backend``:
    ``auto`` | ``triton`` | ``cuda`` | ``torch`` (see :mod:`~mmssm_lightning.models.ssm`)."""

    scan_backend: Backend = "auto"

    def forward(self, hidden_states, *args, **kwargs):
        # HF 5.17 passes cache_params=, 5.2x cache=; either (or a positional one) means generation
        cache = args[0] if args else kwargs.get("cache", kwargs.get("cache_params"))
        if cache is not None or self.activation not in ("silu", "swish"):
            return super().forward(hidden_states, *args, **kwargs)
        mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
        return mixer_forward(self, hidden_states, mask, self.scan_backend)


def use_fused_mixers(model: nn.Module, scan_backend: Backend = "auto") -> int:
    """Turn every HF ``MambaBlock``'s mixer of ``model`` into a :class:`FusedMambaMixer` in place
    (same parameters, same module); returns how many. Call before FSDP wraps the model."""
    count = 0
    for module in model.modules():
        if isinstance(module, MambaBlock) and isinstance(module.mixer, HFMambaMixer):
            module.mixer.__class__ = FusedMambaMixer
            module.mixer.scan_backend = scan_backend
            count += 1
    return count
