"""FSDP wrapping for Lightning's ``FSDPStrategy``: which module classes become their own sharded
unit and which get activation checkpointing (DESIGN: Mamba blocks, full shard, bf16-mixed).

Every LLM and tower block class the configs can build is listed by import path, so one
``trainer=fsdp`` serves Mamba, Pythia, Llama and all towers.
"""

from __future__ import annotations

from collections.abc import Sequence

from hydra.utils import get_class


def block_classes(names: Sequence[str]) -> set[type]:
    """Import each ``module.Class`` path; unknown paths are an error naming the path."""
    classes = set()
    for name in names:
        try:
            classes.add(get_class(name))
        except (ImportError, AttributeError, ValueError) as e:
            raise ValueError(f"trainer.strategy: cannot import block class {name!r}: {e}") from None
    return classes


def mixed_precision(
    param_dtype: str = "float32", reduce_dtype: str = "float32", buffer_dtype: str = "float32"
):
    """FSDP's ``MixedPrecision`` from dtype names. The default keeps FSDP itself in float32 and
    leaves bf16 to autocast (Lightning's ``bf16-mixed``): Mamba's A_log, D and dt bias enter the
    scan in float32, as in ``mamba_ssm``'s own AMP training, and gradients stay float32, which
    FSDP1's tied-weight gradient views (Mamba ties its LM head) need under gradient accumulation
    on torch 2.11 (bf16 gradient views raise "attempting to assign a gradient with dtype ...")."""
    import torch
    from torch.distributed.fsdp import MixedPrecision

    return MixedPrecision(
        param_dtype=getattr(torch, param_dtype),
        reduce_dtype=getattr(torch, reduce_dtype),
        buffer_dtype=getattr(torch, buffer_dtype),
    )
