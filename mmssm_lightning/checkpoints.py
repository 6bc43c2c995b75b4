"""Reading our checkpoints: the weights of a Lightning checkpoint file, for ``init_from``, the
Q-Mamba connector and ``mmssm-eval`` (a floor module: it imports nothing of ours)."""

from __future__ import annotations

from pathlib import Path

import torch


def checkpoint_state(path: str | Path, what: str, prefix: str = "") -> dict[str, torch.Tensor]:
    """The weights of a Lightning checkpoint file (``weights_only`` load) whose keys start with
    ``prefix``, the prefix stripped; errors name ``what`` (the config key that pointed here)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what}: {p} does not exist")
    state = torch.load(p, map_location="cpu", weights_only=True).get("state_dict")
    if state is None:
        raise ValueError(f"{what}: {p} holds no state_dict (not a Lightning checkpoint)")
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
