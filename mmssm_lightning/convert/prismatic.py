"""Convert a Prismatic-format release (Cobra: ``checkpoints/latest-checkpoint.pt`` with
``{"model": {"projector": ..., "llm_backbone": ...}}``) into a checkpoint of ours.

Prismatic stores only what it trained: the projector (``projector.{0,2,4}`` of its fused MLP, as
our ``MLPProjector``'s ``net.{0,2,4}``) and the LLM backbone (a ``mamba_ssm`` ``MambaLMHeadModel``
under ``llm.``: ``backbone.embedding`` -> HF ``backbone.embeddings``, layers and ``norm_f`` by
name, ``lm_head``). The frozen towers are not in it; ``mmssm-eval`` then builds them from timm as
the experiment config says (``pretrained: true``).

    python -m mmssm_lightning.convert.prismatic latest-checkpoint.pt cobra.ckpt experiment=cobra/main
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import mmssm_lightning  # noqa: F401
from mmssm_lightning.constants import CONF_DIR


def prismatic_to_ours(model_state: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Prismatic's ``{"projector": sd, "llm_backbone": sd}`` -> our ``model.*`` state dict."""
    for part in ("projector", "llm_backbone"):
        if part not in model_state:
            raise ValueError(
                f"not a Prismatic checkpoint: no '{part}' under 'model' (found {sorted(model_state)})"
            )
    out = {}
    for k, v in model_state["projector"].items():
        if not k.startswith("projector."):
            raise ValueError(f"unexpected projector key {k!r} (expected projector.<i>.weight)")
        out["model.projector.net." + k.removeprefix("projector.")] = v
    for k, v in model_state["llm_backbone"].items():
        if not k.startswith("llm."):
            raise ValueError(f"unexpected LLM key {k!r} (expected llm.backbone... / llm.lm_head...)")
        k = k.removeprefix("llm.").replace("backbone.embedding.", "backbone.embeddings.")
        out["model.llm.model." + k] = v
    return out


def convert(src: str | Path, dst: str | Path, overrides: list[str]) -> Path:
    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    if "model" not in ckpt:
        raise ValueError(f"{src}: not a Prismatic checkpoint (no 'model' key)")
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["paths.output_dir=.", *overrides])
    out = {
        "state_dict": prismatic_to_ours(ckpt["model"]),
        "mmssm_config": OmegaConf.to_container(cfg, resolve=True),
        "stage": cfg.stage.name,
        "converted_from": str(src),
    }
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, dst)
    return Path(dst)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(
            "usage: python -m mmssm_lightning.convert.prismatic SRC.pt DST.ckpt [experiment=cobra/main ...]"
        )
    print(convert(sys.argv[1], sys.argv[2], sys.argv[3:]))
