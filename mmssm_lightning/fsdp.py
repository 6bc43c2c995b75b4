"""FSDP wrapping for Lightning's ``FSDPStrategy``: which module classes become their own sharded
unit and which get activation checkpointing (DESIGN: Mamba blocks, full shard, bf16-mixed).

Every LLM and tower block class the configs can build is listed by import path, so one
``trainer=fsdp`` serves Mamba, Pythia, Llama and all towers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from hydra.utils import get_class
from lightning.pytorch.strategies import FSDPStrategy as _LightningFSDP
from torch.nn import Module


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
    from torch.distributed.fsdp import MixedPrecision

    return MixedPrecision(
        param_dtype=getattr(torch, param_dtype),
        reduce_dtype=getattr(torch, reduce_dtype),
        buffer_dtype=getattr(torch, buffer_dtype),
    )


class FSDPStrategy(_LightningFSDP):
    """Lightning's ``FSDPStrategy`` with two fixes:

    * ``trainer.test`` / ``validate`` after ``fit`` in one Trainer keep the root FSDP wrapper of the
      fit. Lightning reconnects the bare LightningModule, finds its blocks already wrapped and
      skips wrapping the root, so the test step runs without forward redirection while the root's
      parameters (patch embeddings, projector, LM head) are still flat shards ("weight should have
      at least three dimensions").
    * CPU processes (gloo) work, so FSDP runs are tested in CI: Lightning refuses the CPU
      accelerator for FSDP and passes no ``device_id``, which torch's FSDP needs to accept CPU.
    """

    _root: Any = None

    def _setup_model(self, model: Module) -> Module:
        from torch.distributed.fsdp import FullyShardedDataParallel

        if self._root is not None and self._root.module is model:
            return self._root
        if self.root_device.type == "cpu" and not any(
            isinstance(m, FullyShardedDataParallel) for m in model.modules()
        ):
            wrapped = FullyShardedDataParallel(
                module=model,
                cpu_offload=self.cpu_offload,
                mixed_precision=self.mixed_precision_config,
                sharding_strategy=self.sharding_strategy,
                device_id=torch.device("cpu"),
                **self.kwargs,
            )
        else:
            wrapped = super()._setup_model(model)
        if isinstance(wrapped, FullyShardedDataParallel):
            self._root = wrapped
        return wrapped
