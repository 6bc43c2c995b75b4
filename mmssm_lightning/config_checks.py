"""Type checks of the keys a run reads as numbers, before anything is built: ``trainer.max_steps=abc``
is a one-line error naming the key, not a stack trace from deep inside Lightning or torch.

The config groups stay untyped YAML (any component's constructor arguments can be overridden);
these are the keys whose type the run itself relies on.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

INT = "an integer"
NUMBER = "a number"
BOOL = "true or false"

CHECKS: dict[str, tuple[str, bool]] = {  # key -> (what it must be, may it be null)
    "seed": (INT, False),
    "trainer.max_steps": (INT, True),
    "trainer.max_epochs": (INT, True),
    "trainer.num_nodes": (INT, False),
    "trainer.log_every_n_steps": (INT, True),
    "trainer.gradient_clip_val": (NUMBER, True),
    "trainer.check_val_every_n_epoch": (INT, True),
    "trainer.val_check_interval": (NUMBER, True),
    "trainer.limit_val_batches": (NUMBER, True),
    "trainer.accumulate_grad_batches": (INT, True),
    "data.global_batch_size": (INT, False),
    "data.per_device_batch_size": (INT, False),
    "data.eval_batch_size": (INT, True),
    "data.num_workers": (INT, True),
    "data.max_length": (INT, True),
    "optim.optimizer.lr": (NUMBER, False),
    "optim.weight_decay": (NUMBER, False),
    "optim.warmup_ratio": (NUMBER, False),
    "optim.min_lr_ratio": (NUMBER, False),
    "module.max_new_tokens": (INT, False),
    "train": (BOOL, False),
    "evaluate": (BOOL, False),
    "eval.batch_size": (INT, False),
    "eval.max_samples": (INT, True),
}


def _is(value: object, kind: str) -> bool:
    if kind == BOOL:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind == INT:
        return isinstance(value, int)
    return isinstance(value, (int, float))


def check_config(cfg: DictConfig) -> None:
    """Raise ValueError naming the first key that has no value but needs one (``???``), or whose
    value has the wrong type."""
    # stage_recipe holds every stage's settings; only the running stage's are read (and resolved)
    missing = [k for k in OmegaConf.missing_keys(cfg) if not k.startswith(("stage_recipe", "hydra"))]
    if missing:
        raise ValueError(f"{missing[0]} must be set: it has no default (e.g. {missing[0]}=<value>)")
    for key, (kind, nullable) in CHECKS.items():
        if OmegaConf.select(cfg, key, default="<absent>", throw_on_missing=False) == "<absent>":
            continue
        value = OmegaConf.select(cfg, key, throw_on_missing=True)
        if value is None and nullable:
            continue
        if not _is(value, kind):
            raise ValueError(f"{key}={value!r} must be {kind}{' or null' if nullable else ''}")
    devices = OmegaConf.select(cfg, "trainer.devices", default=1)
    ok = devices == "auto" or isinstance(devices, (int, list)) and not isinstance(devices, bool)
    if isinstance(devices, str) and devices != "auto":
        ok = all(p.strip().lstrip("-").isdigit() for p in devices.split(",") if p.strip())
    if not ok:
        raise ValueError(f"trainer.devices={devices!r} must be a number, a list of device ids or auto")
