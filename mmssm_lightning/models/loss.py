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

from mmssm_lightning.constants import IGNORE_INDEX

LossNormalization = Literal["token", "sample"]


def supervised_positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions whose next token is a target: a (B, L) bool mask and those targets (N,), in the
    mask's row-major order. The LM head only needs to run there (see ``CausalLM.forward``)."""
    target = labels[:, 1:]
    where = torch.zeros_like(labels, dtype=torch.bool)
    where[:, :-1] = target != IGNORE_INDEX
    return where, target[target != IGNORE_INDEX]


def selected_lm_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    where: torch.Tensor,
    normalization: LossNormalization = "token",
) -> torch.Tensor:
    """Cross-entropy of ``logits`` (N, V) at the ``where`` positions (B, L) against ``targets`` (N,)."""
    if normalization not in ("token", "sample"):
        raise ValueError(f"module.loss_normalization must be 'token' or 'sample', got {normalization!r}")
    nll = F.cross_entropy(logits.float(), targets, reduction="sum" if normalization == "token" else "none")
    if normalization == "token":
        return nll / max(targets.numel(), 1)
    counts = where.sum(1)
    row = torch.repeat_interleave(torch.arange(where.shape[0], device=where.device), counts)
    per_seq = torch.zeros(where.shape[0], device=nll.device, dtype=nll.dtype).index_add(0, row, nll)
    has_target = counts > 0
    return (per_seq[has_target] / counts[has_target]).sum() / has_target.sum().clamp(min=1)


def causal_lm_loss(
    logits: torch.Tensor, labels: torch.Tensor, normalization: LossNormalization = "token"
) -> torch.Tensor:
    """``logits`` (B, L, V) predict ``labels`` (B, L) shifted by one; IGNORE_INDEX is skipped."""
    where, targets = supervised_positions(labels)
    return selected_lm_loss(logits[where], targets, where, normalization)
