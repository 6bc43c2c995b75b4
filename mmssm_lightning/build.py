"""Turn a composed config into objects: the model, the data module, loggers, callbacks, trainer."""

from __future__ import annotations

from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from mmssm_lightning.data.datamodule import VLMDataModule
from mmssm_lightning.data.transforms import ImageTransform
from mmssm_lightning.models.vlm import VisionLanguageModel


def _optional(node: Any) -> Any:
    """A group option that is ``none`` composes to an empty node: nothing to build."""
    return instantiate(node, _convert_="all") if node else None


def random_weights(node: DictConfig) -> None:
    """Set every ``pretrained`` key under ``node`` to false: real shapes, random weights."""
    for key, value in node.items():
        if key == "pretrained":
            node[key] = False
        elif isinstance(value, DictConfig):
            random_weights(value)


def build_model(cfg: DictConfig) -> VisionLanguageModel:
    if cfg.get("random_weights"):
        for group in ("encoder", "llm", "projector"):
            random_weights(cfg[group])
    vision = _optional(cfg.encoder)
    llm = instantiate(cfg.llm, _convert_="all")
    projector = _optional(cfg.projector) if vision is not None else None
    return VisionLanguageModel(vision, projector, llm, _optional(cfg.get("framing")))


def build_datamodule(cfg: DictConfig, model: VisionLanguageModel) -> VLMDataModule:
    """The data module; tokens the data needs that the LLM lacks are added to it here, before the
    training stage freezes parts and the optimizer sees the parameters."""
    prompt = instantiate(cfg.prompt)
    transform = (
        ImageTransform(model.vision.image_size, model.vision.resize) if model.vision is not None else None
    )
    # Objects go in through a partial: instantiate() would turn a dataclass kwarg into a config node.
    factory = instantiate(cfg.data, _partial_=True, _convert_="all")
    dm = factory(tokenizer=model.tokenizer, prompt=prompt, transform=transform)
    if dm.new_tokens:
        model.llm.add_tokens(dm.new_tokens, init_seed=dm.new_token_init_seed)
    return dm


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
    return [instantiate(c) for c in (cfg.get("logger") or {}).values()]


def build_callbacks(cfg: DictConfig) -> list[Any]:
    return [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
