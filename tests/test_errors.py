"""Bad input is a one-line error naming the key or file at fault: config values of the wrong type,
a missing mandatory key, checkpoints that are truncated, text, foreign or of another architecture,
a GPU trainer without a GPU. Data-file errors: tests/test_data_errors.py."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from mmssm_lightning.checkpoints import read_checkpoint
from mmssm_lightning.config_checks import check_config
from mmssm_lightning.train import USER_ERRORS, _one_line, run
from tests.conftest import SHARED_CACHE, compose_cfg


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.max_steps=abc", "trainer.max_steps='abc' must be an integer or null"),
        ("optim.optimizer.lr=abc", "optim.optimizer.lr='abc' must be a number"),
        ("seed=abc", "seed='abc' must be an integer"),
        ("data.global_batch_size=1.5", "data.global_batch_size=1.5 must be an integer"),
        ("trainer.devices=two", "trainer.devices='two' must be a number"),
        ("evaluate=maybe", "evaluate='maybe' must be true or false"),
    ],
)
def test_values_of_the_wrong_type_name_their_key(tmp_path, override, message):
    with pytest.raises(ValueError) as e:
        check_config(compose_cfg(tmp_path, [override]))
    assert str(e.value).startswith(message)


def test_a_missing_mandatory_key_is_named_in_one_line(tmp_path):
    cfg = compose_cfg(
        tmp_path, ["data=llava"], small_data=False
    )  # data.root: ??? (where the LLaVA json lives)
    with pytest.raises(USER_ERRORS) as e:
        run(cfg)
    line = _one_line(e.value)
    assert "data.root" in line and "\n" not in line


@pytest.fixture
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trained")
    cfg = compose_cfg(tmp, ["trainer.max_steps=2", "evaluate=false", "module.val_generate=false"])
    run(cfg)
    return tmp / "run" / "checkpoints"


def test_unreadable_checkpoints_name_the_key_and_file(tmp_path, trained):
    good = (trained / "last.ckpt").read_bytes()
    (tmp_path / "truncated.ckpt").write_bytes(good[: len(good) // 2])
    (tmp_path / "text.ckpt").write_text("not a checkpoint\n")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.ckpt")
    for name, what in (
        ("truncated", "not a readable torch checkpoint"),
        ("text", "not a readable torch checkpoint"),
    ):
        with pytest.raises(ValueError, match=f"ckpt_path: .*{name}.ckpt is {what}"):
            read_checkpoint(tmp_path / f"{name}.ckpt", "ckpt_path")
    for key in ("ckpt_path", "init_from"):
        extra = ["train=false"] if key == "ckpt_path" else []
        cfg = compose_cfg(tmp_path, [f"{key}={tmp_path}/foreign.ckpt", *extra, "evaluate=false"])
        with pytest.raises(ValueError, match=f"{key}: .*foreign.ckpt"):
            run(cfg)


def test_a_checkpoint_of_another_architecture_is_named(tmp_path, trained):
    last = trained / "last.ckpt"
    other = compose_cfg(tmp_path, ["llm=tiny_pythia", "prompt=plain", f"ckpt_path={last}", "evaluate=false"])
    with pytest.raises(
        ValueError, match=r"ckpt_path: .*last.ckpt does not fit this model .*another architecture"
    ):
        run(other)
    other = compose_cfg(tmp_path, ["llm=tiny_pythia", "prompt=plain", f"init_from={last}", "evaluate=false"])
    with pytest.raises(ValueError, match=r"init_from: .*last.ckpt does not fit this model"):
        run(other)


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_cli_errors_are_one_line_without_a_traceback(tmp_path):
    env = {**os.environ, "MMSSM_ROOT": str(tmp_path)}
    base = [
        sys.executable,
        "-m",
        "mmssm_lightning.train",
        "experiment=demo",
        "logger=none",
        f"paths.cache_dir={SHARED_CACHE}",
    ]
    for override, needle in (
        ("trainer.max_steps=abc", "trainer.max_steps='abc' must be an integer"),
        ("trainer=gpu", "trainer=gpu / ddp / fsdp need a GPU"),
    ):
        proc = subprocess.run([*base, override], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 1, proc.stderr[-2000:]
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and needle in errors[0], proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr
