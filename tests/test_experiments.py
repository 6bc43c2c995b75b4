"""Every paper experiment composes, and its architecture (fusion, projector, scan, framing, prompt,
stage, loss) trains one step on CPU with the tiny tower(s) and LLM of the same family swapped in."""

from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig, OmegaConf

from mmssm_lightning.build import build_datamodule, build_model
from mmssm_lightning.constants import CONF_DIR
from mmssm_lightning.train import run
from tests.conftest import compose_cfg

ROOT = Path(CONF_DIR) / "experiment"
EXPERIMENTS = sorted(
    p.relative_to(ROOT).with_suffix("").as_posix() for p in ROOT.rglob("*.yaml") if p.parent != ROOT
)
TINY_ENCODER = {
    ("channel", 1): "tiny",
    ("channel", 2): "tiny_dual_channel",
    ("sequence", 2): "tiny_dual_sequence",
}
TINY_LLM = {"mamba": "tiny_mamba", "gpt_neox": "tiny_pythia", "llama": "tiny_llama"}


def tiny(tmp: Path, experiment: str) -> DictConfig:
    """The experiment with tiny parts of the same kind and a one-step CPU budget."""
    return compose_cfg(tmp, tiny_overrides(tmp, experiment), small_data=False)


def tiny_overrides(tmp: Path, experiment: str) -> list[str]:
    paper = compose_cfg(tmp, [f"experiment={experiment}"], small_data=False)
    ov = [
        f"experiment={experiment}",
        f"llm={TINY_LLM[paper.llm.config.model_type]}",
        "trainer=cpu",
        "trainer.max_steps=1",
        "evaluate=false",
        "callbacks.checkpoint=null",
        "init_from=null",
    ]
    if paper.encoder:
        ov.append(f"encoder={TINY_ENCODER[(paper.encoder.fuse, len(paper.encoder.towers))]}")
    if paper.data._target_.endswith(".VLMDataModule"):
        ov += [
            "data=synthetic_shapes",
            f"data.root={tmp}/shapes",
            "data.train=train.json",
            "data.val=val.json",
            "data.test=test.json",
            "data.synthetic.splits={train:8,val:4,test:4}",
            "data.global_batch_size=4",
            "data.per_device_batch_size=4",
        ]
    elif paper.data._target_.endswith("RandomVLMDataModule"):
        ov += [
            "data.text_tokens=8",
            "data.global_batch_size=4",
            "data.per_device_batch_size=4",
            "data.num_workers=0",
            "callbacks.throughput.warmup_batches=0",
            "trainer.devices=1",
        ]
    else:  # the synthetic grounding task keeps its data, shrunk
        ov += [
            "data.seq_len=8",
            "data.num_special_tokens=16",
            "data.splits={train:16,val:4,test:4}",
            "data.global_batch_size=4",
            "data.per_device_batch_size=4",
            "data.eval_batch_size=4",
            "trainer.val_check_interval=1",
        ]
    if paper.projector._target_.endswith("LDPv2Projector"):
        ov.append("projector.pool_size=4")  # 27 x 27 -> 14 x 14 in the paper; 8 x 8 -> 4 x 4 here
    if paper.projector._target_.endswith("QMambaProjector"):
        ov += [
            "projector.width=64",
            "projector.depth=2",
            "projector.num_queries=16",  # local chunks partition the tiny tower's tokens
            "projector.num_heads=2",
            "projector.pretrained_mamba=null",
            "projector.connector_ckpt=null",
        ]
    return ov


def test_every_paper_has_experiments_and_tables():
    """Every paper folder of experiments/ (a reported.yaml) has experiment configs and table configs,
    and every experiment config belongs to a paper folder."""
    root = Path(CONF_DIR).parent / "experiments"
    papers = {p.parent.name for p in root.glob("*/reported.yaml")} - {"demo"}
    assert papers, "no experiments/<paper>/reported.yaml"
    assert papers == {e.split("/")[0] for e in EXPERIMENTS} - {"benchmarks"}
    tables = {p.parent.name for p in (Path(CONF_DIR) / "table").glob("*/*.yaml")}
    assert papers | {"demo"} == tables


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_for_both_stages(tmp_path, experiment):
    for stage in ("align", "finetune"):
        cfg = compose_cfg(tmp_path, [f"experiment={experiment}", f"stage={stage}"], small_data=False)
        c = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
        assert c["experiment_name"].startswith(experiment.split("/")[0])
        if "stage_recipe" in c:
            # finetune starts from the align run of this experiment (runs.resolve_init_from)
            assert c["init_from"] == (None if stage == "align" else "auto")


@pytest.mark.slow
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_architecture_trains_one_step_tiny(tmp_path, experiment):
    paper = compose_cfg(tmp_path, [f"experiment={experiment}"], small_data=False)
    cfg = tiny(tmp_path, experiment)
    # What makes the paper's architecture survives the swap.
    for key in (
        "projector._target_",
        "scan.name",
        "framing",
        "prompt.name",
        "prompt.image_position",
        "stage.name",
        "module.loss_normalization",
        "optim.optimizer._target_",
    ):
        assert OmegaConf.select(cfg, key) == OmegaConf.select(paper, key), key
    assert bool(cfg.encoder) == bool(paper.encoder)
    if paper.encoder:
        assert cfg.encoder.fuse == paper.encoder.fuse
    model = build_model(cfg)
    build_datamodule(cfg, model)
    if model.vision is not None:
        pixels = torch.rand(1, 3, model.vision.image_size, model.vision.image_size)
        assert model.encode_images(pixels).shape[1] == model.num_image_tokens
    payload = run(cfg)
    assert payload["global_step"] == 1  # one optimizer step ran
    weights = torch.load(payload["weights"], weights_only=True, map_location="cpu")
    assert weights["global_step"] == 1 and weights["mmssm_config"]["experiment_name"] == cfg.experiment_name


@pytest.mark.slow
def test_two_stage_recipe_chains_align_into_finetune_through_the_cli(tmp_path):
    """`stage=align` twice, then `stage=finetune`: every run has its own folder, and the finetune
    run starts from the latest finished align run (not the first), says which, and records it."""
    import os
    import subprocess
    import sys

    from tests.conftest import SHARED_CACHE

    env = {**os.environ, "MMSSM_ROOT": str(tmp_path)}
    ov = [
        o
        for o in tiny_overrides(tmp_path, "vl_mamba/main")
        if not o.startswith(("callbacks.checkpoint", "init_from", "trainer.max_steps"))
    ]
    common = [*ov, "logger=none", "trainer.max_steps=2", f"paths.cache_dir={SHARED_CACHE}"]
    outputs = {}
    for i, stage in enumerate(("align", "align", "finetune")):
        proc = subprocess.run(
            [sys.executable, "-m", "mmssm_lightning.train", f"stage={stage}", f"seed={i}", *common],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        outputs.setdefault(stage, []).append(proc.stdout)
    runs = tmp_path / "logs" / "train" / "runs" / "vl_mamba"
    aligns = sorted((runs / "align").iterdir())
    (finetune_dir,) = (runs / "finetune").iterdir()
    assert len(aligns) == 2  # a second align run gets a folder of its own: no last-v1.ckpt
    assert not list(runs.rglob("last-v1.ckpt"))
    second = aligns[1] / "checkpoints" / "model.ckpt"
    assert f"init_from: {second}" in outputs["finetune"][0]
    ckpts = {
        "align": torch.load(second, weights_only=True, map_location="cpu"),
        "finetune": torch.load(
            finetune_dir / "checkpoints" / "model.ckpt", weights_only=True, map_location="cpu"
        ),
    }
    align, finetune = ckpts["align"], ckpts["finetune"]
    assert align["mmssm_config"]["optim"]["optimizer"]["lr"] == 1e-3
    assert finetune["mmssm_config"]["optim"]["optimizer"]["lr"] == 2e-5
    assert finetune["mmssm_config"]["init_from"] == str(second)
    key = "model.projector.head.weight"
    # 2 steps at 2e-5 from the second align run's weights
    assert (finetune["state_dict"][key] - align["state_dict"][key]).abs().max() < 2e-4
    # the LLM learns only in finetune
    llm_key = next(
        k for k in align["state_dict"] if k.startswith("model.llm.") and k.endswith("in_proj.weight")
    )
    assert not torch.equal(finetune["state_dict"][llm_key], align["state_dict"][llm_key])
