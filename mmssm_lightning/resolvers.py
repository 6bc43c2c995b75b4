"""OmegaConf resolvers the configs use (registered when the package is imported)."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

from mmssm_lightning.runs import finished_runs, run_weights


def join(*parts: object) -> str:
    """``${mmssm.join:a,b,${job_name}}``: the parts that are set, joined by ``-``."""
    return "-".join(str(p) for p in parts if p not in (None, "", "None", "null"))


def job_dir(job_name: object, stage: object) -> str:
    """A sweep job's folder under the sweep: ``<job name>/<stage>`` (``job<N>`` when the launcher
    gave no name, e.g. Hydra's basic launcher)."""
    if job_name in (None, "", "None", "null"):
        from hydra.core.hydra_config import HydraConfig

        num = HydraConfig.get().job.get("num", 0) if HydraConfig.initialized() else 0
        job_name = f"job{num}"
    return f"{job_name}/{stage}"


def latest_run(runs_root: str, experiment: str, stage: str) -> str:
    """``${mmssm.latest_run:${paths.log_dir}/train/runs,vl_mamba,finetune}``: the weights of the
    latest finished run of that experiment and stage (Q-Mamba's connector comes from a trained
    VL-Mamba). Before there is one, a path that says so in the "does not exist" error."""
    folder = Path(runs_root) / experiment / stage
    runs = [r for r in finished_runs(folder) if run_weights(r) is not None]
    if runs:
        return str(run_weights(runs[-1]))
    return str(folder / "NO-FINISHED-RUN-YET" / "checkpoints" / "model.ckpt")


def cwd() -> str:
    """The working directory (what ``${hydra:runtime.cwd}`` gives with ``hydra.job.chdir=false``),
    also where no Hydra run is set up yet: a launcher's settings resolve before it starts."""
    return os.getcwd()


def register() -> None:
    for name, fn in (("join", join), ("job_dir", job_dir), ("latest_run", latest_run), ("cwd", cwd)):
        OmegaConf.register_new_resolver(f"mmssm.{name}", fn, replace=True)
