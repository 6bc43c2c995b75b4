"""Callbacks that make a resumed run the uninterrupted one: per-batch RNG seeding and a trace of
what each step trained on."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch


def batch_seed(seed: int, epoch: int, batch_idx: int, rank: int) -> int:
    """A well-mixed 63-bit seed for one training batch of one rank."""
    return int(np.random.SeedSequence([seed, epoch, batch_idx, rank]).generate_state(2, np.uint64)[0] >> 1)


class BatchSeed(L.Callback):
    """Reseed torch (CPU and CUDA), numpy and ``random`` before every training batch from
    ``(seed, epoch, batch index, rank)``.

    Lightning's checkpoints carry no RNG state, so after a resume dropout (or anything else random
    in the step) would draw from a freshly seeded generator and the loss curve would part from the
    uninterrupted run's. A seed that is a pure function of the batch's position needs no state at
    all, is right on every rank (each rank draws its own masks), and does not care what else used
    the generators in between (validation, data loading). fairseq reseeds per update the same way.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ):
        s = batch_seed(self.seed, trainer.current_epoch, batch_idx, trainer.global_rank)
        torch.manual_seed(s)  # also every CUDA device
        np.random.seed(s % 2**32)
        random.seed(s)


class BatchTrace(L.Callback):
    """Append one json line per training batch to ``<dirpath>/rank<r>.jsonl``: the global step the
    batch belongs to, epoch, batch index, the dataset indices it held and its loss. Two runs (an
    uninterrupted one and a resumed one) can then be compared step by step."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        row = {
            "step": trainer.global_step,
            "epoch": trainer.current_epoch,
            "batch_idx": batch_idx,
            "indices": batch["indices"].tolist(),
            "loss": float(loss),
        }
        self.dirpath.mkdir(parents=True, exist_ok=True)
        with open(self.dirpath / f"rank{trainer.global_rank}.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
