"""Stopping rules of the paper recipes."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import Callback


class StopAtThreshold(Callback):
    """Stop training once a validation metric reaches a threshold, inclusive.

    Pythia-VL vs Mamba-VL §5.3.2: "We track the performance on a held-out set and terminate training
    whenever the model achieves >= 95% accuracy". Lightning's ``EarlyStopping(stopping_threshold=)``
    stops only strictly above the threshold (``torch.gt`` for ``mode="max"``), so a run at exactly
    95% would go on.

    Args:
        monitor: the logged metric (e.g. ``val/acc/mean``).
        threshold: stop at ``metric >= threshold``.
        atol: slack for float32 rounding: ``val/acc/mean`` is a float32 mean of per-position
            accuracies, which can land an ulp below a threshold the counts reach exactly (1e-6 is
            far below one held-out example, 1e-5 of the paper's 100K).
    """

    def __init__(self, monitor: str, threshold: float, atol: float = 1e-6) -> None:
        super().__init__()
        self.monitor = monitor
        self.threshold = threshold
        self.atol = atol
        self.stopped_at_step: int | None = None

    def reached(self, value: float) -> bool:
        return value >= self.threshold - self.atol

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if self.monitor not in trainer.callback_metrics:
            raise ValueError(
                f"callbacks.early_stop.monitor={self.monitor!r} was not logged; "
                f"logged: {sorted(trainer.callback_metrics)}"
            )
        stop = self.reached(float(trainer.callback_metrics[self.monitor]))
        stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if stop:
            self.stopped_at_step = trainer.global_step
            trainer.should_stop = True
