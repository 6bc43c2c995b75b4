"""FSDP end to end on CPU (gloo, 2 ranks, mmssm_lightning.fsdp.FSDPStrategy): validation with
generation, the test split after fit, the consolidated model.ckpt, mmssm-eval and init_from on the
sharded folder itself, and resuming from it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmssm_lightning.checkpoints import checkpoint_state, read_checkpoint
from tests.conftest import SHARED_CACHE

FSDP = [
    "experiment=demo",
    "trainer=fsdp",
    "trainer.accelerator=cpu",
    "trainer.devices=2",
    "trainer.precision=32-true",
    "logger=none",
    "data.synthetic.splits={train:64,val:8,test:8}",
    "data.eval_batch_size=8",
    "data.per_device_batch_size=16",
    "trainer.val_check_interval=2",
    "callbacks.checkpoint.every_n_train_steps=2",
    f"paths.cache_dir={SHARED_CACHE}",
]


def _train(tmp_path: Path, run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "mmssm_lightning.train", *FSDP, f"hydra.run.dir={run_dir}", *extra]
    env = {**os.environ, "MMSSM_ROOT": str(tmp_path)}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)


@pytest.mark.slow
def test_fsdp_trains_validates_tests_consolidates_and_resumes(tmp_path):
    run = tmp_path / "run"
    proc = _train(tmp_path, run, "trainer.max_steps=4")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((run / "results.json").read_text())
    assert results["global_step"] == 4
    assert set(results["test_accuracy"]) == {"color", "count", "position", "exists", "mean"}  # test after fit
    sharded = run / "checkpoints" / "last.ckpt"
    assert sharded.is_dir() and (sharded / ".metadata").is_file()
    weights = read_checkpoint(run / "checkpoints" / "model.ckpt", "test")
    assert weights["global_step"] == 4 and weights["mmssm_config"]["trainer"]["strategy"]
    full = weights["state_dict"]
    # the consolidated file holds whole tensors, equal to the shards put back together
    from_shards = checkpoint_state(sharded, "test")
    assert full.keys() == from_shards.keys()
    patch = "model.vision.towers.vit.model.patch_embed.proj.weight"
    assert full[patch].ndim == 4
    for key in (patch, "model.projector.net.0.weight"):
        assert torch.equal(full[key], from_shards[key]), key

    # resume from the sharded folder: two more steps
    resumed = tmp_path / "resumed"
    proc = _train(tmp_path, resumed, "trainer.max_steps=6", f"ckpt_path={sharded}", "evaluate=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((resumed / "results.json").read_text())["global_step"] == 6

    # mmssm-eval reads the consolidated file and the sharded folder alike
    from mmssm_lightning.eval.evaluate import load_checkpoint

    a, _, _ = load_checkpoint(run / "checkpoints" / "model.ckpt")
    b, _, _ = load_checkpoint(sharded)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka
