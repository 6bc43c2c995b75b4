"""Resuming with settings that differ from the checkpoint's: decided per key, said on the console,
recorded in ``<run>/resume.json`` (and ``config_resolved.yaml`` holds what is actually used).

* the architecture and what learns (``encoder``, ``projector``, ``scan``, ``llm``, ``framing``,
  ``stage``): an error — the weights and the optimizer state would not fit;
* the optimizer's hyper-parameters (``optim.*``) and the length of the run (``trainer.max_steps``,
  ``trainer.max_epochs``, ``data.global_batch_size``): the new values apply and the warm-up +
  cosine schedule is re-derived over the new total from the resumed step (the optimizer state is
  kept); the console shows the learning rate at the resumed step before and after;
* what the data order depends on (``seed``, ``data.train``, ``data.per_device_batch_size``): a
  warning — the resumed steps no longer replay the uninterrupted run's batches;
* anything else (logging, checkpoint frequency, evaluation): applies silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ERROR = ("encoder", "projector", "scan", "llm", "framing", "stage")
REDERIVE = ("optim", "trainer.max_steps", "trainer.max_epochs", "data.global_batch_size")
WARN = ("seed", "data.train", "data.per_device_batch_size", "data.root")
# keys that differ between any two runs and say nothing about the training
IGNORED = ("paths", "ckpt_path", "init_from", "hydra", "job_name", "run_name", "print_config", "eval_root")


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out |= _flatten(v, f"{prefix}{k}.")
        return out
    return {prefix[:-1]: node}


def _under(key: str, roots: tuple[str, ...]) -> bool:
    return any(key == r or key.startswith(r + ".") for r in roots)


def config_changes(old: Mapping, new: Mapping) -> list[dict[str, Any]]:
    """Every key whose value differs, with the action its kind calls for
    (``error`` | ``rederive`` | ``warn`` | ``apply``)."""
    a, b = _flatten(old), _flatten(new)
    changes = []
    for key in sorted(a.keys() | b.keys()):
        if _under(key, IGNORED) or a.get(key) == b.get(key):
            continue
        if _under(key, ERROR):
            action = "error"
        elif _under(key, REDERIVE):
            action = "rederive"
        elif _under(key, WARN):
            action = "warn"
        else:
            action = "apply"
        changes.append(
            {
                "key": key,
                "checkpoint": a.get(key, "<absent>"),
                "now": b.get(key, "<absent>"),
                "action": action,
            }
        )
    return changes


def refuse_incompatible(changes: list[dict[str, Any]], ckpt_path: str) -> None:
    bad = [c for c in changes if c["action"] == "error"]
    if bad:
        shown = ", ".join(f"{c['key']}: {c['checkpoint']!r} -> {c['now']!r}" for c in bad[:3])
        raise ValueError(
            f"ckpt_path: {ckpt_path} was trained with another architecture or stage ({shown}"
            f"{', ...' if len(bad) > 3 else ''}); resume with the same settings, or start from its "
            "weights with init_from"
        )
