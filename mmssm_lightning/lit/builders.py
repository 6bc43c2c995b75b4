"""The training side of a composed config: the LightningModule (``cfg.module``'s ``_target_``),
loggers, callbacks and the Trainer."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ProgressBar
from omegaconf import DictConfig, OmegaConf

from mmssm_lightning.data.datamodule import BaseDataModule, accumulation_steps
from mmssm_lightning.lit.module import VLMModule
from mmssm_lightning.models.vlm import VisionLanguageModel


def world_size(trainer_cfg: DictConfig) -> int:
    """Devices x nodes as Lightning will count them (for the global-batch arithmetic)."""
    devices = trainer_cfg.get("devices", 1)
    if isinstance(devices, str) and devices != "auto":
        devices = (
            int(devices)
            if devices.lstrip("-").isdigit()
            else len([d for d in devices.split(",") if d.strip()])
        )
    if devices in ("auto", -1):
        accel = trainer_cfg.get("accelerator", "cpu")
        devices = (
            torch.cuda.device_count() if accel in ("gpu", "cuda", "auto") and torch.cuda.is_available() else 1
        )
    if isinstance(devices, (list, tuple)):
        devices = len(devices)
    return int(devices) * int(trainer_cfg.get("num_nodes", 1))


def build_loggers(cfg: DictConfig) -> list[Any]:
    """The loggers, each given the resolved run config as its hyper-parameters (wandb's run.config)."""
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c]
    hparams = OmegaConf.to_container(cfg, resolve=True)
    hparams.pop("hydra", None)
    for lg in loggers:
        lg.log_hyperparams(hparams)
    return loggers


def build_callbacks(cfg: DictConfig) -> list[Any]:
    return [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]


def build_module(cfg: DictConfig, model: VisionLanguageModel, dm: BaseDataModule) -> VLMModule:
    """The LightningModule of ``cfg.module`` (its ``_target_``) around ``model``; the task names
    come from the data, the resolved config goes into every checkpoint."""
    module = instantiate(cfg.module, model=model, tasks=dm.tasks, _convert_="all")
    # Set after construction: passed to instantiate, its _target_ nodes would be built too.
    module.run_config = OmegaConf.to_container(cfg, resolve=True)
    return module


def build_trainer(cfg: DictConfig, dm: BaseDataModule) -> L.Trainer:
    """The Trainer of ``cfg.trainer`` with the loggers and callbacks; gradient accumulation is
    derived from the global batch size (data.global_batch_size is the knob)."""
    accumulate = accumulation_steps(dm.global_batch_size, dm.per_device_batch_size, world_size(cfg.trainer))
    loggers = build_loggers(cfg)
    callbacks = build_callbacks(cfg)
    if cfg.trainer.get("enable_progress_bar") is False:  # a progress callback would contradict it
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    return instantiate(cfg.trainer, _partial_=True, _convert_="all")(
        logger=loggers or False, callbacks=callbacks, accumulate_grad_batches=accumulate
    )
