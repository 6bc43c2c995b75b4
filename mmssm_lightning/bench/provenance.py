"""What every measurement file records beside its numbers: the command, the commit, the device and
the versions of what ran (experiments/benchmarks/results/*.json)."""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from mmssm_lightning.utils import git_state

PACKAGES = ("torch", "lightning", "transformers", "timm", "triton", "mamba-ssm", "causal-conv1d")


def package_version(pkg: str) -> str | None:
    try:
        return version(pkg)
    except PackageNotFoundError:
        return None


def device_name() -> str:
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name()}"


def provenance(command: str | None = None) -> dict:
    return {
        "command": command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "git": git_state(),
        "device": device_name(),
        "versions": {p: package_version(p) for p in PACKAGES},
    }
