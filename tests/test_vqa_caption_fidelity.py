"""VQA accuracy, the PTB tokenizer, CIDEr-D and BLEU equal their reference harnesses case for case.

The expected values were computed by running the references themselves (scripts/make_scoring_fixtures_vqa.py,
scripts/make_scoring_fixtures_captions.py; commits in tests/fixtures/eval/README.md): the official
vqaEval.py under Python 2.7, LLaVA's m4c evaluator, lmms-eval, TRI and VLMEvalKit; pycocoevalcap 1.2 with
its Java tokenizer.
"""

import json
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest

from mmssm_lightning.eval.captions import bleu, cider_d
from mmssm_lightning.eval.metrics import VQA_NORMALIZATIONS, CaptionScores, VQAAccuracy, vqa_accuracy
from mmssm_lightning.eval.normalize import (
    evalai_process,
    lmms_process,
    official_process,
    py2_clean_whitespace,
    tri_process_prediction,
    vlmevalkit_process,
)
from mmssm_lightning.eval.ptb import ptb_tokenize, ptb_tokenize_corpus
from mmssm_lightning.eval.sample import EvalSample

FIX = Path(__file__).parent / "fixtures" / "eval"
VQA = json.loads((FIX / "vqa_harness_cases.json").read_text())
PTB = json.loads((FIX / "ptb_java_cases.json").read_text())
CORPORA = {c["name"]: c for c in json.loads((FIX / "caption_corpora.json").read_text())["corpora"]}


def _disagreements(got, want, inputs):
    return [(x, g, w) for x, g, w in zip(inputs, got, want) if g != w]


@pytest.mark.parametrize("mode", VQA_NORMALIZATIONS)
def test_vqa_accuracy_equals_each_harness(mode):
    """Float for float; where the harness raises (no answers, m4c's 10-answer assert), a ValueError."""
    bad = []
    for (pred, answers, _, _), want in zip(VQA["cases"], VQA["accuracy"][mode], strict=True):
        try:
            got = vqa_accuracy(pred, answers, mode)
        except ValueError:
            got = "error"
        if got != (want if isinstance(want, float) else "error"):
            bad.append((pred, answers, got, want))
    assert not bad, f"{len(bad)}/{len(VQA['cases'])} differ, e.g. {bad[:3]}"
    assert sum(isinstance(w, str) for w in VQA["accuracy"][mode]) == (905 if mode == "m4c" else 1)


@pytest.mark.parametrize(
    "normalize,column",
    [
        (lambda p: official_process(py2_clean_whitespace(p)), "official_process"),
        (evalai_process, "evalai_process"),
        (lmms_process, "lmms_process"),
        (tri_process_prediction, "tri_process_prediction"),
        (vlmevalkit_process, "vlmevalkit_process"),
    ],
)
def test_vqa_normalizers_equal_each_harness(normalize, column):
    preds = [c[0] for c in VQA["cases"]]
    bad = _disagreements([normalize(p) for p in preds], VQA["normalized_prediction"][column], preds)
    assert not bad, f"{len(bad)}/{len(preds)} differ, e.g. {bad[:3]}"


def test_vqa_metric_gives_the_official_means_and_report():
    """VQAAccuracy's running sums give vqaEval.py's overall, per answer type and per question type means
    (Python 2 rounds them half away from zero for its report)."""
    scored = [c for c in VQA["cases"] if c[1]]
    means = VQA["official_means"]
    for field, key in ((2, "perAnswerType"), (3, "perQuestionType")):
        groups = sorted(means[key])
        metric = VQAAccuracy("official", groups=groups)
        metric.update(
            [c[0] for c in scored],
            [EvalSample(id=str(i), answers=c[1], category=c[field]) for i, c in enumerate(scored)],
        )
        out = metric.compute()
        assert out["accuracy"].item() == means["overall"]
        assert {g: out[f"accuracy/{g}"].item() for g in groups} == means[key]
        report = VQA["official_report"][key]
        assert {
            g: float(Decimal(100 * means[key][g]).quantize(Decimal("0.01"), ROUND_HALF_UP)) for g in groups
        } == report
    with pytest.raises(ValueError, match="VQA sample 'x': .*answers"):
        VQAAccuracy("official").update(["a"], [EvalSample(id="x", answers=[])])
    with pytest.raises(ValueError, match="normalization"):
        VQAAccuracy("exact")


def test_ptb_tokenizer_equals_java_on_a_corpus():
    """Captions tokenised in one call, as pycocoevalcap does: line ends see the next caption."""
    corpus = PTB["corpus"]
    bad = _disagreements(ptb_tokenize_corpus(corpus["captions"]), corpus["tokens"], corpus["captions"])
    assert not bad, f"{len(bad)}/{len(corpus['captions'])} differ, e.g. {bad[:3]}"


def test_ptb_tokenizer_equals_java_caption_by_caption():
    single = PTB["single"]
    bad = _disagreements([ptb_tokenize(c) for c in single["captions"]], single["tokens"], single["captions"])
    assert not bad, f"{len(bad)}/{len(single['captions'])} differ, e.g. {bad[:3]}"
    for case in PTB[
        "line_breaks"
    ]:  # a line break inside a caption shifts the later ones, as in pycocoevalcap
        assert ptb_tokenize_corpus(case["captions"]) == case["tokens"]
    # what the next line does to a line's end: "A." keeps its period unless a sentence starts after it
    assert ptb_tokenize_corpus(["the letter A.", "A dog."]) == ["the letter a", "a dog"]
    assert ptb_tokenize_corpus(["the letter A.", "dogs."]) == ["the letter a.", "dogs"]


def _tokenized(case):
    refs = iter(ptb_tokenize_corpus([r for refs in case["gts"].values() for r in refs]))
    cands = iter(ptb_tokenize_corpus([c[0] for c in case["res"].values()]))
    return {k: [next(refs) for _ in v] for k, v in case["gts"].items()}, {
        k: [next(cands)] for k in case["res"]
    }


@pytest.mark.parametrize("name", sorted(CORPORA))
def test_cider_and_bleu_equal_pycocoevalcap(name):
    """Tokens, corpus and per-image CIDEr-D and BLEU-1..4: equal to the last bit."""
    case = CORPORA[name]
    gts, res = _tokenized(case)
    assert gts == case["gts_tokens"] and res == case["res_tokens"]
    assert cider_d(gts, res) == (case["cider"], case["cider_per_image"])
    assert bleu(gts, res) == (case["bleu"], case["bleu_per_image"])


def test_caption_metric_equals_pycocoevalcap():
    """The whole corpus in one update, in the scorer's order: pycocoevalcap's numbers; split over
    updates the hashing and gathering change nothing on this corpus (no caption end depends on the next)."""
    case = CORPORA["mixed_reference_counts"]
    keys = list(case["gts"])
    samples = [EvalSample(id=k, answers=case["gts"][k]) for k in keys]
    preds = [case["res"][k][0] for k in keys]
    metric = CaptionScores()
    metric.update(preds, samples)
    out = metric.compute()
    assert out["CIDEr"].item() == case["cider"]
    assert [out[f"BLEU-{k}"].item() for k in range(1, 5)] == case["bleu"]
    split = CaptionScores()
    split.update(preds[:25], samples[:25])
    split.update(preds[25:], samples[25:])
    assert split.compute()["CIDEr"].item() == case["cider"]
