"""Evaluation results into a wandb run: a table of every number (benchmark, metric, value, protocol, n)
and the numbers in the run summary (``eval/<benchmark>/<metric>``), so that dashboards can chart them."""

from __future__ import annotations

from typing import Any

COLUMNS = ["benchmark", "metric", "value", "protocol", "n"]


def rows(benchmarks: dict[str, Any], protocol: str) -> list[list]:
    return [
        [name, metric, value, protocol, r.get("n")]
        for name, r in benchmarks.items()
        for metric, value in (r.get("metrics") or {}).items()
    ]


def log_results(run: Any, payload: dict) -> None:
    """Log a training run's results (test-split accuracy, benchmark scores) into its wandb run."""
    import wandb

    summary = {f"test/acc/{k}": v for k, v in (payload.get("test_accuracy") or {}).items()}
    benchmarks = payload.get("benchmarks") or {}
    protocol = next((r["protocol"]["protocol"] for r in benchmarks.values() if "protocol" in r), "")
    table = rows(benchmarks, protocol)
    summary |= {f"eval/{b}/{m}": v for b, m, v, _, _ in table}
    run.summary.update(summary)
    if table:
        run.log({"eval/results": wandb.Table(columns=COLUMNS, data=table)})
