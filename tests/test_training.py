"""End to end on CPU: fast_dev_run, the demo's loss falls, checkpoints load weights-only and resume,
and a 2-point multirun."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from mmssm_lightning.train import run
from tests.conftest import SHARED_CACHE, SMALL_DATA, compose_cfg


def test_fast_dev_run(tmp_path):
    cfg = compose_cfg(tmp_path, ["debug=fast"])
    payload = run(cfg)
    assert payload["global_step"] == 1 and Path(payload["weights"]).is_file()


def _losses(run_dir: Path) -> list[float]:
    rows = list(csv.DictReader(open(next(run_dir.rglob("metrics.csv")))))
    return [float(r["train/loss"]) for r in rows if r.get("train/loss")]


@pytest.mark.slow
def test_demo_loss_falls(tmp_path):
    cfg = compose_cfg(
        tmp_path,
        [
            "logger=csv",
            "trainer.max_steps=60",
            "trainer.log_every_n_steps=5",
            "trainer.val_check_interval=60",
            "data.per_device_batch_size=16",
            "data.global_batch_size=16",
            "module.val_generate=false",
            "callbacks.checkpoint=null",
        ],
    )
    payload = run(cfg)
    losses = _losses(tmp_path / "run")
    assert len(losses) >= 10
    # From ~log(vocab) at random init to well below: answers (and the EOS) are being learnt.
    assert losses[0] > 3.0
    assert sum(losses[-3:]) / 3 < 0.5 * losses[0]
    assert set(payload["test_accuracy"]) == {"color", "count", "position", "exists", "mean"}
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["global_step"] == 60
    assert (tmp_path / "run" / "config_resolved.yaml").exists()
    assert "sha" in json.loads((tmp_path / "run" / "git.json").read_text())


@pytest.mark.slow
def test_checkpoint_loads_weights_only_and_resumes(tmp_path):
    common = [
        "trainer.val_check_interval=4",
        "module.val_generate=false",
        "evaluate=false",
        "callbacks.checkpoint.every_n_train_steps=4",
    ]
    run(compose_cfg(tmp_path, ["trainer.max_steps=4", *common]))
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True, map_location="cpu")
    assert ckpt["global_step"] == 4 and ckpt["stage"] == "full"
    assert ckpt["mmssm_config"]["llm"]["config"]["model_type"] == "mamba"
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    cfg = compose_cfg(resumed, ["trainer.max_steps=8", f"ckpt_path={last}", *common])
    run(cfg)
    after = torch.load(resumed / "run" / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert after["global_step"] == 8
    # The optimizer state came along: Adam's step counter continued from 4.
    state = after["optimizer_states"][0]["state"]
    assert int(next(iter(state.values()))["step"]) == 8


@pytest.mark.slow
def test_two_point_multirun(tmp_path):
    env = {**os.environ, "MMSSM_ROOT": str(tmp_path), "PYTEST_MMSSM_CACHE": str(SHARED_CACHE)}
    cmd = [
        sys.executable,
        "-m",
        "mmssm_lightning.train",
        "-m",
        "experiment=demo",
        "logger=none",
        "trainer.max_steps=2",
        "module.val_generate=false",
        "trainer.val_check_interval=2",
        "callbacks.checkpoint=null",
        f"paths.cache_dir={SHARED_CACHE}",
        f"hydra.sweep.dir={tmp_path}/sweep",
        *SMALL_DATA,
        "optim.optimizer.lr=1e-3,2e-3",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted((tmp_path / "sweep").glob("*/full"))
    assert [j.parent.name for j in jobs] == ["lr-0.001", "lr-0.002"]
    lrs = []
    for j in jobs:
        assert (j / "results.json").exists()
        resolved = OmegaConf.load(j / "config_resolved.yaml")
        lrs.append(resolved.optim.optimizer.lr)
    assert lrs == [0.001, 0.002]


@pytest.mark.slow
def test_bad_override_is_a_short_clear_error(tmp_path):
    env = {**os.environ, "MMSSM_ROOT": str(tmp_path)}
    cmd = [
        sys.executable,
        "-m",
        "mmssm_lightning.train",
        "logger=none",
        f"paths.cache_dir={SHARED_CACHE}",
        "data.global_batch_size=30",
        "data.per_device_batch_size=16",
        *SMALL_DATA,
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "data.global_batch_size=30 is not a multiple" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_wandb_logs_offline_into_the_run_dir(tmp_path, monkeypatch):
    """One offline wandb run per job: named by experiment, stage and the overrides that tell a sweep
    job apart, grouped by experiment (a table's name in a table sweep), typed by stage, carrying the
    resolved config as its hyper-parameters and the evaluation results in its summary."""
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = compose_cfg(
        tmp_path,
        [
            "logger=wandb",
            "trainer.max_steps=2",
            "trainer.val_check_interval=2",
            "module.val_generate=false",
            "callbacks.checkpoint=null",
            "job_name=seed-1",
        ],
    )
    assert cfg.logger.wandb.offline is True
    assert (cfg.logger.wandb.group, cfg.logger.wandb.job_type) == ("demo", "full")
    assert cfg.logger.wandb.name == "demo-full-seed-1"
    assert compose_cfg(tmp_path, ["logger=wandb", "table=demo/shapes"]).logger.wandb.group == "demo/shapes"
    import wandb

    seen = {}
    finish = wandb.finish

    def record_then_finish(*args, **kwargs):  # what the run holds when the job ends
        if wandb.run is not None:
            seen.update(config=dict(wandb.run.config), summary=dict(wandb.run.summary), name=wandb.run.name)
            seen["group"] = wandb.run.group
        return finish(*args, **kwargs)

    monkeypatch.setattr(wandb, "finish", record_then_finish)
    payload = run(cfg)
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert any(runs[0].glob("*.wandb"))
    assert (seen["name"], seen["group"]) == ("demo-full-seed-1", "demo")
    assert seen["config"]["experiment_name"] == "demo" and seen["config"]["optim"]["optimizer"]["lr"] == 1e-3
    assert seen["summary"]["test/acc/mean"] == pytest.approx(payload["test_accuracy"]["mean"])


@pytest.mark.slow
def test_init_from_takes_weights_only_and_names_a_mismatch(tmp_path):
    from hydra.utils import instantiate

    from mmssm_lightning.build import build_model
    from mmssm_lightning.lit.module import VLMModule, load_weights

    common = [
        "trainer.val_check_interval=2",
        "module.val_generate=false",
        "evaluate=false",
        "callbacks.checkpoint.every_n_train_steps=2",
        "trainer.max_steps=2",
    ]
    run(compose_cfg(tmp_path, common))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"

    def module(overrides):
        cfg = compose_cfg(tmp_path / "b", overrides)
        return VLMModule(
            build_model(cfg), instantiate(cfg.optim.optimizer), instantiate(cfg.stage, _convert_="all")
        )

    fresh = module([])
    load_weights(fresh, str(ckpt))
    saved = torch.load(ckpt, weights_only=True)["state_dict"]
    assert all(torch.equal(v, saved[k]) for k, v in fresh.state_dict().items())
    with pytest.raises(ValueError, match="init_from: .* does not fit this model"):
        load_weights(module(["projector=vss_l2", "scan=bidirectional"]), str(ckpt))
    with pytest.raises(FileNotFoundError, match="init_from"):
        load_weights(fresh, str(tmp_path / "nope.ckpt"))
