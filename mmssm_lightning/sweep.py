"""Sweep bookkeeping shared by the Hydra launchers (``hydra_plugins/mmssm_launchers``) and the
training entry point: job folder names, each run folder's ``status.json``, and the sweep's
``sweep.json`` ledger of what ran, what was skipped and what failed.

Plain Python only: Hydra imports the launchers at every start-up (plugin discovery).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STATUS_FILE = "status.json"
LEDGER_FILE = "sweep.json"
# Keys that never name a job: the stage is the folder level below the job, and the table (or a
# hydra.* setting) is the same for every job of a sweep.
UNNAMED_KEYS = ("stage", "table", "job_name")
_SLUG = re.compile(r"[^A-Za-z0-9._+-]+")


def _split(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value


def slug(text: str) -> str:
    """A folder-name-safe form of an override value (``cobra/main`` -> ``cobra-main``)."""
    return _SLUG.sub("-", text).strip("-") or "_"


def job_names(job_overrides: Sequence[Sequence[str]]) -> list[str]:
    """One folder name per job from the overrides that tell it from the other jobs of the sweep.

    ``experiment`` contributes its value, any other key ``<last key part>-<value>``: the Cobra
    Fig. 3 rows become ``cobra-main``, ``cobra-siglip_mlp``...; a Q-Mamba query sweep
    ``num_queries-128``... Jobs that differ only in the stage share a name (their stage folders
    sit side by side under it, so a finetune job finds its align job). Jobs alike in every named
    key are told apart by their number.
    """
    parsed = [dict(_split(o) for o in overrides) for overrides in job_overrides]
    keys = []
    for overrides in job_overrides:
        for o in overrides:
            key = _split(o)[0]
            if key not in keys and not key.startswith("hydra.") and key not in UNNAMED_KEYS:
                keys.append(key)
    varying = [k for k in keys if len({p.get(k) for p in parsed}) > 1]
    names = []
    for p in parsed:
        parts = [
            slug(p[k]) if k == "experiment" else f"{slug(k.split('.')[-1])}-{slug(p[k])}"
            for k in varying
            if k in p
        ]
        names.append("_".join(parts) or "job")
    seen: dict[tuple[str, str], int] = {}
    out = []
    for name, p in zip(names, parsed):
        key = (name, p.get("stage", ""))
        seen[key] = seen.get(key, 0) + 1
        out.append(name if seen[key] == 1 else f"{name}_{seen[key]}")
    return out


def hydra_quote(value: str) -> str:
    """A value for a Hydra command-line override, quoted so that ``=``, ``,`` or spaces survive."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass
class RunStatus:
    """What a run folder's ``status.json`` says: ``running`` | ``finished`` | ``failed`` |
    ``interrupted``, the last global step, the error of a failed run, and the run's results."""

    state: str = "new"
    global_step: int = 0
    error: str | None = None
    started: float | None = None
    updated: float | None = None
    pid: int | None = None
    stage: str | None = None
    results: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, run_dir: str | Path) -> RunStatus:
        path = Path(run_dir) / STATUS_FILE
        if not path.is_file():
            return cls()
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return cls()
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def write(self, run_dir: str | Path, **changes: Any) -> RunStatus:
        for k, v in changes.items():
            setattr(self, k, v)
        self.updated = time.time()
        self.pid = os.getpid()
        path = Path(run_dir) / STATUS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2, default=str))
        tmp.replace(path)  # a reader never sees half a file
        return self

    @property
    def finished(self) -> bool:
        return self.state == "finished"


@dataclass
class JobRecord:
    num: int
    name: str
    stage: str | None
    overrides: list[str]
    dir: str
    state: str  # finished | skipped (finished before) | failed
    returncode: int | None = None
    error: str | None = None
    seconds: float | None = None


class SweepLedger:
    """``<sweep dir>/sweep.json``: every job of the sweep with its folder, outcome and error,
    rewritten after each job so that a crashed or killed sweep still says how far it got."""

    def __init__(self, sweep_dir: str | Path) -> None:
        self.path = Path(sweep_dir) / LEDGER_FILE
        self.jobs: list[JobRecord] = []

    def add(self, record: JobRecord) -> None:
        self.jobs = [j for j in self.jobs if j.num != record.num] + [record]
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        summary = {
            "jobs": [asdict(j) for j in sorted(self.jobs, key=lambda j: j.num)],
            "finished": sum(j.state in ("finished", "skipped") for j in self.jobs),
            "failed": self.failed,
        }
        self.path.write_text(json.dumps(summary, indent=2))

    @property
    def failed(self) -> int:
        return sum(j.state == "failed" for j in self.jobs)


#: failed jobs of the last sweep run in this process (the exit code of ``mmssm-train -m``)
LAST_SWEEP_FAILURES = 0


def record_failures(n: int) -> None:
    global LAST_SWEEP_FAILURES
    LAST_SWEEP_FAILURES = n


def error_summary(text: str, lines: int = 1) -> str:
    """The line(s) that say why a job failed: our one-line ``error: ...``, else a traceback's last
    lines, else the output's last non-empty line."""
    rows = [r for r in text.splitlines() if r.strip()]
    ours = [r for r in rows if r.startswith("error: ")]
    if ours:
        return ours[-1].removeprefix("error: ")
    return "\n".join(rows[-lines:]) if rows else "no output"
