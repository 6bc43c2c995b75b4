"""Run bookkeeping: the rich config tree, the resolved config and git state in each run dir."""

from __future__ import annotations

import json
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

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"sha": git("rev-parse", "HEAD"), "dirty": None if status is None else bool(status)}


@rank_zero_only
def save_run_info(cfg: DictConfig, output_dir: str | Path) -> None:
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config_resolved.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    (out / "git.json").write_text(json.dumps(git_state(), indent=2))


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
