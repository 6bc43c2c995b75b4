"""Results of a training run: per-task accuracy beside the majority-answer baseline, as a table and json."""

from __future__ import annotations

import json
from pathlib import Path


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
