"""Pre-emption: SIGTERM (what SLURM and `timeout` send) mid-training saves a resumable checkpoint,
says so in status.json and exits non-zero; the same command then resumes from it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.conftest import SHARED_CACHE, SMALL_DATA


@pytest.mark.slow
def test_sigterm_saves_a_resumable_checkpoint_and_exits_nonzero(tmp_path):
    run_dir = tmp_path / "run"
    common = [
        sys.executable,
        "-m",
        "mmssm_lightning.train",
        "experiment=demo",
        "logger=none",
        "evaluate=false",
        "module.val_generate=false",
        "trainer.val_check_interval=1000",
        "callbacks.checkpoint.every_n_train_steps=1000",
        "callbacks.progress.force=plain",
        "callbacks.progress.every_n_steps=1",
        f"paths.cache_dir={SHARED_CACHE}",
        f"hydra.run.dir={run_dir}",
        *SMALL_DATA,
        "data.per_device_batch_size=8",
        "data.global_batch_size=8",
    ]
    env = {**os.environ, "MMSSM_ROOT": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [*common, "trainer.max_steps=100000"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    deadline = time.time() + 300
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("step 5/") or time.time() > deadline:
            break
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=300)
    out = "".join(lines) + rest
    assert proc.returncode == 143, out[-3000:]
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "interrupted" and "SIGTERM" in status["error"]
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    stopped = ckpt["global_step"]
    assert stopped >= 5 and "loops" in ckpt  # a full training checkpoint, not weights only
    # the same command (same run folder) resumes from it: ckpt_path=auto
    again = subprocess.run(
        [*common, f"trainer.max_steps={stopped + 2}"], env=env, capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming from {run_dir / 'checkpoints' / 'last.ckpt'} (step {stopped})" in again.stdout
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"
    assert json.loads((run_dir / "results.json").read_text())["global_step"] == stopped + 2
