"""Results of a run: per-task accuracy beside a majority-answer baseline, as a table and json."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

from mmssm_lightning.eval.metrics import TaskAccuracy


def majority_baseline(train: Sequence[dict], test: Sequence[dict], metric: TaskAccuracy) -> dict[str, float]:
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


def results_table(accuracy: dict[str, float], baseline: dict[str, float], counts: dict[str, int], title: str):
    from rich.table import Table

    table = Table(title=title)
    for col, style in (("task", "bold"), ("n", ""), ("accuracy", "green"), ("majority baseline", "dim")):
        table.add_column(col, style=style, justify="left" if col == "task" else "right")
    for task in [t for t in accuracy if t != "mean"] + ["mean"]:
        table.add_row(
            task,
            str(counts.get(task, sum(counts.values()) if task == "mean" else 0)),
            f"{100 * accuracy[task]:.1f}",
            f"{100 * baseline.get(task, 0.0):.1f}",
        )
    return table


def write_results(path: str | Path, payload: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(payload, indent=2))
