"""``mmssm-train``: compose a config, train, score, and leave a run folder that says what happened.

    mmssm-train experiment=demo                       # the CPU demo
    mmssm-train experiment=cobra/main                 # a paper's recipe
    mmssm-train -m table=cobra/fig3                   # a paper table: its jobs, trained and scored

A run: check the config's types, build model / data / LightningModule / Trainer, resume from this
run folder's ``last.ckpt`` when there is one (``ckpt_path=auto``) or start from ``init_from``, fit,
write the consolidated weights ``checkpoints/model.ckpt``, score the data's test split and the
benchmarks of ``eval.run`` under ``eval.protocol``, write ``results.json`` and ``status.json``.
Multi-process runs: Lightning starts the other ranks; only rank 0 writes files. ``-m`` sweeps go
through ``hydra/launcher=local`` (every job in its own processes; ``hydra_plugins/``).
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

import mmssm_lightning  # noqa: F401  (torchvision compatibility shim before timm/transformers)
from mmssm_lightning import sweep
from mmssm_lightning.build import build_datamodule, build_model
from mmssm_lightning.checkpoints import read_checkpoint
from mmssm_lightning.config_checks import check_config
from mmssm_lightning.constants import CONF_DIR
from mmssm_lightning.eval.report import results_table, write_results
from mmssm_lightning.lit.builders import build_module, build_trainer
from mmssm_lightning.lit.final import save_final_weights, score_benchmarks
from mmssm_lightning.lit.module import VLMModule, check_fits, load_weights
from mmssm_lightning.lit.resume import config_changes, refuse_incompatible
from mmssm_lightning.runs import resolve_init_from, resume_path
from mmssm_lightning.sweep import RunStatus
from mmssm_lightning.utils import print_config, quiet_library_warnings, save_run_info


def run(cfg: DictConfig) -> dict:
    """Train and/or evaluate as ``cfg`` says; returns the results (also in ``results.json``)."""
    check_config(cfg)
    output_dir = Path(cfg.paths.output_dir)
    status = RunStatus.read(output_dir)
    if cfg.train and status.finished:
        print(f"{output_dir} finished before (step {status.global_step}): nothing to train; see results.json")
        return status.results
    print_config(cfg, output_dir)
    save_run_info(cfg, output_dir)
    rank0 = rank_zero_only.rank == 0
    if rank0:
        status.write(output_dir, state="running", stage=cfg.stage.name, started=time.time(), error=None)
    L.seed_everything(cfg.seed, workers=True)

    model = build_model(cfg)
    dm = build_datamodule(cfg, model)
    module = build_module(cfg, model, dm)
    resume = resume_path(cfg.ckpt_path, output_dir) if cfg.train else None
    if resume is not None:
        _check_resume(resume, module, cfg, output_dir)
    elif cfg.train and cfg.get("init_from"):
        runs_root = Path(cfg.paths.log_dir) / "train" / "runs" / cfg.experiment_name
        start, why = resolve_init_from(
            cfg.init_from, output_dir, cfg.stage.name, cfg.get("stage_recipe"), runs_root
        )
        load_weights(module, start)
        module.run_config["init_from"] = start  # what was used, in every checkpoint and results.json
        _say(f"init_from: {start} ({why})")
    elif not cfg.train:
        if cfg.ckpt_path in (None, "auto"):
            raise ValueError("train=false needs ckpt_path=<checkpoint> to evaluate")
        ckpt = read_checkpoint(cfg.ckpt_path, "ckpt_path")
        load_weights(module, cfg.ckpt_path, "ckpt_path", ckpt)
        step, stage = ckpt.get("global_step", "?"), ckpt.get("stage", "?")
        _say(f"evaluating {cfg.ckpt_path} (step {step}, stage {stage})")
    trainer = build_trainer(cfg, dm)

    if cfg.train:
        trainer.fit(module, datamodule=dm, ckpt_path=resume)
        if trainer.global_step == 0:
            raise ValueError("no optimizer step ran: the train split gave no batch (data.train, batch sizes)")
        weights = save_final_weights(trainer, module, output_dir)
    else:
        weights = Path(cfg.ckpt_path)
    payload: dict = {
        "experiment": cfg.experiment_name,
        "stage": cfg.stage.name,
        "job_name": cfg.get("job_name"),
        "global_step": trainer.global_step,
        "weights": str(weights),
        "init_from": module.run_config.get("init_from"),
    }
    if cfg.evaluate and not dm.has_split("test"):
        _say("evaluate: data.test is not set, no test split to score (benchmarks: eval.run)")
    elif cfg.evaluate:
        trainer.test(module, datamodule=dm, verbose=False)
        payload |= _test_results(cfg, dm, module, trainer)
    if cfg.eval.run:
        scores = score_benchmarks(cfg, weights, output_dir, trainer)
        payload["variants" if cfg.eval.get("variants") else "benchmarks"] = scores
    if rank0:
        write_results(output_dir / "results.json", payload)
        status.write(output_dir, state="finished", global_step=trainer.global_step, results=_summary(payload))
    _finish_loggers(trainer, payload)
    return payload


def _check_resume(resume: str, module: VLMModule, cfg: DictConfig, output_dir: Path) -> None:
    """Before Lightning loads it: the checkpoint is readable, holds this architecture's weights,
    and what changed since it was written is decided (lit/resume.py)."""
    if Path(resume).is_dir():  # FSDP shards: their metadata only (consolidating them is costly)
        ckpt = _sharded_meta(Path(resume))
    else:
        ckpt = read_checkpoint(resume, "ckpt_path")
        if not isinstance(ckpt.get("state_dict"), dict) or "loops" not in ckpt:
            raise ValueError(
                f"ckpt_path: {resume} is not a resumable Lightning checkpoint (use init_from for weights)"
            )
        check_fits(ckpt["state_dict"], module, resume, "ckpt_path")
    old = ckpt.get("mmssm_config") or {}
    changes = config_changes(old, module.run_config)
    refuse_incompatible(changes, resume)
    if rank_zero_only.rank == 0:
        write_results(
            output_dir / "resume.json", {"from": resume, "step": ckpt.get("global_step"), "changes": changes}
        )
    _say(f"resuming from {resume} (step {ckpt.get('global_step', '?')})")


def _sharded_meta(folder: Path) -> dict:
    meta = folder / "meta.pt"
    if not (folder / ".metadata").is_file() or not meta.is_file():
        raise ValueError(f"ckpt_path: {folder} is a folder but not a sharded Lightning checkpoint")
    return read_checkpoint(meta, "ckpt_path")


def _test_results(cfg: DictConfig, dm, module: VLMModule, trainer: L.Trainer) -> dict:
    metrics = {
        k.removeprefix("test/acc/"): float(v)
        for k, v in trainer.callback_metrics.items()
        if k.startswith("test/acc/")
    }
    payload = {
        "test_accuracy": metrics,
        "majority_baseline": dm.baseline(module.test_acc),
        "counts": dm.task_counts(),
        "predictions": module.predictions[:50],
    }
    if rank_zero_only.rank == 0:
        from rich import print as rprint

        title = f"{cfg.experiment_name}: test accuracy (%) after {trainer.global_step} steps"
        rprint(results_table(metrics, payload["majority_baseline"], payload["counts"], title))
    return payload


def _summary(payload: dict) -> dict:
    """What status.json keeps of the results: numbers, not predictions."""
    return {k: v for k, v in payload.items() if k not in ("predictions",)}


def _finish_loggers(trainer: L.Trainer, payload: dict) -> None:
    for lg in trainer.loggers:
        if type(lg).__name__ == "WandbLogger" and rank_zero_only.rank == 0:
            from mmssm_lightning.eval.wandb_tables import log_results

            log_results(lg.experiment, payload)
    for lg in trainer.loggers:
        if type(lg).__name__ == "WandbLogger":
            import wandb

            wandb.finish()  # one wandb run per sweep job


@rank_zero_only
def _say(text: str) -> None:
    print(text, flush=True)


# Errors a user can cause from the command line or the data: one line, never a torch traceback.
USER_ERRORS = (
    ValueError,
    FileNotFoundError,
    InstantiationException,
    OmegaConfBaseException,
    MisconfigurationException,
)


def _one_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    if isinstance(e, InstantiationException) and e.__cause__ is not None:
        text = str(e.__cause__).strip() or text
    lines = [line for line in text.splitlines() if line.strip()]
    first = lines[0] if lines else text
    key = getattr(e, "full_key", None)
    if key and key not in first:
        first = f"{key}: {first}"
    if isinstance(e, MisconfigurationException) and "gpu" in first.lower():
        first += " (trainer=gpu / ddp / fsdp need a GPU; trainer=cpu, or trainer.accelerator=cpu)"
    return first


def task(cfg: DictConfig) -> float | dict | None:
    """The Hydra task: one run, its failure written to status.json and said in one line."""
    quiet_library_warnings()
    output_dir = Path(cfg.paths.output_dir)
    in_sweep = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        payload = run(cfg)
    except SIGTERMException:
        _fail(
            output_dir,
            "interrupted",
            "stopped by SIGTERM; the same command resumes from checkpoints/last.ckpt",
        )
        sys.exit(143)
    except KeyboardInterrupt:
        _fail(
            output_dir,
            "interrupted",
            "stopped by Ctrl-C; the same command resumes from checkpoints/last.ckpt",
        )
        sys.exit(130)
    except USER_ERRORS as e:
        if os.environ.get("MMSSM_DEBUG"):
            raise
        message = _one_line(e)
        _fail(output_dir, "failed", message)
        print(f"error: {message}\n(set MMSSM_DEBUG=1 for the traceback)", file=sys.stderr)
        if in_sweep:  # Hydra's in-process launchers (basic, SLURM): recorded, the sweep goes on
            return {"failed": True, "error": message}
        sys.exit(1)
    except Exception as e:
        _fail(output_dir, "failed", f"{type(e).__name__}: {_one_line(e)}")
        raise
    return payload.get("test_accuracy", {}).get("mean")  # the objective of a Hydra sweeper


def _fail(output_dir: Path, state: str, error: str) -> None:
    if rank_zero_only.rank == 0 and output_dir.exists():
        RunStatus.read(output_dir).write(output_dir, state=state, error=error)


_hydra_main = hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")(task)


def main() -> None:
    """The console entry: a sweep's exit code is the number of its failed jobs."""
    warnings.filterwarnings("ignore", module="lightning")
    _hydra_main()
    if sweep.LAST_SWEEP_FAILURES:
        print(
            f"{sweep.LAST_SWEEP_FAILURES} job(s) failed: see sweep.json in the sweep folder", file=sys.stderr
        )
    sys.exit(min(sweep.LAST_SWEEP_FAILURES, 255))


if __name__ == "__main__":
    main()
