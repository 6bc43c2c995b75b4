"""``hydra/launcher=slurm``: Hydra's submitit SLURM launcher, with what multi-stage, multi-GPU
sweeps need on top:

* one task per GPU (``tasks_per_node = gpus_per_node = trainer.devices``): Lightning finds
  SLURMEnvironment and starts no processes itself, so every rank runs the job function once;
* only rank 0 writes the job's ``.hydra/`` folder (the others get ``hydra.output_subdir=null``);
* jobs are named as the local launcher names them, so ``<job>/finetune`` finds ``<job>/align``;
* stages run in waves — every align job, then every finetune job — since an array job would start
  a finetune before its align checkpoint exists;
* finished jobs (``status.json``) are skipped, so re-running the command resumes the sweep;
* ``dry_run=true`` writes each wave's sbatch script into the sweep folder and submits nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher

from hydra_plugins.mmssm_launchers.subprocess_launcher import job_location, write_table_report
from mmssm_lightning.sweep import JobRecord, RunStatus, SweepLedger, job_names, record_failures

log = logging.getLogger(__name__)


class SlurmLauncher(BaseSubmititLauncher):
    _EXECUTOR = "slurm"

    def __init__(self, dry_run: bool = False, **params: Any) -> None:
        super().__init__(**params)
        self.dry_run = dry_run

    def __call__(
        self, sweep_overrides: list[str], job_dir_key: str, job_num: int, job_id: str, singleton_state
    ):
        import submitit

        if submitit.JobEnvironment().global_rank != 0:
            sweep_overrides = [*sweep_overrides, "hydra.output_subdir=null"]
        return super().__call__(sweep_overrides, job_dir_key, job_num, job_id, singleton_state)

    def _job_dir(self, overrides: Sequence[str]) -> tuple[Path, str | None]:
        assert self.hydra_context is not None and self.config is not None
        return job_location(self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides)))

    def waves(self, job_overrides: Sequence[Sequence[str]]) -> list[list[tuple[int, list[str], Path]]]:
        """The jobs still to run, named and grouped by stage in stage order (align, finetune, ...)."""
        names = job_names(job_overrides)
        by_stage: dict[str | None, list[tuple[int, list[str], Path]]] = {}
        for num, (overrides, name) in enumerate(zip(job_overrides, names)):
            overrides = [*overrides, f"job_name={name}"]
            job_dir, stage = self._job_dir(overrides)
            if RunStatus.read(job_dir).finished:
                log.info(f"#{num} {name}/{stage}: finished before ({job_dir}), skipped")
                continue
            by_stage.setdefault(stage, []).append((num, overrides, job_dir))
        return list(by_stage.values())

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        ledger = SweepLedger(sweep_dir)
        returns: list[JobReturn] = []
        for k, wave in enumerate(self.waves(job_overrides)):
            if self.dry_run:
                self.write_sbatch(sweep_dir / f"sbatch_wave{k}.sh", len(wave))
                log.info(f"dry run: wave {k} ({len(wave)} jobs) -> {sweep_dir / f'sbatch_wave{k}.sh'}")
                continue
            results = super().launch([o for _, o, _ in wave], initial_job_idx + wave[0][0])
            for (num, overrides, job_dir), ret in zip(wave, results):
                value = ret._return_value if ret.status == JobStatus.COMPLETED else {"failed": True}
                failed = isinstance(value, dict) and value.get("failed")
                error = RunStatus.read(job_dir).error if failed else None
                ledger.add(
                    JobRecord(
                        num,
                        job_dir.parent.name,
                        job_dir.name,
                        overrides,
                        str(job_dir),
                        "failed" if failed else "finished",
                        error=error,
                    )
                )
                ret.status = JobStatus.COMPLETED  # recorded, not raised: the sweep goes on
                returns.append(ret)
        record_failures(ledger.failed)
        if not self.dry_run:
            write_table_report(self.config, sweep_dir)
        return returns

    def write_sbatch(self, path: Path, array_size: int) -> Path:
        """The sbatch script submitit would submit for an array of ``array_size`` jobs (no ``srun``
        needed: the dry run works on any machine)."""
        from submitit.slurm.slurm import _make_sbatch_string

        p = dict(self.params)
        args = {SBATCH_NAMES.get(k, k): v for k, v in p.items() if k not in NOT_SBATCH and v is not None}
        if p.get("mem_gb"):
            args["mem"] = f"{p['mem_gb']}GB"
        folder = str(p.get("submitit_folder", path.parent / ".submitit/%j")).replace("%j", "%A_%a")
        text = _make_sbatch_string(
            command="python -u -m submitit.core._submit " + folder,
            folder=folder,
            map_count=array_size,
            **args,
        )
        path.write_text(text)
        return path


# our launcher keys -> submitit's sbatch-string arguments
SBATCH_NAMES = {"timeout_min": "time", "tasks_per_node": "ntasks_per_node", "name": "job_name"}
NOT_SBATCH = {"submitit_folder", "max_num_timeout", "mem_gb"}
