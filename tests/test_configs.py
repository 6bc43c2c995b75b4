"""Every option of every config group composes, and the cheap ones instantiate."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from mmssm_lightning.constants import CONF_DIR
from tests.conftest import compose_cfg

GROUPS = [
    "encoder",
    "projector",
    "scan",
    "llm",
    "prompt",
    "data",
    "trainer",
    "stage",
    "optim",
    "logger",
    "debug",
    "experiment",
]


def options(group):
    return sorted(
        p.relative_to(Path(CONF_DIR) / group).with_suffix("").as_posix()
        for p in (Path(CONF_DIR) / group).rglob("*.yaml")
    )


ALL = [(g, o) for g in GROUPS for o in options(g)]


def test_every_group_has_options():
    for g in GROUPS:
        assert options(g), f"conf/{g} is empty"


@pytest.mark.parametrize("group,option", ALL, ids=[f"{g}={o}" for g, o in ALL])
def test_compose(tmp_path, group, option):
    overrides = [f"{group}={option}"]
    # Paper experiments bring their own data (tests/test_experiments.py covers them further).
    own_data = (group == "data" and option != "synthetic_shapes") or (
        group == "experiment" and option != "demo"
    )
    if group == "data" and option == "llava":
        overrides += [f"data.root={tmp_path}", "data.val=val.json"]
    cfg = compose_cfg(tmp_path, overrides, small_data=not own_data)
    # Every interpolation resolves and no mandatory value (???) is left open.
    container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    assert container["llm"]["_target_"].endswith("CausalLM")


@pytest.mark.parametrize("option", options("scan"))
def test_scan_configs_instantiate(tmp_path, option):
    cfg = compose_cfg(tmp_path, [f"scan={option}"])
    assert instantiate(cfg.scan).name == option


@pytest.mark.parametrize("option", options("prompt"))
def test_prompt_configs_instantiate(tmp_path, option):
    cfg = compose_cfg(tmp_path, [f"prompt={option}"])
    assert instantiate(cfg.prompt).name == option


@pytest.mark.parametrize("option", options("stage"))
def test_stage_configs_instantiate(tmp_path, option):
    cfg = compose_cfg(tmp_path, [f"stage={option}"])
    assert instantiate(cfg.stage, _convert_="all").name == option


@pytest.mark.parametrize("option", [o for o in options("llm") if not o.startswith("tiny")])
def test_real_llm_configs_describe_real_shapes(tmp_path, option):
    """The embedded shape is what `pretrained: false` builds; check it against published sizes."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = compose_cfg(tmp_path, [f"llm={option}"])
    fields = dict(cfg.llm.config)
    hf = AutoConfig.for_model(fields.pop("model_type"), **fields)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf)
    billions = sum(p.numel() for p in model.parameters()) / 1e9
    expected = {
        "130m": 0.13,
        "370m": 0.37,
        "790m": 0.79,
        "1.4b": 1.4,
        "2.8b": 2.8,
        "160m": 0.16,
        "410m": 0.41,
        "1b": 1.0,
        "7b": 6.7,
    }
    size = {"phi_2": 2.78}.get(option) or next(v for k, v in expected.items() if f"_{k}" in option)
    assert billions == pytest.approx(size, rel=0.12), f"{option}: {billions:.2f}B parameters"


def test_no_experiment_means_a_real_runs_defaults_not_the_demos(tmp_path):
    """Without experiment=, nothing of the demo leaks in: one stage in which the towers stay frozen,
    AdamW at 2e-5, the image first, one epoch, no step cap."""
    from tests.conftest import SHARED_CACHE

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.root_dir={tmp_path}", f"paths.cache_dir={SHARED_CACHE}"])
    assert cfg.experiment_name == "default" and cfg.stage.name == "single"
    assert "vision" not in cfg.stage.trainable
    assert cfg.optim.optimizer.lr == 2e-5 and cfg.prompt.image_position == "first"
    assert (cfg.trainer.max_epochs, cfg.trainer.max_steps) == (1, -1)
