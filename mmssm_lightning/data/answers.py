"""Answers of the training tasks: the normalisation their accuracy compares under, and the
majority-answer baseline a trained model must beat."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any, Protocol


def normalize_answer(text: str) -> str:
    """Case, outer spaces and a final full stop / ! / ? do not count."""
    return text.strip().lower().rstrip(".!?").strip()


class AnswerMetric(Protocol):
    """A task-accuracy metric (``update(preds, targets, tasks)``, ``compute() -> {task: value}``)."""

    def clone(self) -> AnswerMetric: ...
    def reset(self) -> None: ...
    def update(self, preds: Sequence[str], targets: Sequence[str], tasks: Sequence[str]) -> None: ...
    def compute(self) -> dict[str, Any]: ...


def majority_baseline(train: Sequence[dict], test: Sequence[dict], metric: AnswerMetric) -> dict[str, float]:
    """Accuracy of always answering the most frequent training answer of each task.

    ``train``/``test`` are LLaVA records (the last turn is the answer). This is the "chance" the
    model must beat; it is scored by the same metric as the model.
    """
    answers: dict[str, Counter] = defaultdict(Counter)
    for rec in train:
        answers[rec.get("task", "default")][rec["conversations"][-1]["value"]] += 1
    metric = metric.clone()
    metric.reset()
    for rec in test:
        task = rec.get("task", "default")
        guess = answers[task].most_common(1)[0][0] if answers[task] else ""
        metric.update([guess], [rec["conversations"][-1]["value"]], [task])
    return {k: float(v) for k, v in metric.compute().items()}
