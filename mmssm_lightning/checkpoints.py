"""Reading and writing our checkpoints (a floor module: it imports nothing of ours).

A checkpoint is a Lightning checkpoint file, or the folder an FSDP run with sharded state dicts
writes (read here by consolidating it in memory, as Lightning's ``consolidate_checkpoint`` does),
or the weights-only ``model.ckpt`` every training run ends with. Every reader gives a one-line
error naming the config key and the file: a truncated file, a text file, a foreign checkpoint.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch


def read_checkpoint(path: str | Path, what: str) -> dict[str, Any]:
    """The checkpoint at ``path`` as a dict (``weights_only`` load); ``what`` is the config key
    that named it (``ckpt_path``, ``init_from``...), for the errors."""
    p = Path(path)
    if p.is_dir():
        return _read_sharded(p, what)
    if not p.is_file():
        raise FileNotFoundError(f"{what}: {p} does not exist")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(
            f"{what}: {p} is not a readable torch checkpoint (truncated or not one): {reason}"
        ) from None
    if not isinstance(ckpt, dict):
        raise ValueError(f"{what}: {p} holds a {type(ckpt).__name__}, not a checkpoint dict")
    return ckpt


def _read_sharded(folder: Path, what: str) -> dict[str, Any]:
    if not (folder / ".metadata").is_file():
        raise ValueError(f"{what}: {folder} is a folder but not an FSDP sharded checkpoint (no .metadata)")
    from lightning.fabric.utilities.load import _load_distributed_checkpoint

    try:
        ckpt = _load_distributed_checkpoint(folder)
    except Exception as e:  # torch.distributed.checkpoint raises many kinds; all mean "unreadable"
        raise ValueError(
            f"{what}: {folder}: cannot consolidate the sharded checkpoint: {str(e).splitlines()[0]}"
        ) from None
    # Lightning's sharded layout keeps the module's weights under "model"; a file under "state_dict".
    if "state_dict" not in ckpt and "model" in ckpt:
        ckpt["state_dict"] = ckpt.pop("model")
    return ckpt


def checkpoint_state(
    path: str | Path, what: str, prefix: str = "", ckpt: dict[str, Any] | None = None
) -> dict[str, torch.Tensor]:
    """The weights of a checkpoint whose keys start with ``prefix``, the prefix stripped (``ckpt``:
    the checkpoint already read from ``path``)."""
    state = (ckpt if ckpt is not None else read_checkpoint(path, what)).get("state_dict")
    if not isinstance(state, dict):
        raise ValueError(f"{what}: {path} holds no state_dict (not a Lightning checkpoint)")
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def save_weights(path: str | Path, state_dict: dict[str, torch.Tensor], **meta: Any) -> Path:
    """Write a weights-only checkpoint (``state_dict`` + plain metadata such as ``mmssm_config``,
    ``global_step``) atomically: a reader never sees half a file."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    torch.save({"state_dict": {k: v.detach().cpu() for k, v in state_dict.items()}, **meta}, tmp)
    tmp.replace(p)
    return p


def shape_mismatches(ckpt_state: dict[str, torch.Tensor], model_state: dict[str, torch.Tensor]) -> str | None:
    """What keeps a checkpoint's weights from fitting a model, in one line (None when they fit)."""
    missing = [k for k in model_state if k not in ckpt_state]
    unexpected = [k for k in ckpt_state if k not in model_state]
    shapes = [
        f"{k} {tuple(ckpt_state[k].shape)} vs {tuple(v.shape)}"
        for k, v in model_state.items()
        if k in ckpt_state and tuple(ckpt_state[k].shape) != tuple(v.shape)
    ]
    if not (missing or unexpected or shapes):
        return None
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if shapes:
        parts.append(f"{len(shapes)} of another shape (e.g. {shapes[0]})")
    return ", ".join(parts)
