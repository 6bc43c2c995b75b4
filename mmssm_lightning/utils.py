"""Run bookkeeping: the rich config tree, the resolved config and git state in each run dir."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

PRINT_ORDER = (
    "experiment_name",
    "encoder",
    "projector",
    "scan",
    "llm",
    "prompt",
    "data",
    "stage",
    "optim",
    "module",
    "trainer",
)


def git_state(repo: Path | None = None) -> dict:
    """Commit SHA and whether the tree had uncommitted changes (None outside a checkout)."""
    cwd = repo or Path(__file__).resolve().parents[1]

    def git(*args: str) -> str | None:
        try:
            return subprocess.run(
                ["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    if os.environ.get("MMSSM_COMMIT"):  # a copy of the tree whose .git is stale (the GPU device's)
        return {"sha": os.environ["MMSSM_COMMIT"], "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"sha": git("rev-parse", "HEAD"), "dirty": None if status is None else bool(status)}


@rank_zero_only
def save_run_info(cfg: DictConfig, output_dir: str | Path) -> None:
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config_resolved.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    (out / "git.json").write_text(json.dumps(git_state(), indent=2))


SUMMARY_KEYS = (
    "experiment_name",
    "stage.name",
    "encoder.towers",
    "projector._target_",
    "scan.name",
    "llm.name_or_path",
    "prompt.name",
    "data.root",
    "data.train",
    "data.global_batch_size",
    "optim.optimizer._target_",
    "optim.optimizer.lr",
    "trainer.strategy",
    "trainer.devices",
    "trainer.precision",
    "trainer.max_steps",
    "trainer.max_epochs",
    "init_from",
    "eval.protocol.name",
    "eval.run",
)


@rank_zero_only
def print_config(cfg: DictConfig, output_dir: str | Path) -> None:
    """A summary of the run's config (``print_config=full``: the whole tree); the resolved config
    is always written whole to ``<run>/config_resolved.yaml``."""
    if cfg.get("print_config", "summary") == "full":
        print_config_tree(cfg)
        return
    from rich import print as rprint
    from rich.table import Table

    table = Table(title=f"config (all of it: {Path(output_dir) / 'config_resolved.yaml'})", show_header=False)
    for key in SUMMARY_KEYS:
        value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        if value is None:
            continue
        if key == "encoder.towers":
            value = ", ".join(str(t.get("model_name")) for t in value.values())
        elif key == "trainer.strategy" and not isinstance(value, str):
            value = str(value.get("_target_", value)).rsplit(".", 1)[-1]
        table.add_row(key, str(OmegaConf.to_container(value) if isinstance(value, DictConfig) else value))
    rprint(table)


def quiet_library_warnings() -> None:
    """Warnings that say nothing to a user of this suite, once per run instead of once per call."""
    import logging
    import warnings

    for pattern in (
        r".*isinstance\(treespec, LeafSpec\).*",
        r".*It is recommended to use `self\.log\(.*sync_dist=True.*",
        r".*does not have many workers which may be a bottleneck.*",
        r".*The number of training batches .* is smaller than the logging interval.*",
        r".*Consider setting `persistent_workers=True`.*",
        r".*torch\.meshgrid: in an upcoming release.*",
    ):
        warnings.filterwarnings("ignore", message=pattern)
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
        lambda record: "litlogger" not in record.getMessage() and "💡 Tip" not in record.getMessage()
    )
    logging.getLogger("transformers").setLevel(logging.ERROR)


@rank_zero_only
def print_config_tree(cfg: DictConfig, order: Sequence[str] = PRINT_ORDER) -> None:
    from rich import print as rprint
    from rich.syntax import Syntax
    from rich.tree import Tree

    tree = Tree("config", guide_style="dim")
    keys = [k for k in order if k in cfg] + [k for k in cfg if k not in order]
    for key in keys:
        node = cfg[key]
        branch = tree.add(f"[bold]{key}[/bold]")
        text = OmegaConf.to_yaml(node, resolve=True) if isinstance(node, DictConfig) else str(node)
        branch.add(Syntax(text, "yaml", theme="ansi_dark", background_color="default"))
    rprint(tree)
