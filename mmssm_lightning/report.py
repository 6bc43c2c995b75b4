"""``mmssm-report``: our numbers beside the paper's, in the paper's table layout.

    mmssm-report logs/train/multiruns/tables/q_mamba/table1            # a table sweep
    mmssm-report <run folder> <run folder> --table cobra/fig3            # any runs, a table's layout

Reads every job's ``results.json`` (the scoring stage of two-stage jobs), groups the jobs by the
paper's row (its experiment name, a ``table.rows`` entry, or an ``eval.variants`` name; seeds of one
row give a mean and a standard deviation), takes each benchmark's headline metric
(``table.metrics``, default ``accuracy``) in the paper's unit (``table.scale``, default x100) and
puts it beside ``experiments/<paper>/reported.yaml`` with the difference. Writes ``report.md``,
``report.csv`` and ``report.png`` and, with ``--wandb``, a wandb Table in the table's group. A
table sweep (``mmssm-train -m table=...``) writes its report when its last job ends.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mmssm_lightning.constants import CONF_DIR
from mmssm_lightning.sweep import STATUS_FILE

EXPERIMENTS_DIR = Path(CONF_DIR).parent / "experiments"


@dataclass
class JobResult:
    """One job's scores: ``{benchmark: metrics}`` of the stage that scored."""

    name: str
    experiment: str
    stage: str | None
    folder: Path
    scores: dict[str, dict[str, float]]
    skipped: dict[str, list[str]] = field(default_factory=dict)
    variant: str | None = None


@dataclass
class Cell:
    ours: list[float]
    paper: float | None

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.ours) if self.ours else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.ours) if len(self.ours) > 1 else None

    @property
    def diff(self) -> float | None:
        return None if self.mean is None or self.paper is None else self.mean - self.paper


@dataclass
class Row:
    name: str
    jobs: list[str]
    cells: dict[str, Cell]


def run_folders(paths: list[Path]) -> list[Path]:
    """The run folders under ``paths``: each path that is one, else every folder below holding a
    ``status.json`` (the jobs of a sweep)."""
    out: list[Path] = []
    for path in paths:
        if (path / STATUS_FILE).is_file():
            out.append(path)
        elif path.is_dir():
            out += sorted(p.parent for p in path.rglob(STATUS_FILE))
        else:
            raise FileNotFoundError(f"mmssm-report: {path} is not a run or sweep folder")
    return out


def _scores(benchmarks: dict) -> tuple[dict[str, dict[str, float]], dict[str, list[str]]]:
    scores = {b: r["metrics"] for b, r in benchmarks.items() if isinstance(r, dict) and "metrics" in r}
    skipped = {b: r["skipped"] for b, r in benchmarks.items() if isinstance(r, dict) and "skipped" in r}
    return scores, skipped


def collect(folders: list[Path]) -> list[JobResult]:
    """Every scored result in ``folders`` (one per ``eval.variants`` entry where there are some)."""
    jobs = []
    for folder in folders:
        path = folder / "results.json"
        if not path.is_file():
            continue
        payload = json.loads(path.read_text())
        name = payload.get("job_name") or folder.parent.name
        base = {"experiment": payload.get("experiment", ""), "stage": payload.get("stage"), "folder": folder}
        if payload.get("variants"):
            for variant, benchmarks in payload["variants"].items():
                scores, skipped = _scores(benchmarks)
                jobs.append(JobResult(name, scores=scores, skipped=skipped, variant=variant, **base))
            continue
        scores, skipped = _scores(payload.get("benchmarks") or {})
        if not scores and not skipped and payload.get("test_accuracy"):
            scores = {"test": payload["test_accuracy"]}
        if scores or skipped:
            jobs.append(JobResult(name, scores=scores, skipped=skipped, **base))
    return jobs


def table_spec(paths: list[Path], table: str | None) -> DictConfig:
    """The table's layout: ``conf/table/<table>.yaml``, else the one the sweep ran with."""
    if table:
        file = Path(CONF_DIR) / "table" / f"{table}.yaml"
        if not file.is_file():
            raise FileNotFoundError(f"--table: {file} does not exist")
        node = OmegaConf.load(file)
    else:
        sweeps = [p / "multirun.yaml" for p in paths if (p / "multirun.yaml").is_file()]
        if not sweeps:
            raise ValueError(
                "mmssm-report: no multirun.yaml in the given folders; name the layout with --table"
            )
        node = OmegaConf.load(sweeps[0])
    spec = OmegaConf.create(
        {
            "table": OmegaConf.to_container(node.get("table"), resolve=False) if node.get("table") else {},
            "run": list(OmegaConf.select(node, "eval.run", default=[]) or []),
        }
    )
    if not spec.table.get("name"):
        raise ValueError("mmssm-report: the sweep ran without table=...; name the layout with --table")
    return spec


def reported_rows(paper: str, key: str | None) -> dict[str, Any]:
    file = EXPERIMENTS_DIR / paper / "reported.yaml"
    if not file.is_file() or not key:
        return {}
    rows = OmegaConf.to_container(OmegaConf.load(file)).get("tables", {}).get(key) or {}
    return {k: v for k, v in rows.items() if isinstance(v, dict) or v is None}


def build_rows(jobs: list[JobResult], spec: DictConfig) -> tuple[list[Row], list[str]]:
    table = spec.table
    reported = reported_rows(table.paper, table.get("reported"))
    columns_map = dict(table.get("columns") or {})
    metrics = dict(table.get("metrics") or {})
    scale = dict(table.get("scale") or {})
    benches = list(spec.run) or sorted({b for j in jobs for b in j.scores})
    # a sweep may score more than this table shows (Pythia-VL's Tables 1 and 2 share their jobs):
    # the columns are the benchmarks the paper's table has, where it has any
    printed = {c for row in reported.values() if isinstance(row, dict) for c in row}
    if printed and any(columns_map.get(b, b) in printed for b in benches):
        benches = [b for b in benches if columns_map.get(b, b) in printed]
    rows_map = dict(table.get("rows") or {})
    groups: dict[str, list[JobResult]] = {}
    for job in jobs:
        key = rows_map.get(
            job.variant or "", rows_map.get(job.name, job.variant or job.experiment or job.name)
        )
        groups.setdefault(key, []).append(job)
    order = [r for r in reported if r in groups] + [r for r in groups if r not in reported]
    order += [r for r in reported if r not in groups]
    rows = []
    for name in order:
        members = groups.get(name, [])
        paper_row = reported.get(name) or {}
        cells = {}
        for bench in benches:
            column = columns_map.get(bench, bench)
            metric = "mean" if bench == "test" else metrics.get(bench, "accuracy")
            factor = float(scale.get(bench, 100))
            ours = [
                float(j.scores[bench][metric]) * factor
                for j in members
                if bench in j.scores and metric in j.scores[bench]
            ]
            paper = paper_row.get(column)
            cells[column] = Cell(ours, float(paper) if isinstance(paper, (int, float)) else None)
        rows.append(Row(name, [j.name for j in members], cells))
    return rows, [columns_map.get(b, b) for b in benches]


def _fmt(value: float | None, std: float | None = None) -> str:
    if value is None:
        return "—"
    return f"{value:.2f}" + (f" ± {std:.2f}" if std is not None else "")


def markdown(rows: list[Row], columns: list[str], title: str) -> str:
    head = ["row", "n", *[f"{c} (ours / paper / Δ)" for c in columns]]
    lines = [f"## {title}", "", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for row in rows:
        cells = [
            f"{_fmt(c.mean, c.std)} / {_fmt(c.paper)} / {_fmt(c.diff)}"
            for c in (row.cells[col] for col in columns)
        ]
        lines.append(f"| {row.name} | {len(row.jobs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def records(rows: list[Row], columns: list[str]) -> list[dict[str, Any]]:
    return [
        {
            "row": row.name,
            "benchmark": col,
            "ours": row.cells[col].mean,
            "ours_std": row.cells[col].std,
            "n": len(row.cells[col].ours),
            "paper": row.cells[col].paper,
            "diff": row.cells[col].diff,
            "jobs": ";".join(row.jobs),
        }
        for row in rows
        for col in columns
    ]


def plot(rows: list[Row], columns: list[str], title: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(columns), figsize=(max(4, 3 * len(columns)), 3.5), squeeze=False)
    for ax, col in zip(axes[0], columns):
        names = [r.name for r in rows]
        x = range(len(rows))
        ours = [r.cells[col].mean or 0.0 for r in rows]
        paper = [r.cells[col].paper or 0.0 for r in rows]
        ax.bar([i - 0.2 for i in x], ours, 0.4, label="ours")
        ax.bar([i + 0.2 for i in x], paper, 0.4, label="paper")
        ax.set_title(col)
        ax.set_xticks(list(x), names, rotation=45, ha="right", fontsize=7)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def log_wandb(
    rows: list[Row], columns: list[str], spec: DictConfig, folder: Path, project: str, online: bool
) -> None:
    """The comparison as a wandb Table (and the plot) in a ``report`` run of the table's group."""
    import wandb

    run = wandb.init(
        project=project,
        group=spec.table.name,
        job_type="report",
        name=f"{spec.table.name}-report",
        dir=str(folder),
        mode="online" if online else "offline",
        config={"table": OmegaConf.to_container(spec.table)},
    )
    data = records(rows, columns)
    keys = ["row", "benchmark", "ours", "ours_std", "n", "paper", "diff", "jobs"]
    run.log({"report/table": wandb.Table(columns=keys, data=[[r[k] for k in keys] for r in data])})
    if (folder / "report.png").is_file():
        run.log({"report/plot": wandb.Image(str(folder / "report.png"))})
    run.finish()
    wandb.teardown()


def report(
    paths: list[str | Path],
    table: str | None = None,
    out: str | Path | None = None,
    wandb_project: str | None = None,
    online: bool = False,
) -> dict[str, Any]:
    """Build the report; returns ``{"rows": [...], "markdown": str, "files": [...]}``."""
    paths = [Path(p) for p in paths]
    spec = table_spec(paths, table)
    jobs = collect(run_folders(paths))
    rows, columns = build_rows(jobs, spec)
    folder = Path(out) if out else paths[0] / "report"
    folder.mkdir(parents=True, exist_ok=True)
    title = spec.table.get("title") or spec.table.name
    md = markdown(rows, columns, title)
    skipped = sorted({f"{b} ({', '.join(f[:1])})" for j in jobs for b, f in j.skipped.items()})
    if skipped:
        md += "\nNot scored (files missing): " + "; ".join(skipped) + "\n"
    (folder / "report.md").write_text(md)
    recs = records(rows, columns)
    with open(folder / "report.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(recs[0]) if recs else ["row"])
        writer.writeheader()
        writer.writerows(recs)
    files = [folder / "report.md", folder / "report.csv"]
    if rows and columns:
        files.append(plot(rows, columns, title, folder / "report.png"))
    if wandb_project:
        log_wandb(rows, columns, spec, folder, wandb_project, online)
    return {"rows": recs, "markdown": md, "files": [str(f) for f in files]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="mmssm-report", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", help="a table sweep's folder, or run folders")
    parser.add_argument("--table", help="the layout (conf/table/<name>.yaml); default: the sweep's own")
    parser.add_argument("--out", help="where to write report.{md,csv,png} (default: <first path>/report)")
    parser.add_argument("--wandb", metavar="PROJECT", help="log the table into this wandb project (offline)")
    parser.add_argument("--online", action="store_true", help="with --wandb: log online instead of offline")
    args = parser.parse_args(argv)
    try:
        result = report(args.paths, args.table, args.out, args.wandb, args.online)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    print(result["markdown"])
    print("\n".join(f"wrote {f}" for f in result["files"]))


if __name__ == "__main__":
    main()
