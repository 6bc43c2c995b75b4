"""Run folders: what a run resumes from (``ckpt_path``), what it starts from (``init_from``) and
the folder layout both rely on.

Every run has its own folder (``<log_dir>/train/runs/<experiment>/<stage>/<time>`` or, in a
sweep, ``<sweep dir>/<job name>/<stage>``) holding ``status.json`` (:class:`~mmssm_lightning.sweep.RunStatus`:
its state),
``checkpoints/last.ckpt`` (resumable: optimizer, schedule, data position; a folder under FSDP) and,
once training ends, ``checkpoints/model.ckpt`` (the consolidated weights and run config: what
``mmssm-eval``, ``init_from`` and the converters read).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from mmssm_lightning.sweep import RunStatus

LAST = "last.ckpt"
WEIGHTS = "model.ckpt"


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def resume_path(ckpt_path: str | None, run_dir: str | Path) -> str | None:
    """The checkpoint ``trainer.fit`` resumes from. ``auto``: this run folder's ``last.ckpt`` if
    there is one (a re-run sweep job, a requeued SLURM job), else a fresh start; a path: that
    checkpoint (a file, or an FSDP sharded folder), which must exist."""
    if ckpt_path in (None, "", "null"):
        return None
    if ckpt_path == "auto":
        last = checkpoint_dir(run_dir) / LAST
        return str(last) if last.exists() else None
    if not Path(ckpt_path).exists():
        raise FileNotFoundError(f"ckpt_path: {ckpt_path} does not exist")
    return str(ckpt_path)


def run_weights(run_dir: str | Path) -> Path | None:
    """The weights a later stage starts from: ``model.ckpt`` (consolidated), else ``last.ckpt``."""
    for name in (WEIGHTS, LAST):
        path = checkpoint_dir(run_dir) / name
        if path.exists():
            return path
    return None


def previous_stage(stage: str, stage_recipe: Mapping | None) -> str | None:
    """The stage listed before ``stage`` in ``stage_recipe`` (align before finetune)."""
    stages = list(stage_recipe or {})
    i = stages.index(stage) if stage in stages else -1
    return stages[i - 1] if i > 0 else None


def finished_runs(folder: Path) -> list[Path]:
    """Run folders directly under ``folder`` whose status says finished, oldest first."""
    if not folder.is_dir():
        return []
    statuses = [(p, RunStatus.read(p)) for p in folder.iterdir() if p.is_dir()]
    return [p for p, s in sorted(statuses, key=lambda ps: ps[1].updated or 0.0) if s.finished]


def resolve_init_from(
    init_from: str | None,
    run_dir: str | Path,
    stage: str,
    stage_recipe: Mapping | None,
    runs_root: str | Path,
) -> tuple[str | None, str]:
    """``(checkpoint, why)`` for ``init_from``. ``auto``: the previous stage's run of this
    experiment — in a sweep the job folder beside this one (``<job>/align`` for ``<job>/finetune``),
    else the latest finished run under ``<runs_root>/<previous stage>/``. Errors name the key."""
    if init_from in (None, "", "null"):
        return None, ""
    if init_from != "auto":
        if not Path(init_from).exists():
            raise FileNotFoundError(f"init_from: {init_from} does not exist")
        return str(init_from), "init_from as given"
    before = previous_stage(stage, stage_recipe)
    if before is None:
        raise ValueError(
            f"init_from=auto: stage '{stage}' has no earlier stage in "
            f"stage_recipe ({list(stage_recipe or {})})"
        )
    sibling = Path(run_dir).parent / before
    if RunStatus.read(sibling).finished and run_weights(sibling) is not None:
        return str(run_weights(sibling)), f"the {before} job of this sweep ({sibling})"
    candidates = [r for r in finished_runs(Path(runs_root) / before) if run_weights(r) is not None]
    if not candidates:
        raise ValueError(
            f"init_from=auto: no finished '{before}' run to start '{stage}' from (looked in {sibling} and "
            f"{Path(runs_root) / before}); run stage={before} first or set init_from=<checkpoint>"
        )
    chosen = candidates[-1]
    status = RunStatus.read(chosen)
    return str(run_weights(chosen)), f"the latest finished {before} run ({chosen}, step {status.global_step})"
