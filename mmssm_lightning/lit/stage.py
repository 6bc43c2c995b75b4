"""Training stages: which parts of the VLM learn.

* ``align``   — projector only, LLM frozen (LLaVA pre-alignment; VL-Mamba stage 1).
* ``finetune``— projector + LLM (LLaVA/VL-Mamba stage 2, after ``align``).
* ``single``  — projector + LLM from scratch projector, no alignment stage (Cobra §3.3).
Vision towers stay frozen unless ``vision`` is listed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

PARTS = ("vision", "projector", "llm")


@dataclass
class Stage:
    name: str
    trainable: Sequence[str]

    def __post_init__(self) -> None:
        bad = [p for p in self.trainable if p not in PARTS]
        if bad or not self.trainable:
            raise ValueError(
                f"stage.trainable must be a non-empty subset of {PARTS}, got {list(self.trainable)}"
            )

    def apply(self, model: nn.Module) -> None:
        """Freeze everything, then unfreeze the listed parts (before any FSDP wrapping). Parts the
        model does not have (no tower in a text-only run) are skipped."""
        model.requires_grad_(False)
        for part in self.trainable:
            if getattr(model, part) is not None:
                getattr(model, part).requires_grad_(True)
        if model.vision is not None:
            model.vision.freeze = "vision" not in self.trainable
