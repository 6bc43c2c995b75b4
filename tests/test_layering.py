"""Imports point one way (DESIGN "Next shape"): constants at the floor, models and data on it
(neither importing the other), evaluation and training above them, entry points on top."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mmssm_lightning"
FLOOR = {"constants", "checkpoints", "_torchvision_compat", "sweep", "runs", "resolvers", "config_checks"}
# layer -> the layers (besides itself and the floor) it may import
ALLOWED = {
    "models": set(),
    "data": set(),
    "inference": {"models"},
    "build": {"models", "data"},
    "utils": set(),
    "eval": {"models", "data", "inference", "build"},
    "lit": {"models", "data", "inference", "eval", "utils", "build"},
    "convert": {"models", "data", "build", "utils"},
    "bench": {"models", "data", "inference", "build", "utils", "lit"},
    "train": {"models", "data", "inference", "build", "eval", "lit", "utils", "fsdp"},
    "report": {"eval", "utils"},
}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mmssm_lightning"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("mmssm_lightning")}
    return found


def test_imports_point_down():
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        own = rel.parts[0].removesuffix(".py")
        if own in FLOOR or own == "__init__":
            allowed = set()
        elif own in ALLOWED:
            allowed = ALLOWED[own]
        else:
            continue
        for module in _imports(path):
            layer = _layer(module)
            if layer and layer != own and layer not in FLOOR and layer not in allowed:
                bad.append(f"{rel} imports {module}")
    assert not bad, "imports that point up or sideways:\n" + "\n".join(bad)


def test_floor_imports_nothing_of_ours():
    for name in FLOOR:
        for module in _imports(PACKAGE / f"{name}.py"):
            assert _layer(module) in FLOOR, f"{name}.py imports {module}"
