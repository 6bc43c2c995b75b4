"""What a run does once fitting ends: the consolidated weights file every consumer reads, and the
paper's benchmarks scored on it (a table job trains, then scores)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.strategies import FSDPStrategy
from omegaconf import DictConfig

from mmssm_lightning.checkpoints import save_weights
from mmssm_lightning.runs import WEIGHTS, checkpoint_dir


def save_final_weights(trainer: L.Trainer, module: L.LightningModule, run_dir: str | Path) -> Path:
    """``<run>/checkpoints/model.ckpt``: every weight in one file with the run config, whatever
    the strategy. Under FSDP the shards are gathered (a collective: every rank calls this) and
    rank 0 writes; ``mmssm-eval``, ``init_from`` and the converters need no consolidation step."""
    strategy = trainer.strategy
    if isinstance(strategy, FSDPStrategy):
        from torch.distributed.fsdp import FullStateDictConfig, StateDictType
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        # Gathered to rank 0 and moved to the CPU there; CPU processes (gloo, CI) keep their tensors
        # where they are (offloading CPU tensors "to the CPU" crashes torch's FSDP).
        config = FullStateDictConfig(offload_to_cpu=strategy.root_device.type != "cpu", rank0_only=True)
        with FSDP.state_dict_type(strategy.model, StateDictType.FULL_STATE_DICT, config):
            state = strategy.model.state_dict()
    else:
        state = module.state_dict()
    path = checkpoint_dir(run_dir) / WEIGHTS
    if trainer.is_global_zero:
        save_weights(
            path,
            state,
            mmssm_config=getattr(module, "run_config", {}),
            stage=getattr(getattr(module, "stage", None), "name", None),
            global_step=trainer.global_step,
            epoch=trainer.current_epoch,
        )
    strategy.barrier("final weights written")
    return path


def score_benchmarks(cfg: DictConfig, weights: Path, output_dir: Path, trainer: L.Trainer) -> dict:
    """Score ``cfg.eval.run`` under ``cfg.eval.protocol`` on the run's weights, each rank a shard
    of every benchmark (the metrics sync); a benchmark whose files are missing is skipped with a
    line naming them. Returns ``{benchmark: {n, metrics, protocol} | {skipped: [files]}}``, or with
    ``eval.variants`` one such dict per variant (``{variant: {...}}``)."""
    from hydra.utils import instantiate

    from mmssm_lightning.eval.evaluate import Evaluator, load_checkpoint, missing_files, run_benchmarks

    stages = cfg.eval.get("stages")
    if stages is not None and cfg.stage.name not in stages:
        return {}
    if not cfg.eval.get("protocol"):
        raise ValueError(
            "eval.run names benchmarks but eval.protocol is not set (protocol@eval.protocol=...)"
        )
    if cfg.eval.get("prepare") and trainer.is_global_zero:
        instantiate(cfg.eval.prepare)
    trainer.strategy.barrier("benchmark files prepared")
    names, report = [], {}
    for name in cfg.eval.run:
        missing = missing_files(name, cfg.eval.protocol, cfg.eval.benchmarks)
        if not missing:
            names.append(name)
            continue
        report[name] = {"skipped": missing}
        if trainer.is_global_zero:
            more = " ..." if len(missing) > 3 else ""
            print(f"eval: {name} skipped, missing {', '.join(missing[:3])}{more}", flush=True)
    if not names:
        return report
    device = trainer.strategy.root_device
    dtype = getattr(torch, cfg.eval.dtype) if device.type != "cpu" else torch.float32
    variants = dict(cfg.eval.get("variants") or {}) or {None: []}
    scored = {}
    for variant, overrides in variants.items():
        model, prompt_format, _ = load_checkpoint(weights, list(overrides))
        evaluator = Evaluator(model, prompt_format, cfg.eval.batch_size, str(device), dtype)
        folder = output_dir / "eval" / (variant or "")
        folder.mkdir(parents=True, exist_ok=True)
        header = {
            "checkpoint": str(weights),
            "experiment": cfg.experiment_name,
            "protocol": cfg.eval.protocol.name,
            "model_overrides": list(overrides),
        }
        result = run_benchmarks(
            evaluator,
            names,
            cfg.eval.protocol,
            cfg.eval.benchmarks,
            cfg.eval.max_samples,
            folder,
            header,
            write=trainer.is_global_zero,
        )
        scored[variant] = {**report, **result["benchmarks"]}
        del model, evaluator
    return scored[None] if None in scored else scored
