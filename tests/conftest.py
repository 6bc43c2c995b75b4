from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Without a GPU, Triton kernels (the fused Mamba decode step) run in Triton's CPU interpreter; the
# switch is read when a kernel is defined, so it is set before any test imports one.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

import mmssm_lightning  # noqa: F401  (torchvision shim before timm/transformers)
from mmssm_lightning.constants import CONF_DIR

# Small splits keep each test's data generation well under a second.
SMALL_DATA = ["data.synthetic.splits={train:96,val:10,test:20}", "data.eval_batch_size=10"]


def compose_cfg(tmp: Path, overrides: list[str] = (), small_data: bool = True) -> DictConfig:
    """The train config as the CLI would compose it, with every path under ``tmp``; the demo
    experiment unless ``overrides`` choose one."""
    overrides = list(overrides)
    experiment = [] if any(o.startswith("experiment=") for o in overrides) else ["experiment=demo"]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(
            config_name="train",
            return_hydra_config=False,
            overrides=[
                *experiment,
                f"paths.root_dir={tmp}",
                f"paths.output_dir={tmp}/run",
                f"paths.cache_dir={SHARED_CACHE}",
                "logger=none",
                "callbacks.progress=null",
                *(SMALL_DATA if small_data else []),
                *overrides,
            ],
        )


SHARED_CACHE = Path(os.environ.get("PYTEST_MMSSM_CACHE", "/tmp/mmssm-test-cache"))


def needs_triton():
    """Skip unless Triton kernels can run here: triton installed, and on a GPU or in an interpreter
    that works (Triton's interpreter breaks on numpy >= 2.4: NOTES.md)."""
    pytest.importorskip("triton")
    if os.environ.get("TRITON_INTERPRET") == "1":
        import numpy

        if tuple(int(v) for v in numpy.__version__.split(".")[:2]) >= (2, 4):
            pytest.skip(f"Triton's interpreter fails on numpy {numpy.__version__} (needs < 2.4)")


@pytest.fixture
def cfg_factory(tmp_path):
    return lambda overrides=(): compose_cfg(tmp_path, list(overrides))
