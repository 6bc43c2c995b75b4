"""Progress output: a rich bar in a terminal, plain lines where stdout is a file (``nohup``, SLURM,
a sweep job's log), so that a log shows how far a run got and how fast."""

from __future__ import annotations

import sys
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, ProgressBar, RichProgressBar
from lightning.pytorch.utilities import rank_zero_only


class StepProgressBar(RichProgressBar):
    """Lightning's rich bar without the logger's ``v_num`` and without ``Epoch 3/-2`` when only
    ``max_steps`` bounds the run (it says ``step 120/400`` instead)."""

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items

    def _get_train_description(self, current_epoch: int) -> str:
        trainer = self.trainer
        if trainer.max_epochs is not None and trainer.max_epochs > 0:
            text = f"Epoch {current_epoch + 1}/{trainer.max_epochs}"
        else:
            text = f"Epoch {current_epoch + 1}"
        if trainer.max_steps and trainer.max_steps > 0:
            text += f" · step {trainer.global_step}/{trainer.max_steps}"
        return f"{text:{len(self.validation_description)}}"


class PlainProgress(ProgressBar):
    """One line every ``every_n_steps`` optimizer steps: step, epoch, loss, samples/s and ETA.

    Args:
        every_n_steps: how often to print (the first step always prints).
    """

    def __init__(self, every_n_steps: int = 50) -> None:
        super().__init__()
        self.every_n_steps = max(1, every_n_steps)
        self._start = 0.0
        self._start_step = 0
        self._samples = 0
        self._last_step = -1

    def disable(self) -> None:  # a ProgressBar must have it; nothing here draws in place
        pass

    def enable(self) -> None:
        pass

    @rank_zero_only
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start, self._start_step, self._samples = time.monotonic(), trainer.global_step, 0
        total = trainer.max_steps if trainer.max_steps > 0 else trainer.estimated_stepping_batches
        print(f"training from step {trainer.global_step} to {int(total)}", flush=True)

    @rank_zero_only
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx
    ) -> None:
        self._samples += len(batch["answers"]) if isinstance(batch, dict) and "answers" in batch else 0
        step = trainer.global_step
        if step == self._last_step or (step % self.every_n_steps and step != self._start_step + 1):
            return
        self._last_step = step
        elapsed = max(time.monotonic() - self._start, 1e-9)
        done = step - self._start_step
        total = trainer.max_steps if trainer.max_steps > 0 else int(trainer.estimated_stepping_batches)
        eta = elapsed / max(done, 1) * max(total - step, 0)
        loss = trainer.callback_metrics.get("train/loss")
        loss_text = f" loss {float(loss):.4f}" if loss is not None else ""
        print(
            f"step {step}/{total} epoch {trainer.current_epoch}{loss_text} "
            f"{self._samples / elapsed:.1f} samples/s (this rank) eta {_clock(eta)}",
            flush=True,
        )


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def progress_callback(every_n_steps: int = 50, force: str | None = None) -> Callback:
    """The rich bar when stdout is a terminal, else plain lines (``force``: ``rich`` | ``plain``)."""
    plain = force == "plain" or (force is None and not sys.stdout.isatty())
    return PlainProgress(every_n_steps) if plain else StepProgressBar()
