"""A paper table as one command: table configs expand into their jobs, sweep jobs own their ranks
(one sweep folder, rank 0 writes), failures are recorded and counted, finished sweeps skip their jobs,
each job trains then scores, and mmssm-report sets ours beside reported.yaml."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from itertools import product
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from mmssm_lightning.constants import CONF_DIR
from mmssm_lightning.report import build_rows, collect, markdown, report, run_folders, table_spec
from mmssm_lightning.runs import resolve_init_from
from mmssm_lightning.sweep import RunStatus, job_names
from tests.conftest import SHARED_CACHE

TABLES = sorted(
    p.relative_to(Path(CONF_DIR) / "table").with_suffix("").as_posix()
    for p in (Path(CONF_DIR) / "table").rglob("*.yaml")
)
EXPERIMENTS = Path(CONF_DIR).parent / "experiments"


def test_job_names_come_from_the_overrides_that_differ():
    jobs = [
        ["table=cobra/fig3", "experiment=cobra/main"],
        ["table=cobra/fig3", "experiment=cobra/siglip_mlp"],
    ]
    assert job_names(jobs) == ["cobra-main", "cobra-siglip_mlp"]
    two_stage = [
        ["experiment=q_mamba/main", f"projector.num_queries={q}", f"stage={s}"]
        for q in (128, 256)
        for s in ("align", "finetune")
    ]
    # a job's stages share its name: <job>/align and <job>/finetune sit side by side
    assert job_names(two_stage) == ["num_queries-128"] * 2 + ["num_queries-256"] * 2
    assert job_names([["seed=1", "optim.optimizer.lr=1e-3"], ["seed=1", "optim.optimizer.lr=2e-3"]]) == [
        "lr-1e-3",
        "lr-2e-3",
    ]
    assert job_names([["seed=1"], ["seed=1"]]) == ["job", "job_2"]


def _expand(params: dict) -> list[list[str]]:
    """The jobs Hydra's basic sweeper makes of ``hydra.sweeper.params`` (last key varies fastest)."""
    parser = OverridesParser.create()
    lists = []
    for key, value in params.items():
        override = parser.parse_override(f"{key}={value}")
        lists.append(
            [f"{key}={v}" for v in override.sweep_string_iterator()]
            if override.is_sweep_override()
            else [f"{key}={value}"]
        )
    return [list(job) for job in product(*lists)]


@pytest.mark.slow
@pytest.mark.parametrize("table", TABLES)
def test_every_table_composes_into_its_jobs(tmp_path, table):
    _check_table(tmp_path, table)


def test_a_two_stage_table_composes_into_its_jobs_in_order(tmp_path):
    _check_table(tmp_path, "vl_mamba/table5")


def _check_table(tmp_path, table):
    base = [f"table={table}", f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path}/out"]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        sweep = compose("train", overrides=base, return_hydra_config=True)
        jobs = _expand(dict(sweep.hydra.sweeper.params))
        assert jobs, table
        assert sweep.hydra.sweep.dir.startswith(f"{tmp_path}/logs/train/multiruns/tables/")  # re-runnable
        spec = sweep.table
        reported = yaml.safe_load((EXPERIMENTS / spec.paper / "reported.yaml").read_text())
        assert spec.reported in reported["tables"], f"{table}: no table {spec.reported} in reported.yaml"
        stages_seen: dict[str, list[str]] = {}
        for overrides, name in zip(jobs, job_names(jobs)):
            cfg = compose("train", overrides=[*base, *overrides])
            c = OmegaConf.to_container(cfg, resolve=True)
            assert c["group"] == table
            for bench in c["eval"]["run"]:
                assert bench in c["eval"]["protocol"]["benchmarks"], (table, bench)
                assert bench in c["eval"]["benchmarks"], (table, bench)
            stages_seen.setdefault(name, []).append(c["stage"]["name"])
            if c["stage"]["name"] == "finetune" and "stage_recipe" in c:
                assert c["init_from"] == "auto"  # the align job beside it
        for name, stages in stages_seen.items():
            if len(stages) > 1:
                assert stages == ["align", "finetune"], (table, name)  # in order


def _finished_run(folder: Path, step: int, updated: float) -> Path:
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "model.ckpt").write_bytes(b"x")
    RunStatus().write(folder, state="finished", global_step=step)
    data = json.loads((folder / "status.json").read_text())
    data["updated"] = updated
    (folder / "status.json").write_text(json.dumps(data))
    return folder


def test_init_from_auto_takes_the_align_job_beside_it_else_the_latest_finished_align_run(tmp_path):
    recipe = {"align": {}, "finetune": {}}
    job = tmp_path / "sweep" / "num_queries-128"
    _finished_run(job / "align", 10, 1.0)
    ckpt, why = resolve_init_from("auto", job / "finetune", "finetune", recipe, tmp_path / "runs")
    assert ckpt == str(job / "align" / "checkpoints" / "model.ckpt") and "this sweep" in why
    runs = tmp_path / "runs"
    _finished_run(runs / "align" / "2026-01-01", 5, 2.0)
    _finished_run(runs / "align" / "2026-01-02", 7, 3.0)
    (runs / "align" / "2026-01-03").mkdir()  # started, never finished
    ckpt, why = resolve_init_from("auto", tmp_path / "x" / "finetune", "finetune", recipe, runs)
    assert ckpt == str(runs / "align" / "2026-01-02" / "checkpoints" / "model.ckpt") and "step 7" in why
    with pytest.raises(ValueError, match="no finished 'align' run"):
        resolve_init_from("auto", tmp_path / "y" / "finetune", "finetune", recipe, tmp_path / "nothing")


def _fake_job(root: Path, name: str, stage: str, experiment: str, scores: dict) -> None:
    folder = root / name / stage
    folder.mkdir(parents=True)
    payload = {
        "experiment": experiment,
        "stage": stage,
        "job_name": name,
        "benchmarks": {b: {"n": 10, "metrics": m} for b, m in scores.items()},
    }
    (folder / "results.json").write_text(json.dumps(payload))
    RunStatus().write(folder, state="finished")


def test_report_groups_seeds_and_sets_ours_beside_the_paper(tmp_path):
    _fake_job(tmp_path, "num_queries-128", "align", "q_mamba-128q-local", {})
    _fake_job(
        tmp_path,
        "num_queries-128",
        "finetune",
        "q_mamba-128q-local",
        {"gqa": {"accuracy": 0.5}, "pope": {"accuracy": 0.9}},
    )
    _fake_job(
        tmp_path,
        "num_queries-256",
        "finetune",
        "q_mamba-256q-local",
        {"gqa": {"accuracy": 0.6}, "pope": {"accuracy": 0.8}},
    )
    _fake_job(
        tmp_path,
        "num_queries-256_2",
        "finetune",
        "q_mamba-256q-local",
        {"gqa": {"accuracy": 0.7}, "pope": {"accuracy": 0.8}},
    )
    spec = table_spec([tmp_path], "q_mamba/table1")
    rows, columns = build_rows(collect(run_folders([tmp_path])), spec)
    assert columns == ["vqav2", "gqa", "vizwiz", "textvqa", "pope", "mmbench"]  # vqav2_testdev -> vqav2
    by = {r.name: r for r in rows}
    # reported.yaml: q_mamba-128q-local gqa 57.59, pope 87.9; 256q: gqa 58.10
    assert by["q_mamba-128q-local"].cells["gqa"].mean == pytest.approx(50.0)
    assert by["q_mamba-128q-local"].cells["gqa"].diff == pytest.approx(50.0 - 57.59)
    assert by["q_mamba-128q-local"].cells["pope"].paper == pytest.approx(87.9)
    seeds = by["q_mamba-256q-local"].cells["gqa"]
    assert seeds.ours == pytest.approx([60.0, 70.0]) and seeds.std == pytest.approx(7.0710678)
    assert by["q_mamba-512q-local"].cells["gqa"].mean is None  # a row of the paper we did not run
    md = markdown(rows, columns, "t")
    assert "| q_mamba-128q-local | 1 | — / 74.51 / — | 50.00 / 57.59 / -7.59 |" in md
    out = report([tmp_path], "q_mamba/table1", tmp_path / "rep")
    assert {Path(f).name for f in out["files"]} == {"report.md", "report.csv", "report.png"}


def _env(tmp_path: Path) -> dict:
    return {**os.environ, "MMSSM_ROOT": str(tmp_path), "PYTEST_MMSSM_CACHE": str(SHARED_CACHE)}


TINY = [
    "logger=none",
    "trainer.max_steps=4",
    "trainer.val_check_interval=4",
    "module.val_generate=false",
    "callbacks.checkpoint.every_n_train_steps=4",
    "data.synthetic.splits={train:64,val:8,test:8}",
    "data.eval_batch_size=8",
    "data.per_device_batch_size=16",
    "eval.prepare.n=6",
    "eval.batch_size=6",
    f"paths.cache_dir={SHARED_CACHE}",
]


@pytest.mark.slow
def test_table_sweep_of_two_ddp_jobs_trains_scores_reports_and_resumes(tmp_path):
    ddp = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true"]
    cmd = [sys.executable, "-m", "mmssm_lightning.train", "-m", "table=demo/shapes", *ddp, *TINY]
    proc = subprocess.run(cmd, env=_env(tmp_path), capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    multiruns = tmp_path / "logs" / "train" / "multiruns"
    sweeps = [p.parent for p in multiruns.rglob("multirun.yaml")]
    assert sweeps == [multiruns / "tables" / "demo" / "shapes"]  # one sweep folder, no second one
    sweep = sweeps[0]
    for name in ("seed-1", "seed-2"):
        job = sweep / name / "full"
        results = json.loads((job / "results.json").read_text())
        assert set(results["benchmarks"]) == {"vqav2", "pope", "mmbench"}
        assert results["global_step"] == 4 and (job / "checkpoints" / "model.ckpt").is_file()
        assert (job / ".hydra").is_dir()
        assert (job / "train_ddp_process_1.log").is_file()  # rank 1 ran this job, and only this job
    ledger = json.loads((sweep / "sweep.json").read_text())
    assert [j["state"] for j in ledger["jobs"]] == ["finished", "finished"] and ledger["failed"] == 0
    rows = {(r["row"], r["benchmark"]): r for r in csv_rows(sweep / "report" / "report.csv")}
    seeds = [json.loads((sweep / n / "full" / "results.json").read_text()) for n in ("seed-1", "seed-2")]
    pope = [100 * s["benchmarks"]["pope"]["metrics"]["accuracy"] for s in seeds]
    assert float(rows[("demo", "pope")]["ours"]) == pytest.approx(sum(pope) / 2)
    reported = yaml.safe_load((EXPERIMENTS / "demo" / "reported.yaml").read_text())["tables"]["shapes"][
        "demo"
    ]
    assert float(rows[("demo", "pope")]["paper"]) == pytest.approx(reported["pope"])
    # the same command again: every job finished before, nothing trains
    again = subprocess.run(cmd, env=_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0
    assert again.stdout.count("finished before") + again.stderr.count("finished before") == 2
    assert "Initializing distributed" not in again.stdout + again.stderr


def csv_rows(path: Path) -> list[dict]:
    import csv

    return list(csv.DictReader(open(path)))


@pytest.mark.slow
def test_a_failing_job_is_recorded_and_the_sweep_goes_on(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "mmssm_lightning.train",
        "-m",
        "experiment=demo",
        *[o for o in TINY if not o.startswith("eval.")],
        "evaluate=false",
        "data.global_batch_size=30,16",
        f"hydra.sweep.dir={tmp_path}/sweep",
    ]
    proc = subprocess.run(cmd, env=_env(tmp_path), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 1, proc.stderr[-2000:]  # one job failed
    ledger = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    states = {j["name"]: j for j in ledger["jobs"]}
    assert states["global_batch_size-30"]["state"] == "failed"
    assert "data.global_batch_size=30 is not a multiple" in states["global_batch_size-30"]["error"]
    assert (tmp_path / "sweep" / "global_batch_size-30" / "full" / "error.txt").is_file()
    assert states["global_batch_size-16"]["state"] == "finished"
    assert RunStatus.read(tmp_path / "sweep" / "global_batch_size-16" / "full").finished


@pytest.mark.slow
def test_slurm_launcher_dry_run_writes_one_task_per_gpu(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "mmssm_lightning.train",
        "-m",
        "table=vl_mamba/table5",
        "hydra/launcher=slurm",
        "hydra.launcher.dry_run=true",
        "trainer.devices=4",
        "trainer.num_nodes=2",
        "hydra.launcher.partition=gpu",
    ]
    proc = subprocess.run(cmd, env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    sweep = tmp_path / "logs/train/multiruns/tables/vl_mamba/table5"
    waves = sorted(sweep.glob("sbatch_wave*.sh"))
    assert [w.name for w in waves] == ["sbatch_wave0.sh", "sbatch_wave1.sh"]  # align jobs, then finetune jobs
    text = waves[0].read_text()
    for line in ("--ntasks-per-node=4", "--gpus-per-node=4", "--nodes=2", "--array=0-1", "--partition=gpu"):
        assert line in text, line
    assert "srun" in text and not list(sweep.rglob("status.json"))  # nothing ran
