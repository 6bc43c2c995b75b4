"""A sweep's outcome as one JSON for experiments/benchmarks/results/: every job's state, steps,
benchmark scores and folder, the report's rows, and provenance.
    python scripts/summarize_sweep.py SWEEP_DIR OUT.json "the sweep's command"
"""

import json
import sys
from pathlib import Path

import mmssm_lightning  # noqa: F401
from mmssm_lightning.bench.provenance import provenance


def main(sweep: str, out: str, command: str) -> None:
    sweep_dir = Path(sweep)
    ledger = json.loads((sweep_dir / "sweep.json").read_text())
    jobs = []
    for job in ledger["jobs"]:
        results = Path(job["dir"]) / "results.json"
        payload = json.loads(results.read_text()) if results.is_file() else {}
        jobs.append(
            {
                "name": job["name"],
                "stage": job["stage"],
                "state": job["state"],
                "error": job.get("error"),
                "seconds": job.get("seconds"),
                "global_step": payload.get("global_step"),
                "weights": payload.get("weights"),
                "benchmarks": {b: r.get("metrics", r) for b, r in (payload.get("benchmarks") or {}).items()},
                "test_accuracy": payload.get("test_accuracy"),
                "hydra_folder": (Path(job["dir"]) / ".hydra").is_dir(),
                "rank_logs": sorted(p.name for p in Path(job["dir"]).glob("*.log")),
            }
        )
    report = sweep_dir / "report" / "report.csv"
    summary = {
        **provenance(command),
        "sweep_dir": str(sweep_dir),
        "sweep_folders": sorted(str(p.parent) for p in sweep_dir.parent.rglob("multirun.yaml")),
        "failed": ledger["failed"],
        "jobs": jobs,
        "report_csv": report.read_text() if report.is_file() else None,
    }
    Path(out).write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: summary[k] for k in ("failed", "sweep_folders")}), [j["state"] for j in jobs])


if __name__ == "__main__":
    main(*sys.argv[1:4])
