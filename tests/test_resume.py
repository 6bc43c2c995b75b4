"""A resumed run is the uninterrupted run: same batches, same losses, step for step -- mid-epoch, at
an epoch boundary, with data-loader workers, with dropout, and on 2 DDP ranks with accumulation.

The runs record what each step trained on with the BatchTrace debug callback."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mmssm_lightning.data.sampler import ResumableLoader, ResumableSampler
from mmssm_lightning.lit.callbacks import BatchSeed, batch_seed
from mmssm_lightning.train import run
from tests.conftest import SHARED_CACHE, SMALL_DATA, compose_cfg

TRACE = "+callbacks.trace={{_target_: mmssm_lightning.lit.callbacks.BatchTrace, dirpath: {}}}"


def _trace(folder: Path, rank: int = 0) -> list[dict]:
    return [json.loads(line) for line in (folder / f"rank{rank}.jsonl").read_text().splitlines()]


def _assert_replays(resumed: list[dict], full: list[dict]) -> None:
    assert len(resumed) == len(full) > 0
    assert [(r["epoch"], r["batch_idx"], r["indices"]) for r in resumed] == [
        (r["epoch"], r["batch_idx"], r["indices"]) for r in full
    ]
    assert [r["loss"] for r in resumed] == pytest.approx([r["loss"] for r in full], rel=0, abs=1e-6)


# --- the sampler and loader on their own ------------------------------------------------------------


def _epoch(n=20, replicas=2, bs=3, epoch=0, seed=7, resume=None):
    """Each rank's batches of one epoch (lists of indices), optionally resumed from a state."""
    out = []
    for rank in range(replicas):
        loader = ResumableLoader(
            list(range(n)), ResumableSampler(list(range(n)), replicas, rank, seed=seed), bs
        )
        if resume is not None:
            loader.load_state_dict(resume)
        loader.sampler.set_epoch(epoch)
        out.append([b.tolist() for b in loader])
    return out


def test_order_is_a_function_of_seed_and_epoch_and_global_batches_are_chunks_of_one_permutation():
    a, again = _epoch(), _epoch()
    assert a == again
    assert _epoch(epoch=1) != a and _epoch(seed=8) != a
    perm = torch.randperm(20, generator=torch.Generator().manual_seed(7)).tolist()
    for k in range(len(a[0])):  # global batch k = ranks' k-th batches = perm[k*6:(k+1)*6], interleaved
        assert sorted(a[0][k] + a[1][k]) == sorted(perm[k * 6 : (k + 1) * 6])
    assert [len(r) for r in a] == [3, 3]  # 10 samples per rank, incomplete batch dropped
    assert not set(sum(a[0], [])) & set(sum(a[1], []))


def test_loader_state_skips_the_consumed_batches_and_rolls_over_at_the_epoch_end():
    full = _epoch(n=40, replicas=2, bs=4, epoch=3)  # 5 batches per rank
    loader = ResumableLoader(list(range(40)), ResumableSampler(list(range(40)), 2, 0, seed=7), 4)
    loader.sampler.set_epoch(3)
    it = iter(loader)
    taken = [next(it).tolist() for _ in range(2)]
    state = loader.state_dict()
    assert state == {
        "epoch": 3,
        "batches": 2,
        "seed": 7,
        "num_samples": 40,
        "num_replicas": 2,
        "batch_size": 4,
    }
    assert taken == full[0][:2]
    assert _epoch(n=40, replicas=2, bs=4, epoch=3, resume=state) == [r[2:] for r in full]
    # the skip applies to the resumed epoch only
    assert _epoch(n=40, replicas=2, bs=4, epoch=4, resume=state) == _epoch(n=40, replicas=2, bs=4, epoch=4)
    list(it)
    assert loader.state_dict()["epoch"] == 4 and loader.state_dict()["batches"] == 0


def test_resuming_on_another_world_size_skips_the_consumed_samples(capsys):
    state = {"epoch": 0, "batches": 2, "seed": 7, "num_samples": 40, "num_replicas": 2, "batch_size": 4}
    one_rank = _epoch(n=40, replicas=1, bs=8, resume=state)[0]  # 16 samples consumed = 2 batches of 8
    assert one_rank == _epoch(n=40, replicas=1, bs=8)[0][2:]
    assert "not an exact replay" in capsys.readouterr().err


def test_loader_with_workers_counts_what_left_it():
    data = list(range(64))
    loader = ResumableLoader(data, ResumableSampler(data, 1, 0, seed=1), 4, num_workers=2)
    it = iter(loader)
    first = [next(it).tolist() for _ in range(3)]  # the workers have prefetched more than that
    assert loader.state_dict()["batches"] == 3
    plain = DataLoader(data, batch_size=4, sampler=ResumableSampler(data, 1, 0, seed=1))
    assert first == [b.tolist() for b in plain][:3]


def test_batch_seed_is_a_function_of_the_batch_position():
    class T:
        current_epoch, global_rank = 1, 0

    cb = BatchSeed(seed=3)
    draws = []
    for rank, batch_idx in ((0, 5), (0, 5), (1, 5), (0, 6)):
        T.global_rank = rank
        torch.rand(7)  # whatever ran before does not matter
        cb.on_train_batch_start(T, None, None, batch_idx)
        draws.append((torch.rand(1).item(), float(np.random.rand())))
    assert draws[0] == draws[1] and len(set(draws)) == 3
    assert batch_seed(3, 1, 5, 0) != batch_seed(3, 5, 1, 0)


# --- whole runs --------------------------------------------------------------------------------------

# 96 training samples, batch 8: a 12-batch epoch; checkpoints at steps 6 (mid-epoch) and 12 (its end).
RUN = [
    "data.per_device_batch_size=8",
    "data.global_batch_size=8",
    "module.val_generate=false",
    "evaluate=false",
    "trainer.limit_val_batches=0",
    "trainer.max_steps=18",
    "callbacks.checkpoint.every_n_train_steps=6",
    "+encoder.towers.vit.model_kwargs.proj_drop_rate=0.2",  # the step draws random numbers too
]


@pytest.mark.slow
def test_resume_mid_epoch_and_at_the_epoch_boundary_replays_the_uninterrupted_run(tmp_path):
    def fit(name, *extra):
        run(compose_cfg(tmp_path / name, [*RUN, TRACE.format(tmp_path / name / "trace"), *extra]))
        return _trace(tmp_path / name / "trace")

    full = fit("full")
    assert [r["step"] for r in full] == list(range(1, 19))
    # every epoch is a permutation of the split, and epoch 1 is not epoch 0 again
    epochs = [sum((r["indices"] for r in full[e * 12 : (e + 1) * 12]), []) for e in (0, 1)]
    assert sorted(epochs[0]) == list(range(96)) and epochs[1][:24] != epochs[0][:24]
    ckpt = tmp_path / "full" / "run" / "checkpoints"
    mid = fit("mid", f"ckpt_path={ckpt / 'step000006.ckpt'}", "data.num_workers=2")
    assert (mid[0]["epoch"], mid[0]["batch_idx"]) == (0, 6)
    _assert_replays(mid, full[6:])
    boundary = fit("boundary", f"ckpt_path={ckpt / 'step000012.ckpt'}")
    assert (boundary[0]["epoch"], boundary[0]["batch_idx"]) == (1, 0)
    _assert_replays(boundary, full[12:])


def _cli(tmp_path: Path, name: str, *overrides: str) -> None:
    env = {**os.environ, "MMSSM_ROOT": str(tmp_path), "PYTEST_MMSSM_CACHE": str(SHARED_CACHE)}
    cmd = [sys.executable, "-m", "mmssm_lightning.train", *overrides, f"hydra.run.dir={tmp_path / name}"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
def test_resume_on_two_ddp_ranks_with_accumulation_replays_each_rank(tmp_path):
    # 48 samples per rank, batch 8: 6 micro-batches per epoch, accumulation 2 (32 = 8 x 2 ranks x 2),
    # so 3 optimizer steps per epoch; resuming at step 2 resumes at micro-batch 4 and crosses an epoch.
    common = [
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.precision=32-true",
        "logger=none",
        "evaluate=false",
        "module.val_generate=false",
        "trainer.limit_val_batches=0",
        "trainer.max_steps=6",
        "trainer.max_epochs=-1",
        "callbacks.checkpoint.every_n_train_steps=2",
        "data.per_device_batch_size=8",
        "data.global_batch_size=32",
        f"paths.cache_dir={SHARED_CACHE}",
        *SMALL_DATA,
    ]
    _cli(tmp_path, "full", *common, TRACE.format(tmp_path / "full" / "trace"))
    ckpt = tmp_path / "full" / "checkpoints" / "step000002.ckpt"
    _cli(tmp_path, "resumed", *common, TRACE.format(tmp_path / "resumed" / "trace"), f"ckpt_path={ckpt}")
    shards = []
    for rank in (0, 1):
        full, resumed = (
            _trace(tmp_path / "full" / "trace", rank),
            _trace(tmp_path / "resumed" / "trace", rank),
        )
        assert len(full) == 12  # 6 steps x 2 micro-batches
        _assert_replays(resumed, full[4:])
        shards.append({i for r in full[:6] for i in r["indices"]})
    assert not shards[0] & shards[1] and len(shards[0] | shards[1]) == 96  # the ranks split epoch 0


def test_resume_with_changed_settings_decides_per_key_and_records_it(tmp_path):
    """A new learning rate applies from the resumed step (the schedule re-derived over the run's
    length) and resume.json records it; another architecture is refused (tests/test_errors.py)."""
    import json

    common = ["trainer.val_check_interval=4", "module.val_generate=false", "evaluate=false"]
    run(compose_cfg(tmp_path, ["trainer.max_steps=4", "callbacks.checkpoint.every_n_train_steps=4", *common]))
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    resumed = tmp_path / "resumed"
    cfg = compose_cfg(
        resumed, ["trainer.max_steps=6", f"ckpt_path={last}", "optim.optimizer.lr=1e-2", *common]
    )
    run(cfg)
    record = json.loads((resumed / "run" / "resume.json").read_text())
    changes = {c["key"]: c for c in record["changes"]}
    assert changes["optim.optimizer.lr"] == {
        "key": "optim.optimizer.lr",
        "checkpoint": 1e-3,
        "now": 1e-2,
        "action": "rederive",
    }
    assert changes["trainer.max_steps"]["action"] == "rederive" and record["step"] == 4
    after = torch.load(resumed / "run" / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    sched = after["lr_schedulers"][0]
    assert sched["base_lrs"] == [1e-2] * len(sched["base_lrs"])  # the new peak, not the checkpoint's
    assert after["mmssm_config"]["optim"]["optimizer"]["lr"] == 1e-2
