"""Next-token cross-entropy over answer tokens with the two normalisations the papers use.

* ``token``: one mean over every target token of the batch (LLaVA, Cobra, MambaVLM).
* ``sample``: mean over each sequence's target tokens, then mean over sequences (Pythia-VL vs
  Mamba-VL §4, needed once several QA pairs are packed into one sequence so that long packs do
  not outweigh short ones).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from mmssm_lightning.data.prompting import IGNORE_INDEX

LossNormalization = Literal["token", "sample"]


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor, normalization: LossNormalization = "token") -> torch.Tensor:
    """``logits`` (B, L, V) predict ``labels`` (B, L) shifted by one; IGNORE_INDEX is skipped."""
    if normalization not in ("token", "sample"):
        raise ValueError(f"module.loss_normalization must be 'token' or 'sample', got {normalization!r}")
    logits = logits[:, :-1].float()
    target = labels[:, 1:]
    nll = F.cross_entropy(logits.transpose(1, 2), target, ignore_index=IGNORE_INDEX, reduction="none")
    valid = (target != IGNORE_INDEX).float()
    if normalization == "token":
        return (nll * valid).sum() / valid.sum().clamp(min=1)
    per_seq = (nll * valid).sum(1) / valid.sum(1).clamp(min=1)
    has_target = valid.sum(1) > 0
    return per_seq[has_target].sum() / has_target.sum().clamp(min=1)
