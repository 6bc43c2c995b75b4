"""Pre-emption: SIGTERM (what SLURM and ``timeout`` send) and Ctrl-C save a resumable checkpoint.

Lightning turns SIGTERM into ``SIGTERMException`` at the next batch boundary (all ranks at the
same step) and Ctrl-C into ``KeyboardInterrupt``; both reach ``on_exception``. Other exceptions
save nothing: a checkpoint of a run that crashed in a step is not one to resume from, and on one
rank of a sharded run it would wait forever for the others.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException


class SaveOnInterrupt(Callback):
    """Args: dirpath: the checkpoint folder; filename: the checkpoint's name there (``last.ckpt``:
    what ``ckpt_path=auto`` resumes from)."""

    def __init__(self, dirpath: str, filename: str = "last.ckpt") -> None:
        self.path = Path(dirpath) / filename
        self.saved_step: int | None = None

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if (
            not isinstance(exception, (SIGTERMException, KeyboardInterrupt))
            or trainer.state.fn != TrainerFn.FITTING
        ):
            return
        trainer.save_checkpoint(self.path)
        self.saved_step = trainer.global_step
        rank_zero_info(f"interrupted at step {trainer.global_step}: saved {self.path}")
