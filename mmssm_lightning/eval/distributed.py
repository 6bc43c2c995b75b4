"""``mmssm-eval`` under ``torchrun``: join the process group torchrun describes, one device per rank,
and gather what every rank answered so that the results equal one process's."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def rank_world() -> tuple[int, int]:
    return (
        (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)
    )


def init_from_env(device: str) -> str:
    """Under torchrun (``WORLD_SIZE`` > 1) join the process group (NCCL for GPUs, gloo on CPU) if no
    one has; returns this rank's device (``cuda`` becomes ``cuda:<LOCAL_RANK>``)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.device(device).type == "cuda"
    if world > 1 and dist.is_available() and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    if cuda and world > 1 and torch.device(device).index is None:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return f"cuda:{local}"
    return device


def gather(obj) -> list:
    """Every rank's ``obj``, in rank order (one process: ``[obj]``)."""
    rank, world = rank_world()
    if world == 1:
        return [obj]
    out = [None] * world
    dist.all_gather_object(out, obj)
    return out
