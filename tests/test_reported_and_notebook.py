"""The papers' numbers are keyed by our experiment and benchmark names, and the overview notebook
joins them with training and evaluation results (its code cells run here on a small logs tree)."""

import json
import re
import shlex
from pathlib import Path

import yaml
from hydra import compose, initialize_config_dir
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
    (logs / "train/runs/demo/t/csv/version_0").mkdir(parents=True)
    (logs / "train/runs/demo/t/csv/version_0/metrics.csv").write_text(
        "epoch,step,train/loss,val/loss\n0,9,3.5,\n0,19,2.25,\n0,19,,2.5\n1,29,1.125,\n"
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
    # MMEScore stores points (acc and acc+ in %, a subtask = their sum out of 200, sums over subtasks)
    mme = {"perception": 1300.5, "cognition": 250.0, "existence": 190.0, "existence/acc": 95.0}
    (logs / "eval/runs/m").mkdir(parents=True)
    (logs / "eval/runs/m/results.json").write_text(
        json.dumps(
            {
                "experiment": "vl_mamba",
                "protocol": "llava",
                "benchmarks": {
                    "mme": {
                        "n": 8,
                        "metrics": mme,
                        "protocol": {"protocol": "llava", "metric": {"_target_": "x.metrics.MMEScore"}},
                    }
                },
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
    assert scope["train_rows"][0]["train/loss (last)"] == 1.125
    row, *mme_rows = scope["eval_rows"]
    assert row["ours"] == 70.0 and row["scale"] == "x100" and row["paper"] == 75.9  # Cobra's VQAv2, Table 2
    assert {r["metric"]: (r["ours"], r["scale"]) for r in mme_rows} == {
        "perception": (1300.5, "/2000"),
        "cognition": (250.0, "/800"),
        "existence": (190.0, "/200"),
        "existence/acc": (95.0, "/100"),
    }
    assert [r["paper"] for r in mme_rows] == [1369.6, None, None, None]  # VL-Mamba's MME (perception)
    # the loss curves, as plotted
    run = "train/runs/demo/t"
    assert scope["curves"] == {
        (run, "train/loss"): [(9, 3.5), (19, 2.25), (29, 1.125)],
        (run, "val/loss"): [(19, 2.5)],
    }
    (train_ax, val_ax) = scope["fig"].axes
    assert train_ax.get_title() == "train/loss" and val_ax.get_title() == "val/loss"
    (line,) = train_ax.get_lines()
    assert list(line.get_xdata()) == [9, 19, 29] and list(line.get_ydata()) == [3.5, 2.25, 1.125]


def test_q_mamba_model_overrides_example_parses_and_applies(tmp_path):
    text = (ROOT / "experiments/q_mamba/README.md").read_text()
    examples = set(re.findall(r"`(\"model_overrides=[^`]*)`", text))
    assert len(examples) == 1
    (override,) = shlex.split(examples.pop())  # what the shell hands to mmssm-eval
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        eval_cfg = compose(config_name="eval", overrides=["ckpt_path=x.ckpt", override])
    assert list(eval_cfg.model_overrides) == ["projector.scan.name=forward"]
    # applied as load_checkpoint does, to the run config a Q-Mamba checkpoint stores
    run_cfg = compose_cfg(tmp_path, ["experiment=q_mamba/main"], small_data=False)
    stored = OmegaConf.create(OmegaConf.to_container(run_cfg.projector, resolve=True))
    assert stored.scan.name == "bidirectional"
    merged = OmegaConf.merge({"projector": stored}, OmegaConf.from_dotlist(list(eval_cfg.model_overrides)))
    assert merged.projector.scan.name == "forward"
