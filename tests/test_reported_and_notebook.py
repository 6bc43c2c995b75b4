"""The papers' numbers are keyed by our experiment and benchmark names, and the overview notebook
joins them with training and evaluation results (its code cells run here on a small logs tree)."""

import json
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from mmssm_lightning.constants import CONF_DIR
from tests.conftest import compose_cfg

ROOT = Path(__file__).resolve().parents[1]
NOT_HERE = {
    "v7w_telling",
    "v7w_pointing",
    "mm_vet",
    "average",
    "sec_per_iter",
    "visual_tokens",
    "speed",
    "total",
    "cider",
    "bleu4",
    "meteor",
    "rouge",
    "spice",
}


def _rows():
    for path in sorted((ROOT / "experiments").glob("*/reported.yaml")):
        for table in yaml.safe_load(path.read_text())["tables"].values():
            for name, row in table.items():
                if isinstance(row, dict):
                    yield path.parent.name, name, row


def test_reported_rows_use_our_names(tmp_path):
    benchmarks = set(OmegaConf.load(Path(CONF_DIR) / "benchmarks/default.yaml"))
    for paper, name, row in _rows():
        unknown = {k for k in row if k not in benchmarks and k not in NOT_HERE}
        assert not unknown, (paper, name, unknown)
    names = {name for _, name, _ in _rows()}
    for experiment in (
        "cobra/main",
        "mambavlm/mamba_2.8b",
        "vl_mamba/main",
        "q_mamba/main",
        "pythia_vs_mamba/mamba_1.4b",
        "mambavlm/ablation_cross_cat",
        "vl_mamba/csm",
        "pythia_vs_mamba/pythia_1.4b_task_aware",
    ):
        cfg = compose_cfg(tmp_path, [f"experiment={experiment}"], small_data=False)
        assert cfg.experiment_name in names, experiment


def test_overview_notebook_joins_runs_with_the_papers(tmp_path, monkeypatch):
    logs = tmp_path / "logs"
    (logs / "train/runs/demo/t").mkdir(parents=True)
    (logs / "train/runs/demo/t/results.json").write_text(
        json.dumps(
            {
                "experiment": "demo",
                "stage": "full",
                "global_step": 5,
                "test_accuracy": {"color": 0.5, "mean": 0.5},
                "majority_baseline": {"mean": 0.25},
            }
        )
    )
    (logs / "eval/runs/e").mkdir(parents=True)
    (logs / "eval/runs/e/results.json").write_text(
        json.dumps(
            {
                "experiment": "cobra",
                "protocol": "cobra",
                "benchmarks": {"vqav2": {"n": 3, "metrics": {"accuracy": 0.7}}},
            }
        )
    )
    monkeypatch.setenv("MMSSM_LOGS", str(logs))
    monkeypatch.setenv("MMSSM_EXPERIMENTS", str(ROOT / "experiments"))
    scope: dict = {}
    for cell in json.loads((ROOT / "notebooks/runs_overview.ipynb").read_text())["cells"]:
        if cell["cell_type"] == "code":
            exec("".join(cell["source"]), scope)  # noqa: S102 - the notebook's own cells
    assert len(scope["train_rows"]) == 1 and scope["train_rows"][0]["acc/color"] == 50.0
    (row,) = scope["eval_rows"]
    assert row["ours"] == 70.0 and row["paper"] == 75.9  # Cobra's VQAv2, Table 2
