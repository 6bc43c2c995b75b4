"""``hydra/launcher=local`` (the default of ``mmssm-train -m``): every sweep job runs in a fresh
process, started as a single run (``hydra.run.dir`` = the job's folder), one job after another.

Why not Hydra's basic launcher: it runs each job inside the sweep process, and Lightning starts
the extra ranks of a multi-process job (DDP, FSDP) by re-running the command line, which is the
whole sweep — so every child rank re-launched the sweep. Here the sweep process never trains:
the job's own process is rank 0 of a plain run, Lightning starts its other ranks from that
run's command line, and a job that crashes (on any rank) ends only that job. The sweep goes on,
records every job in ``<sweep dir>/sweep.json``, skips jobs whose ``status.json`` says finished
(so the same command resumes an interrupted sweep) and exits with the number of failed jobs.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from mmssm_lightning.sweep import (
    JobRecord,
    RunStatus,
    SweepLedger,
    error_summary,
    hydra_quote,
    job_names,
    record_failures,
)

log = logging.getLogger(__name__)
# exit codes of a job stopped by SIGTERM (or Ctrl-C forwarded to it): the sweep stops too
TERMINATED = (-signal.SIGTERM, 128 + signal.SIGTERM, -signal.SIGINT, 128 + signal.SIGINT)


def entry_command() -> list[str]:
    """How this process was started (``python -m mmssm_lightning.train`` or the console script)."""
    import __main__

    spec = getattr(__main__, "__spec__", None)
    if spec is not None and spec.name:
        return [sys.executable, "-m", spec.name.removesuffix(".__main__")]
    return [sys.executable, os.path.abspath(sys.argv[0])]


def job_location(cfg: DictConfig) -> tuple[Path, str | None]:
    """A sweep job's folder and stage, from the job's composed config."""
    return Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir), OmegaConf.select(cfg, "stage.name")


class SubprocessLauncher(Launcher):
    """Args:
    stop_on_failure: end the sweep at the first failed job instead of going on.
    """

    def __init__(self, stop_on_failure: bool = False) -> None:
        self.stop_on_failure = stop_on_failure
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.ledger: SweepLedger | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context

    def job_config(self, overrides: Sequence[str], num: int) -> DictConfig:
        assert self.hydra_context is not None and self.config is not None
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(cfg):
            cfg.hydra.job.num = cfg.hydra.job.id = num
        return cfg

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        self.ledger = self.ledger or SweepLedger(sweep_dir)
        names = job_names(job_overrides)
        log.info(f"Sweep of {len(job_overrides)} jobs in {sweep_dir}, one process group per job")
        returns: list[JobReturn] = []
        for i, (overrides, name) in enumerate(zip(job_overrides, names)):
            num = initial_job_idx + i
            overrides = [*overrides, f"job_name={name}"]
            ret, record = self._run_one(num, name, overrides)
            self.ledger.add(record)
            returns.append(ret)
            if record.returncode in TERMINATED:
                record_failures(self.ledger.failed)
                raise SystemExit(143)  # the sweep was asked to stop: no further job starts
            if record.state == "failed" and self.stop_on_failure:
                log.error("stop_on_failure: the sweep ends here")
                break
        record_failures(self.ledger.failed)
        write_table_report(self.config, sweep_dir)
        return returns

    def _run_one(self, num: int, name: str, overrides: list[str]) -> tuple[JobReturn, JobRecord]:
        cfg = self.job_config(overrides, num)
        job_dir, stage = job_location(cfg)
        shown = " ".join(filter_overrides(overrides))
        ret = JobReturn(overrides=overrides, working_dir=str(job_dir), task_name=str(cfg.hydra.job.name))
        ret.status = JobStatus.COMPLETED  # a failed job is recorded, not raised: the sweep goes on
        record = JobRecord(num, name, stage, list(overrides), str(job_dir), "finished")
        status = RunStatus.read(job_dir)
        if status.finished:
            log.info(f"#{num} {name}/{stage}: finished before ({job_dir}), skipped")
            ret.return_value, record.state = status.results, "skipped"
            return ret, record
        log.info(f"#{num} : {shown}")
        job_dir.mkdir(parents=True, exist_ok=True)
        cmd = [*entry_command(), *overrides, f"hydra.run.dir={hydra_quote(job_dir)}"]
        start = time.time()
        code, output = _run_streamed(cmd, job_dir / "job.log")
        record.seconds = round(time.time() - start, 1)
        record.returncode = code
        if code in TERMINATED:
            record.state = "interrupted"
            record.error = "stopped by a signal; the same command resumes it"
        elif code != 0:
            record.state = "failed"
            record.error = RunStatus.read(job_dir).error or error_summary(output)
            (job_dir / "error.txt").write_text(record.error + "\n")
            log.error(f"#{num} {name}/{stage} failed (exit {code}): {record.error}")
            ret.return_value = {"failed": True, "error": record.error}
        else:
            ret.return_value = RunStatus.read(job_dir).results
        return ret, record


def write_table_report(config: DictConfig, sweep_dir: Path) -> None:
    """A table sweep ends with its ours-vs-paper report (``mmssm-report``), logged to wandb when
    the runs log there."""
    if not OmegaConf.select(config, "table.name", default=None):
        return
    from mmssm_lightning.report import report

    wandb = OmegaConf.select(config, "logger.wandb", default=None)
    try:
        result = report(
            [sweep_dir],
            wandb_project=wandb.project if wandb else None,
            online=not wandb.offline if wandb else False,
        )
    except (ValueError, FileNotFoundError) as e:
        log.error(f"report: {e}")
        return
    print(result["markdown"], flush=True)
    log.info(f"report: {', '.join(result['files'])}")


def _run_streamed(cmd: list[str], log_path: Path) -> tuple[int, str]:
    """Run ``cmd``, echoing its output and keeping it in ``log_path``; SIGINT / SIGTERM to the
    sweep go to the job too (it saves a checkpoint and stops), then end the sweep."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    previous = signal.getsignal(signal.SIGTERM)

    def forward(signum, frame):
        proc.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    tail: list[str] = []
    try:
        with open(log_path, "a") as fh:
            assert proc.stdout is not None
            for line in proc.stdout:
                sys.stdout.write(line)
                fh.write(line)
                tail = (tail + [line])[-200:]
        code = proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        proc.wait()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    return code, "".join(tail)
