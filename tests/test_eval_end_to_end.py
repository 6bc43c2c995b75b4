"""mmssm-eval end to end on CPU: a tiny trained checkpoint, benchmarks in their official formats
(made by the synthetic generator), three papers' protocols, generation and likelihood scoring."""

import json
import os
import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from mmssm_lightning.constants import CONF_DIR
from mmssm_lightning.data.synthetic_benchmarks import write_benchmarks
from mmssm_lightning.eval.evaluate import Evaluator, evaluate, load_checkpoint
from mmssm_lightning.inference import Engine
from mmssm_lightning.train import run
from tests.conftest import SHARED_CACHE, compose_cfg


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ckpt")
    run(
        compose_cfg(
            tmp,
            [
                "trainer.max_steps=2",
                "trainer.val_check_interval=2",
                "module.val_generate=false",
                "evaluate=false",
                "callbacks.checkpoint.every_n_train_steps=2",
            ],
        )
    )
    return tmp / "run" / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return write_benchmarks(tmp_path_factory.mktemp("bench"), n=5)


def _eval_cfg(tmp, ckpt, synth, protocol, names):
    coco = synth / "coco/val2014"
    paths = [
        f"benchmarks.vqav2.questions={synth}/vqav2/questions.json",
        f"benchmarks.vqav2.annotations={synth}/vqav2/annotations.json",
        f"benchmarks.vqav2.images={coco}",
        f"benchmarks.pope.images={coco}",
        *[
            f"benchmarks.pope.files.{s}={synth}/pope/coco_pope_{s}.json"
            for s in ("random", "popular", "adversarial")
        ],
        f"benchmarks.mmbench.tsv={synth}/mmbench/dev.tsv",
        f"benchmarks.mme.root={synth}/MME",
        "+benchmarks.mme.subtasks=[existence,color]",
        f"benchmarks.refcoco_testA.refs='{synth}/refcoco/refs(unc).p'",
        f"benchmarks.refcoco_testA.instances={synth}/refcoco/instances.json",
        f"benchmarks.refcoco_testA.images={coco}",
        f"benchmarks.nocaps.annotations={synth}/captions/captions.json",
        f"benchmarks.nocaps.images={coco}",
    ]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            "eval",
            overrides=[
                f"ckpt_path={ckpt}",
                f"protocol={protocol}",
                f"run=[{','.join(names)}]",
                f"paths.root_dir={tmp}",
                f"paths.output_dir={tmp}/out",
                f"paths.cache_dir={SHARED_CACHE}",
                "batch_size=4",
                "device=cpu",
                *paths,
            ],
        )
    # the protocols' lengths are the harnesses' (LLaVA's MMBench: 1024); a few tokens test the path
    with open_dict(cfg):
        for n in names:
            if n in cfg.protocol.benchmarks:
                cfg.protocol.benchmarks[n].max_new_tokens = 8
    return cfg


def test_checkpoint_rebuilds_the_trained_model(checkpoint):
    model, prompt, cfg = load_checkpoint(checkpoint)
    saved = torch.load(checkpoint, weights_only=True)["state_dict"]
    assert all(torch.equal(v, saved["model." + k]) for k, v in model.state_dict().items())
    assert prompt.name == cfg.prompt.name == "zephyr" and not model.training
    # what holds no weights can change at evaluation (Q-Mamba evaluates its connector forward-only)
    _, prompt, cfg = load_checkpoint(checkpoint, ["prompt.image_position=first", "scan.name=forward"])
    assert prompt.image_position == "first" and cfg.scan.name == "forward"


def test_llava_protocol_on_four_benchmarks(tmp_path, checkpoint, synth):
    report = evaluate(_eval_cfg(tmp_path, checkpoint, synth, "llava", ["vqav2", "pope", "mmbench", "mme"]))
    written = json.loads((tmp_path / "out/results.json").read_text())
    assert written == json.loads(json.dumps(report))
    b = report["benchmarks"]
    assert b["vqav2"]["n"] == 10 and 0 <= b["vqav2"]["metrics"]["accuracy"] <= 1
    assert set(b["pope"]["metrics"]) >= {"accuracy", "f1", "yes_ratio", "f1/random", "f1/adversarial"}
    assert b["mmbench"]["n"] == 20 and "circular_accuracy" in b["mmbench"]["metrics"]
    assert {"existence", "color", "perception"} <= set(b["mme"]["metrics"])
    # every number records how it was produced
    assert b["pope"]["protocol"]["protocol"] == "llava" and b["pope"]["protocol"]["prompt"].endswith(
        "single word or phrase."
    )
    assert b["vqav2"]["protocol"]["metric"]["normalization"] == "evalai"
    preds = [json.loads(line) for line in (tmp_path / "out/vqav2.predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 10 and {"id", "prediction"} <= set(preds[0])


def test_likelihood_scoring_answers_with_a_candidate(tmp_path, checkpoint, synth):
    report = evaluate(_eval_cfg(tmp_path, checkpoint, synth, "cobra", ["pope"]))
    assert report["benchmarks"]["pope"]["protocol"]["scoring"] == "likelihood"
    preds = [
        json.loads(line)["prediction"]
        for line in (tmp_path / "out/pope.predictions.jsonl").read_text().splitlines()
    ]
    assert len(preds) == 15 and set(preds) <= {"yes", "no"}


def test_likelihood_picks_the_highest_first_token(checkpoint, synth):
    """The chosen answer is the candidate whose spellings' first tokens carry the most probability."""
    from hydra.utils import instantiate

    from mmssm_lightning.eval.benchmarks import POPE

    model, prompt, _ = load_checkpoint(checkpoint)
    ev = Evaluator(model, prompt, batch_size=3)
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            "eval",
            overrides=["protocol=cobra", "ckpt_path=x", "paths.root_dir=/tmp", "paths.output_dir=/tmp"],
        )
    proto = instantiate(cfg.protocol.benchmarks.pope, _convert_="all")
    samples = POPE({"random": synth / "pope/coco_pope_random.json"}, synth / "coco/val2014").samples()[:3]
    ids, mask, pixels = ev._inputs(samples, proto)
    logp = Engine(model).next_token_logprobs(ids, mask, pixels)
    cand = ev._candidate_ids(proto.candidates)
    want = [
        "yes" if torch.logsumexp(logp[i, cand["yes"]], 0) > torch.logsumexp(logp[i, cand["no"]], 0) else "no"
        for i in range(3)
    ]
    assert ev.answer(samples, proto) == want


def test_pythia_vl_protocol_grounding_and_captions(tmp_path, checkpoint, synth):
    report = evaluate(_eval_cfg(tmp_path, checkpoint, synth, "pythia_vl", ["refcoco_testA", "nocaps"]))
    ref, cap = report["benchmarks"]["refcoco_testA"], report["benchmarks"]["nocaps"]
    assert ref["protocol"]["raw_output"] is True and "accuracy" in ref["metrics"]
    assert ref["protocol"]["metric"]["_target_"].endswith("PythiaVLBoxAccuracy")
    assert {"CIDEr", "BLEU-4"} <= set(cap["metrics"])
    # raw outputs: decoded with special tokens, nothing after the first EOS (as a batch of one)
    eos = load_checkpoint(checkpoint)[0].tokenizer.eos_token
    for name in ("refcoco_testA", "nocaps"):
        for line in (tmp_path / f"out/{name}.predictions.jsonl").read_text().splitlines():
            p = json.loads(line)["prediction"]
            assert eos not in p or (p.endswith(eos) and p.count(eos) == 1), p


@pytest.mark.slow
def test_unknown_benchmark_and_missing_checkpoint_are_clear_errors(tmp_path, checkpoint, synth):
    with pytest.raises(ValueError, match="protocol 'cobra' does not define benchmark 'mme'"):
        evaluate(_eval_cfg(tmp_path, checkpoint, synth, "cobra", ["mme"]))
    env = {**os.environ, "MMSSM_ROOT": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "mmssm_lightning.eval.evaluate", f"ckpt_path={tmp_path}/none.ckpt"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1 and "ckpt_path:" in proc.stderr and "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_prismatic_release_converts_and_evaluates(tmp_path, checkpoint, synth):
    """A Cobra-style release (projector + mamba_ssm LLM keys, no towers) -> our checkpoint -> mmssm-eval."""
    from mmssm_lightning.convert.prismatic import convert

    ours = torch.load(checkpoint, weights_only=True)
    sd = ours["state_dict"]
    release = {
        "model": {
            "projector": {
                "projector." + k.removeprefix("model.projector.net."): v
                for k, v in sd.items()
                if k.startswith("model.projector.")
            },
            "llm_backbone": {
                "llm."
                + k.removeprefix("model.llm.model.").replace("backbone.embeddings.", "backbone.embedding."): v
                for k, v in sd.items()
                if k.startswith("model.llm.")
            },
        }
    }
    torch.save(release, tmp_path / "latest-checkpoint.pt")
    out = convert(
        tmp_path / "latest-checkpoint.pt",
        tmp_path / "converted.ckpt",
        [f"paths.root_dir={tmp_path}", f"paths.cache_dir={SHARED_CACHE}"],
    )
    model, _, _ = load_checkpoint(out)
    for k, v in model.state_dict().items():
        if not k.startswith("vision."):
            assert torch.equal(v, sd["model." + k]), k
    report = evaluate(_eval_cfg(tmp_path, out, synth, "cobra", ["pope"]))
    assert report["benchmarks"]["pope"]["n"] == 15
    with pytest.raises(ValueError, match="no 'llm_backbone'"):
        torch.save({"model": {"projector": {}}}, tmp_path / "bad.pt")
        convert(tmp_path / "bad.pt", tmp_path / "bad.ckpt", [])


@pytest.mark.slow
def test_wandb_table_offline(tmp_path, checkpoint, synth, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = _eval_cfg(tmp_path, checkpoint, synth, "llava", ["pope"])
    cfg.logger = {"wandb": {"project": "mmssm-test", "offline": True}}
    cfg.max_samples = 4
    evaluate(cfg)
    runs = list((tmp_path / "out" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))


def test_raw_outputs_end_at_the_first_eos(checkpoint):
    """``raw_output``: the decoded answer with its EOS and nothing after it (a finished row's
    padding), as the batch-of-one ``tokenizer.decode`` of Pythia-VL's harness."""
    from types import SimpleNamespace

    from mmssm_lightning.inference.engine import Generation

    model, prompt, _ = load_checkpoint(checkpoint)
    tok = model.tokenizer
    eos, pad = tok.eos_token_id, tok.pad_token_id
    yes, no = tok("yes.", add_special_tokens=False).input_ids, tok("no", add_special_tokens=False).input_ids
    width = max(len(yes), len(no)) + 4
    rows = [yes + [eos] + [pad] * width, no + [eos] + [pad] * width, (no * width)]
    out = torch.tensor([r[:width] for r in rows])
    lengths = [len(yes) + 1, len(no) + 1, width]
    texts = [
        tok.decode(r[: k - 1] if k < width else r[:k], skip_special_tokens=True)
        for r, k in zip(rows, lengths)
    ]
    ev = Evaluator(model, prompt, batch_size=3)
    ev.engine.generate_tokens = lambda *a, **k: Generation(out, lengths, texts, 0.0, 0.0)
    ids = torch.tensor([tok("hi", add_special_tokens=False).input_ids] * 3)
    proto = SimpleNamespace(scoring="generate", max_new_tokens=width, raw_output=True)
    raw, _, _ = ev._respond(ids, torch.ones_like(ids), None, proto)
    assert raw[0] == tok.decode(yes + [eos]) and raw[0].endswith(tok.eos_token)
    assert raw[1] == tok.decode(no + [eos])
    assert raw[2] == tok.decode(out[2].tolist()) and tok.eos_token not in raw[2]  # no EOS: all of it
    plain, _, _ = ev._respond(
        ids, torch.ones_like(ids), None, SimpleNamespace(**{**vars(proto), "raw_output": False})
    )
    assert plain[1] == tok.decode(no, skip_special_tokens=True)


def _predictions(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _same_predictions(a, b):
    """Same ids and answers; candidate log-probabilities equal to rounding (batch invariance)."""
    assert [(x["id"], x["prediction"]) for x in a] == [(y["id"], y["prediction"]) for y in b]
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x.get("scores", {}):
            assert x["scores"][k] == pytest.approx(y["scores"][k], abs=1e-5)


def _reader_and_protocol(tmp_path, checkpoint, synth, protocol, name):
    from hydra.utils import instantiate

    cfg = _eval_cfg(tmp_path, checkpoint, synth, protocol, [name])
    return instantiate(cfg.benchmarks[name], _convert_="all"), instantiate(
        cfg.protocol.benchmarks[name], _convert_="all"
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vqav2", "pope"])
def test_workers_and_length_batches_change_no_answer(tmp_path, checkpoint, synth, name):
    """Images read in DataLoader workers, prompts batched by length and in batches of another size
    (each sample in other company): the same predictions, in the benchmark's order, the same metrics."""
    model, prompt, _ = load_checkpoint(checkpoint)
    bench, proto = _reader_and_protocol(tmp_path, checkpoint, synth, "cobra", name)
    runs = {}
    for label, batch, workers, sort in (("plain", 4, 0, False), ("piped", 3, 2, True)):
        ev = Evaluator(model, prompt, batch_size=batch, num_workers=workers, sort_by_length=sort)
        (tmp_path / label).mkdir()
        runs[label] = ev.run(name, bench, proto, None, tmp_path / label)
    samples = bench.samples()
    plain_m, piped_m = runs["plain"]["metrics"], runs["piped"]["metrics"]
    assert plain_m.keys() == piped_m.keys()
    for key, value in plain_m.items():
        # answers are equal, so every count-based number is; the AUCs rank the candidates'
        # probabilities, equal across batchings to rounding (~1e-7), which can swap a near tie
        if "auc" in key:
            assert piped_m[key] == pytest.approx(value, abs=0.05), key
        else:
            assert piped_m[key] == value, key
    plain, lines = (_predictions(tmp_path / label / f"{name}.predictions.jsonl") for label in runs)
    _same_predictions(plain, lines)
    assert [line["id"] for line in lines] == [s.id for s in samples]
    speed = runs["piped"]["speed"]
    assert speed["samples"] == len(samples) and speed["samples_per_s"] > 0 and speed["world_size"] == 1
    assert speed["batches"] == -(-len(samples) // 3) and speed["ttft_s"] <= speed["e2e_s"]
    if proto.scoring == "likelihood":
        assert set(lines[0]["scores"]) == {"yes", "no"} and speed["tpot_s"] is None
        assert all(line["prediction"] == max(line["scores"], key=line["scores"].get) for line in lines)
    else:
        assert speed["output_tokens"] > 0 and speed["tpot_s"] > 0


def test_answer_returns_candidate_log_probabilities(checkpoint, synth):
    from mmssm_lightning.eval.benchmarks import POPE

    model, prompt, _ = load_checkpoint(checkpoint)
    ev = Evaluator(model, prompt, batch_size=3)
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            "eval",
            overrides=["protocol=cobra", "ckpt_path=x", "paths.root_dir=/tmp", "paths.output_dir=/tmp"],
        )
    from hydra.utils import instantiate

    proto = instantiate(cfg.protocol.benchmarks.pope, _convert_="all")
    samples = POPE({"random": synth / "pope/coco_pope_random.json"}, synth / "coco/val2014").samples()[:3]
    answers, scores = ev.answer(samples, proto, return_scores=True)
    logp = Engine(model).next_token_logprobs(*ev._inputs(samples, proto))
    cand = ev._candidate_ids(proto.candidates)
    for i in range(3):
        for name in ("yes", "no"):
            assert scores[i][name] == pytest.approx(torch.logsumexp(logp[i, cand[name]], 0).item(), abs=1e-5)
        assert answers[i] == max(scores[i], key=scores[i].get)
    assert ev.answer(samples, proto) == answers


def test_results_report_speed_and_the_suite_estimate(tmp_path, checkpoint, synth):
    report = evaluate(_eval_cfg(tmp_path, checkpoint, synth, "cobra", ["pope"]))
    speed = report["benchmarks"]["pope"]["speed"]
    assert speed["scoring"] == "likelihood" and speed["engine"] == "mamba_static_state"
    est = report["suite_estimate"]
    # the protocol's likelihood-scored benchmarks at POPE's measured rate; the generated ones have
    # no measured rate in this run
    proto = OmegaConf.load(f"{CONF_DIR}/protocol/cobra.yaml").benchmarks
    likelihood = {n for n, e in proto.items() if e.get("scoring") == "likelihood"}
    assert {"pope", "vsr", "tallyqa"} <= set(est["benchmarks"]) <= likelihood
    assert {"vqav2", "gqa", "vizwiz", "textvqa"} <= set(est["missing"])
    assert est["benchmarks"]["pope"]["samples"] == 9000
    assert est["benchmarks"]["pope"]["estimate_s"] == pytest.approx(9000 * speed["s_per_sample"])
    assert est["benchmarks"]["vsr"]["s_per_sample"] == speed["s_per_sample"]
    assert est["total_s"] == pytest.approx(sum(b["estimate_s"] for b in est["benchmarks"].values()))


def _cli_overrides(tmp, ckpt, synth, out):
    coco = synth / "coco/val2014"
    return [
        f"ckpt_path={ckpt}",
        "protocol=cobra",
        "run=[vqav2,pope]",
        f"paths.root_dir={tmp}",
        f"paths.output_dir={out}",
        f"paths.cache_dir={SHARED_CACHE}",
        f"hydra.run.dir={out}",
        "batch_size=2",
        "device=cpu",
        "inference.num_workers=1",
        f"benchmarks.vqav2.questions={synth}/vqav2/questions.json",
        f"benchmarks.vqav2.annotations={synth}/vqav2/annotations.json",
        f"benchmarks.vqav2.images={coco}",
        f"benchmarks.pope.images={coco}",
        *[
            f"benchmarks.pope.files.{s}={synth}/pope/coco_pope_{s}.json"
            for s in ("random", "popular", "adversarial")
        ],
    ]


@pytest.mark.slow
def test_two_processes_write_what_one_writes(tmp_path, checkpoint, synth):
    """torchrun with 2 CPU processes (gloo): each takes a shard, the answers are gathered, and
    results.json (less its timings) and the predictions files equal a single process's."""
    env = {**os.environ, "MMSSM_ROOT": str(tmp_path), "OMP_NUM_THREADS": "1"}
    outs = {}
    for procs in (1, 2):
        out = tmp_path / f"procs{procs}"
        launcher = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={procs}",
        ]
        proc = subprocess.run(
            [
                *launcher,
                "-m",
                "mmssm_lightning.eval.evaluate",
                *_cli_overrides(tmp_path, checkpoint, synth, out),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        outs[procs] = out
    results = [json.loads((outs[p] / "results.json").read_text()) for p in (1, 2)]
    for r, world in zip(results, (1, 2)):
        for b in r["benchmarks"].values():
            assert b.pop("speed")["world_size"] == world
        r.pop("suite_estimate")
    assert results[0] == results[1]
    for name in ("vqav2", "pope"):
        one, two = (_predictions(outs[p] / f"{name}.predictions.jsonl") for p in (1, 2))
        _same_predictions(one, two)
        assert len(one) == results[0]["benchmarks"][name]["n"]
    assert not list(outs[2].glob("*.rank*"))  # no per-rank files: rank 0 writes the merged ones


def test_missing_benchmark_files_stop_before_any_forward_and_scores_are_written_per_benchmark(
    tmp_path, checkpoint, synth, monkeypatch
):
    """mmssm-eval checks every requested benchmark's files before the first forward (one line
    naming them), and rewrites results.json after each benchmark, so a later failure keeps the
    finished scores."""
    cfg = _eval_cfg(tmp_path, checkpoint, synth, "llava", ["vqav2", "pope"])
    cfg.benchmarks.pope.files.random = str(tmp_path / "gone.json")
    with pytest.raises(
        FileNotFoundError, match=r"benchmark files missing \(nothing was scored\): pope: .*gone.json"
    ):
        evaluate(cfg)
    assert not (tmp_path / "out" / "results.json").exists()
    cfg = _eval_cfg(tmp_path, checkpoint, synth, "llava", ["vqav2", "pope"])
    calls = []
    original = Evaluator.run

    def fail_second(self, name, *args, **kwargs):
        calls.append(name)
        if len(calls) == 2:
            raise RuntimeError("the machine went away")
        return original(self, name, *args, **kwargs)

    monkeypatch.setattr(Evaluator, "run", fail_second)
    with pytest.raises(RuntimeError):
        evaluate(cfg)
    written = json.loads((tmp_path / "out" / "results.json").read_text())
    assert (
        list(written["benchmarks"]) == ["vqav2"] and "accuracy" in written["benchmarks"]["vqav2"]["metrics"]
    )
