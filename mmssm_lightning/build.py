"""Turn a composed config into the model and its data module (the training side: lit/builders.py)."""

from __future__ import annotations

from typing import Any

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
