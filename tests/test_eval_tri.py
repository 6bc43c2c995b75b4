"""The cobra protocol's metrics against TRI-ML/vlm-evaluation's own scoring code: every case of
tests/fixtures/eval/tri_*.json (written by scripts/make_tri_fixtures.py from the harness at the
commit named in each file) must agree — per case, and per run as the harness reports it."""

import json
import math
from pathlib import Path

import pytest
import torch

from mmssm_lightning.eval.sample import EvalSample
from mmssm_lightning.eval.scorers import tri
from mmssm_lightning.eval.scorers.tri_metrics import (
    TRIBoxAccuracy,
    TRIChoiceMetrics,
    TRIGQAAccuracy,
    TRITextVQAAccuracy,
    TRIVizWizAccuracy,
    TRIVQAv2Accuracy,
)

FIX = Path(__file__).parent / "fixtures" / "eval"


def _load(name: str) -> dict:
    data = json.loads((FIX / name).read_text())
    assert data["source"]["commit"] == tri.COMMIT and data["source"]["harness"] == tri.HARNESS
    return data


def _same(ours: float, theirs: float | None) -> bool:
    if theirs is None or (isinstance(theirs, float) and math.isnan(theirs)):
        return math.isnan(ours)
    return math.isclose(ours, theirs, rel_tol=1e-12, abs_tol=1e-12)


def _pct(x: torch.Tensor) -> float:
    """The harness's report: round(100 * x, 2)."""
    return round(100 * float(x), 2)


def test_vqav2_every_case_and_run():
    runs = _load("tri_vqav2.json")["runs"]
    cases = [c for r in runs for c in r["cases"]]
    assert len(cases) == 3000
    assert sum(tri.vqav2_score(c["pred"], c["answers"]) == c["score"] for c in cases) == len(cases)
    for run in runs:
        m = TRIVQAv2Accuracy()
        samples = [
            EvalSample(id=str(i), answers=c["answers"], category=c["answer_type"])
            for i, c in enumerate(run["cases"])
        ]
        m.update([c["pred"] for c in run["cases"]], samples)
        out = m.compute()
        assert _pct(out["accuracy"]) == run["accuracy"]
        assert {t: _pct(out[f"accuracy/{t}"]) for t in run["by_answer_type"]} == run["by_answer_type"]


def test_vizwiz_every_case_and_run():
    runs = _load("tri_vizwiz.json")["runs"]
    cases = [c for r in runs for c in r["cases"]]
    assert len(cases) == 3000
    agree = sum(
        round(100 * tri.vizwiz_score(c["pred"], c["answers"]), 2) == c["score_rounded"] for c in cases
    )
    assert agree == len(cases)
    for run in runs:
        m = TRIVizWizAccuracy()
        samples = [
            EvalSample(id=str(i), answers=c["answers"], label=str(c["answerable"]))
            for i, c in enumerate(run["cases"])
        ]
        m.update([c["pred"] for c in run["cases"]], samples)
        out = {k: _pct(v) for k, v in m.compute().items()}
        want = run["metrics"]
        assert out == {
            "accuracy": want["accuracy__VizWiz-Overall"],
            "accuracy/answerable": want["accuracy__VizWiz-Answerable"],
            "accuracy/unanswerable": want["accuracy__VizWiz-Unanswerable"],
            "unanswerable_ap": want["accuracy__VizWiz-Unanswerable-AvgPR"],
            "unanswerable_f1": want["accuracy__VizWiz-Unanswerable-F1"],
        }


def test_vizwiz_contraction_table_is_its_own():
    """VizWiz's eval.py writes most contractions with backticks, so "dont" is not "don't" there."""
    assert tri.vizwiz_prediction("Dont") == "don`t" and tri.vqav2_prediction("Dont") == "don't"
    assert tri.vizwiz_prediction("couldnt") == "couldn't" and tri.vizwiz_prediction("whats") == "what`s"
    assert tri.vizwiz_unanswerable(" Unanswerable.\n") and not tri.vizwiz_unanswerable("not answerable")


def test_textvqa_every_case_and_run():
    runs = _load("tri_textvqa.json")["runs"]
    cases = [c for r in runs for c in r["cases"]]
    assert len(cases) == 3000
    for key in ("ocr", "pure"):
        assert (
            sum(tri.textvqa_score(c[f"pred_{key}"], c["answers"]) == c[f"score_{key}"] for c in cases) == 3000
        )
    for run in runs:
        for key, name in (("ocr", "accuracy__TextVQA-OCR"), ("pure", "accuracy__TextVQA-Pure")):
            m = TRITextVQAAccuracy()
            m.update(
                [c[f"pred_{key}"] for c in run["cases"]],
                [EvalSample(id="q", answers=c["answers"]) for c in run["cases"]],
            )
            assert _same(float(m.compute()["accuracy"]), run["metrics"][name])
    with pytest.raises(ValueError, match="10 answers"):
        tri.textvqa_score("a", ["a"] * 9)


def test_gqa_every_case_and_run():
    runs = _load("tri_gqa.json")["runs"]
    cases = [c for r in runs for c in r["cases"]]
    assert len(cases) == 3000
    assert sum(tri.gqa_prediction(c["pred"]) == c["cleaned"] for c in cases) == len(cases)
    for run in runs:
        m = TRIGQAAccuracy()
        samples = [
            EvalSample(id=str(i), answers=[c["answer"]], category=c["structural"])
            for i, c in enumerate(run["cases"])
        ]
        m.update([c["pred"] for c in run["cases"]], samples)
        out = m.compute()
        assert (_pct(out["accuracy"]), _pct(out["accuracy/binary"]), _pct(out["accuracy/open"])) == (
            run["accuracy"],
            run["binary"],
            run["open"],
        )
    assert tri.gqa_prediction("T-Shirt.") == "tshirt"  # the ground truth says "t-shirt": wrong


def test_refcoco_parse_iou_and_runs():
    data = _load("tri_refcoco.json")
    cases = [c for r in data["runs"] for c in r["cases"]] + data["adversarial"]
    assert len(cases) > 3000
    agree = 0
    for c in cases:
        parsed = tri.parse_bbox(c["text"])
        iou = tri.box_iou(parsed, c["gt"]) if parsed is not None else None
        agree += parsed == c["parsed"] and [type(v) for v in parsed or []] == [
            type(v) for v in c["parsed"] or []
        ]
        agree += iou == c["iou"]
    assert agree == 2 * len(cases)
    for run in data["runs"]:
        m = TRIBoxAccuracy(groups=["RefCOCO", "RefCOCO+", "RefCOCOg"])
        samples = []
        for i, c in enumerate(run["cases"]):
            (x, y, w, h), (width, height) = c["xywh"], c["wh"]
            box = (x / width, y / height, (x + w) / width, (y + h) / height)  # as the RefCOCO reader has it
            assert tri.round_box(box) == c["gt"]
            samples.append(EvalSample(id=str(i), box=box, category=c["dataset"]))
        m.update([c["text"] for c in run["cases"]], samples)
        out = m.compute()
        for ds in ("RefCOCO", "RefCOCO+", "RefCOCOg"):
            assert float(out[f"accuracy/{ds}"]) == run["metrics"][f"accuracy__{ds}"]
        assert float(out["invalid"]) == sum(c["parsed"] is None for c in run["cases"]) / len(run["cases"])


def _choice_run(run: dict, classes: list[str], splits: list[str], final: str, label) -> dict:
    m = TRIChoiceMetrics(classes, splits, final)
    probs = torch.tensor([c["probs"] for c in run["cases"]], dtype=torch.float64)
    samples = [
        EvalSample(id=str(i), label=label(c), category=c.get("split")) for i, c in enumerate(run["cases"])
    ]
    m.update([classes[int(i)] for i in probs.argmax(-1)], samples, scores=probs)
    return {k: float(v) for k, v in m.compute().items()}


def test_pope_vsr_tallyqa_ai2d_runs():
    data = _load("tri_choice.json")
    for run in data["pope"]:
        out = _choice_run(
            run, ["yes", "no"], ["adversarial", "popular", "random"], "split_mean", lambda c: c["label"]
        )
        for split in ("adversarial", "popular", "random", "final"):
            sfx = "" if split == "final" else f"/{split}"
            for ours, theirs in (("accuracy", "Accuracy"), ("auc_roc", "AUCROC"), ("auc_pr", "AUCPR")):
                assert _same(out[ours + sfx], run["metrics"][f"POPE-{split}-{theirs}"]), (split, ours)
    for run in data["vsr"]:
        out = _choice_run(run, ["true", "false"], [], "pooled", lambda c: "true" if c["label"] else "false")
        m = run["metrics"]
        assert _same(out["accuracy"], m["accuracy__VSR-ExactMatch"])
        assert _same(out["auc_roc"], m["auc-roc"]) and _same(out["auc_pr"], m["auc-pr"])
    for name, key, splits, k in (
        ("tallyqa", "TallyQA", ["simple", "complex"], 16),
        ("ai2d", "AI2D", ["val", "test"], 4),
    ):
        classes = [str(i) for i in range(k)]
        for run in data[name]:
            out = _choice_run(run, classes, splits, "pooled", lambda c: str(c["label"]))
            for split in [*splits, "final"]:
                sfx = "" if split == "final" else f"/{split}"
                for ours, theirs in (("accuracy", "Accuracy"), ("auc_roc", "AUCROC"), ("auc_pr", "AUCPR")):
                    assert _same(out[ours + sfx], run["metrics"][f"accuracy__{key}-{split}-{theirs}"]), (
                        name,
                        split,
                        ours,
                    )


def test_auc_functions_match_sklearn():
    cases = _load("tri_auc.json")["cases"]
    agree = 0
    for c in cases:
        if "scores" in c:
            s, y = torch.tensor(c["scores"], dtype=torch.float64), torch.tensor(c["labels"]).bool()
            agree += _same(tri.binary_roc_auc(s, y), c["roc_auc"]) + _same(
                tri.binary_average_precision(s, y), c["ap"]
            )
        else:
            p, y = torch.tensor(c["probs"], dtype=torch.float64), torch.tensor(c["labels"])
            agree += _same(tri.ovo_roc_auc(p, y), c["roc_auc"]) + _same(
                tri.macro_average_precision(p, y), c["ap"]
            )
    assert agree == 2 * len(cases)


def test_choice_metric_refuses_what_the_harness_cannot_score():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]], dtype=torch.float64)
    s = [EvalSample(id="a", label="0"), EvalSample(id="b", label="5")]  # "5" is not an option
    m = TRIChoiceMetrics(["0", "1", "2"])
    m.update(["0", "1"], s, scores=probs)
    out = m.compute()
    assert float(out["accuracy"]) == 0.5 and math.isnan(out["auc_roc"]) and math.isnan(out["auc_pr"])
    with pytest.raises(ValueError, match="scoring: likelihood"):
        TRIChoiceMetrics(["0", "1", "2"]).update(["0", "1"], s)
    with pytest.raises(ValueError, match="order"):  # classes listed against the candidates' order
        TRIChoiceMetrics(["1", "0", "2"]).update(["0", "1"], s, scores=probs)
    with pytest.raises(ValueError, match="splits"):
        TRIChoiceMetrics(["0", "1", "2"], splits=["val"]).update(["0", "1"], s, scores=probs)


FAMILY = {
    "vqa-v2": "vqav2",
    "gqa": "gqa",
    "vizwiz": "vizwiz",
    "pope": "pope",
    "vsr": "vsr",
    "refcoco": "refcoco_val",
    "text-vqa": "textvqa",
    "text-vqa-pure": "textvqa_pure",
    "tally-qa": "tallyqa",
    "ai2d": "ai2d_all",
}


def test_cobra_protocol_prompts_are_the_wrappers():
    """conf/protocol/cobra.yaml's user turns = h-zhao1997/vlm-evaluation's Cobra wrapper's, and in our
    zephyr template the whole prompt = Cobra's Zephyr prompt builder's."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from mmssm_lightning.constants import CONF_DIR
    from mmssm_lightning.eval.benchmarks import LETTERS

    data = json.loads((FIX / "tri_prompts.json").read_text())
    assert data["fork"]["commit"].startswith("b0a691f") and data["cobra"]["commit"].startswith("4b81082")
    conf = Path(CONF_DIR)
    protocol = OmegaConf.load(conf / "protocol" / "cobra.yaml").benchmarks
    zephyr = instantiate(OmegaConf.load(conf / "prompt" / "zephyr.yaml"))
    assert protocol.vqav2.max_new_tokens == 128  # the wrapper's max_length
    ocr = next(c["ocr"] for c in data["cases"] if "ocr" in c)
    for c in data["cases"]:
        proto = instantiate(protocol[FAMILY[c["family"]]], _convert_="all")
        sample = EvalSample(
            id="x",
            question=c["question"],
            choices={LETTERS[i]: t for i, t in enumerate(c["choices"])} if "choices" in c else None,
            context=", ".join(ocr),  # the reader gives every TextVQA sample its OCR; only "textvqa" shows it
        )
        message = proto.format(sample)
        text = "".join(
            s.text for s in zephyr.segments([{"from": "human", "value": message}], False, "<|endoftext|>")
        )
        assert text == c["prompt"], c["family"]


def test_ai2d_split_labels_need_the_test_ids(tmp_path):
    from mmssm_lightning.eval.benchmarks import AI2D, BenchmarkFormatError

    with pytest.raises(BenchmarkFormatError, match="test_ids"):
        AI2D(str(tmp_path), label_splits=True)
