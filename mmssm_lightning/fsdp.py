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
