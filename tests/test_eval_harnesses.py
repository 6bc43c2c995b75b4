"""Each named scorer variant against the harness it is named after, case for case: thousands of
random and adversarial model outputs whose reference results were computed by running the
harnesses' own code (tests/fixtures/eval/README.md names each repository, commit and function)."""

import json
from pathlib import Path

import pytest

from mmssm_lightning.eval import pythia_vl as pv
from mmssm_lightning.eval.metrics import (
    BoxAccuracy,
    LmmsPOPEMetric,
    MMBenchCircular,
    MMEScore,
    POPEMetric,
    choice_correct,
    circular_hits,
)
from mmssm_lightning.eval.parsing import (
    box_iou,
    box_lenient,
    can_infer,
    can_infer_option,
    can_infer_text,
    mme_lmms,
    mme_official,
    pope_exact,
    pope_official,
    sqa_llava,
    tally_int,
)
from mmssm_lightning.eval.sample import EvalSample

FIX = Path(__file__).parent / "fixtures" / "eval"


def _load(name):
    return json.loads((FIX / name).read_text())


def _agree(pairs) -> tuple[int, int, list]:
    pairs = list(pairs)
    bad = [p for p in pairs if p[0] != p[1]]
    return len(pairs) - len(bad), len(pairs), bad[:5]


def _assert_all(pairs, what):
    ok, n, bad = _agree(pairs)
    assert ok == n, f"{what}: {ok}/{n} agree; first disagreements (ours, reference, case): {bad}"


# -- VLMEvalKit --------------------------------------------------------------------------------------


def test_vlmevalkit_can_infer_and_its_halves():
    cases = _load("vlmevalkit_cases.json")["can_infer"]
    assert len(cases) >= 5000
    for name, fn in (("can_infer_option", can_infer_option), ("can_infer_text", can_infer_text)):
        _assert_all(((fn(c["text"], c["choices"]), c[name], c["text"]) for c in cases), name)
    _assert_all(((can_infer(c["text"], c["choices"]), c["can_infer"], c["text"]) for c in cases), "can_infer")


def test_vlmevalkit_tallyqa_text_to_int():
    cases = _load("vlmevalkit_cases.json")["tallyqa_text_to_int"]
    _assert_all(((tally_int(c["text"]), c["text_to_int"], c["text"]) for c in cases), "text_to_int")


def _mmbench_samples(rows):
    return [
        EvalSample(
            id=str(r["index"]),
            index=r["index"],
            label=r["answer"],
            choices={c: r[c] for c in "ABCD" if r.get(c) is not None},
            category=r["l2-category"],
        )
        for r in rows
    ]


def test_vlmevalkit_mmbench_circular_groups():
    ref = _load("vlmevalkit_cases.json")["mmbench_circular"]
    rows = ref["rows"]
    samples = _mmbench_samples(rows)
    correct = [choice_correct(r["prediction"], s, "can_infer") for r, s in zip(rows, samples)]
    hits = circular_hits([r["index"] for r in rows], correct)
    want = {int(k): bool(v) for k, v in ref["hit_by_main_index"].items()}
    assert hits == want
    assert 0 < sum(hits.values()) < len(hits)  # mixed verdicts
    cats = sorted({r["l2-category"] for r in rows if r["index"] < 1_000_000})
    m = MMBenchCircular(categories=cats)
    m.update([r["prediction"] for r in rows], samples)
    out = m.compute()
    assert out["circular_accuracy"].item() == pytest.approx(ref["report_acc"]["Overall"], abs=1e-12)
    abbr = {
        "coarse_perception": "CP",
        "logic_reasoning": "LR",
        "relation_reasoning": "RR",
        "attribute_reasoning": "AR",
    }
    for c in cats:
        assert out[f"circular_accuracy/{c}"].item() == pytest.approx(ref["report_acc"][abbr[c]], abs=1e-12)


# -- POPE --------------------------------------------------------------------------------------------

_POPE_KEYS = (("accuracy", "Accuracy"), ("precision", "Precision"), ("recall", "Recall"), ("f1", "F1 score"),
              ("yes_ratio", "Yes ratio"))  # fmt: skip


def _pope(metric, batch):
    metric.update(batch["texts"], [EvalSample(id=str(i), label=lab) for i, lab in enumerate(batch["labels"])])
    return {k: v.item() for k, v in metric.compute().items()}


def test_pope_llava_eval_pope_aoidragon_evaluate_and_lmms_eval():
    batches = _load("pope_cases.json")["batches"]
    _assert_all(
        ((pope_official(t), p, t) for b in batches for t, p in zip(b["texts"], b["llava_parsed"])),
        "POPE parse",
    )
    _assert_all(
        ((pope_exact(t), p if p in ("yes", "no") else "INVALID", t)
         for b in batches for t, p in zip(b["texts"], b["lmms_prediction"])),
        "lmms-eval POPE parse",
    )  # fmt: skip
    scored = 0
    for b in batches:
        ours = _pope(POPEMetric(pope_official, splits=[]), b)
        for ref in (b["llava_eval_pope"], b["aoidragon_evaluate"]):
            if ref == "ZeroDivisionError":  # the scripts divide by TP + FP / TP + FN without a guard
                assert ours["precision"] == 0 or ours["recall"] == 0
                continue
            scored += 1
            for k, r in _POPE_KEYS:
                assert ours[k] == pytest.approx(ref[r], abs=1e-12), (k, b)
        lmms = _pope(LmmsPOPEMetric(splits=[]), b)
        for k in ("accuracy", "precision", "recall", "f1", "yes_ratio"):
            assert lmms[k] == pytest.approx(b["lmms_eval"][k], abs=1e-12), (k, b)
    assert scored > 600


def test_pope_metrics_per_split_and_their_mean():
    b = _load("pope_cases.json")["batches"][:3]
    m = POPEMetric(pope_official)
    lm = LmmsPOPEMetric()
    for split, batch in zip(("random", "popular", "adversarial"), b):
        samples = [EvalSample(id=str(i), label=lab, category=split) for i, lab in enumerate(batch["labels"])]
        m.update(batch["texts"], samples)
        lm.update(batch["texts"], samples)
    out, lout = m.compute(), lm.compute()
    for split, batch in zip(("random", "popular", "adversarial"), b):
        if batch["llava_eval_pope"] != "ZeroDivisionError":
            assert out[f"f1/{split}"].item() == pytest.approx(batch["llava_eval_pope"]["F1 score"])
        assert lout[f"accuracy/{split}"].item() == pytest.approx(batch["lmms_eval"]["accuracy"])
    assert out["f1"].item() == pytest.approx(
        sum(out[f"f1/{s}"].item() for s in ("random", "popular", "adversarial")) / 3
    )
    n = sum(len(x["texts"]) for x in b)
    pooled = sum(x["lmms_eval"]["accuracy"] * len(x["texts"]) for x in b) / n
    assert lout["accuracy"].item() == pytest.approx(pooled)  # lmms-eval pools the splits


# -- ScienceQA ----------------------------------------------------------------------------------------


def test_scienceqa_llava_and_lmms_eval():
    cases = _load("scienceqa_cases.json")["cases"]
    _assert_all(
        ((sqa_llava(c["text"]), c["llava_parsed"], c["text"]) for c in cases), "eval_science_qa parse"
    )
    samples = [
        EvalSample(id=str(i), label="ABCDE"[c["answer"]], choices=dict.fromkeys("ABCDE"[: c["n_choices"]]))
        for i, c in enumerate(cases)
    ]
    _assert_all(
        (
            (choice_correct(c["text"], s, "llava_sqa"), c["llava_correct"], c["text"])
            for c, s in zip(cases, samples)
        ),
        "eval_science_qa correct",
    )
    _assert_all(
        (
            (float(choice_correct(c["text"], s, "lmms")), c["lmms_exact_match"], c["text"])
            for c, s in zip(cases, samples)
        ),
        "lmms-eval scienceqa",
    )


# -- MME ----------------------------------------------------------------------------------------------


def test_mme_official_calculation_and_lmms_eval():
    ref = _load("mme_cases.json")
    _assert_all(
        ((mme_official(c["text"]), c["official"], c["text"]) for c in ref["parse"]), "calculation.py parse"
    )
    _assert_all(
        ((mme_lmms(c["text"]), c["lmms_eval"], c["text"]) for c in ref["parse"]), "lmms-eval MME parse"
    )
    for run in ref["runs"]:
        official, lmms = MMEScore(mme_official), MMEScore(mme_lmms)
        preds, samples = [], []
        for task, items in run["tasks"].items():
            for image, question, gt, pred in items:
                preds.append(pred)
                samples.append(EvalSample(id=question, label=gt.lower(), category=task, group=image))
        official.update(preds, samples)
        lmms.update(preds, samples)
        out, lout = official.compute(), lmms.compute()
        for task, score in run["official_scores"].items():
            assert out[task].item() == pytest.approx(score, abs=1e-9), task
        assert out["perception"].item() == pytest.approx(run["official_perception"], abs=1e-9)
        assert out["cognition"].item() == pytest.approx(run["official_cognition"], abs=1e-9)
        assert lout["perception"].item() == pytest.approx(run["lmms_eval"]["mme_perception_score"], abs=1e-9)
        assert lout["cognition"].item() == pytest.approx(run["lmms_eval"]["mme_cognition_score"], abs=1e-9)


# -- lmms-eval RefCOCO --------------------------------------------------------------------------------


def test_lmms_eval_refcoco_boxes():
    cases = _load("lmms_refcoco_cases.json")["cases"]
    _assert_all(
        ((list(box_lenient(c["text"])), c["parsed"], c["text"]) for c in cases), "parse_float_sequence_within"
    )
    for c in cases:
        iou = box_iou(box_lenient(c["text"]), c["gt"])
        if c["iou"] == "ZeroDivisionError":
            assert iou is None, c
        else:
            assert iou == pytest.approx(float(c["iou"]), abs=1e-12, nan_ok=True), c
    m = BoxAccuracy("lenient", 0.5, inclusive=True)
    m.update(
        [c["text"] for c in cases], [EvalSample(id=str(i), box=tuple(c["gt"])) for i, c in enumerate(cases)]
    )
    want = sum(bool(c["acc"] and c["acc"]["0.5"]) for c in cases) / len(cases)
    assert m.compute()["accuracy"].item() == pytest.approx(want)


# -- Pythia-VL vs Mamba-VL (gpantaz/vl_mamba) ------------------------------------------------------------


@pytest.fixture(scope="module")
def pythia():
    return _load("pythia_vl_cases.json")


def test_pythia_vl_vqa_gqa(pythia):
    vqa = pythia["vqa"]
    _assert_all(((pv.vqa_answer(c["raw"]), c["prediction"], c["raw"]) for c in vqa), "VQAv2 answer")
    _assert_all(((pv.vqa_score(c["prediction"], c["answers"]), c["score"], c) for c in vqa), "vqa_v2_score")
    m = pv.PythiaVLVQAAccuracy()
    m.update(
        [c["raw"] for c in vqa], [EvalSample(id=str(i), answers=c["answers"]) for i, c in enumerate(vqa)]
    )
    assert m.compute()["accuracy"].item() == pytest.approx(sum(c["score"] for c in vqa) / len(vqa))
    gqa = pythia["gqa"]
    _assert_all(((pv.gqa_answer(c["raw"]), c["prediction"], c["raw"]) for c in gqa), "GQA answer")
    g = pv.PythiaVLExactMatch()
    g.update(
        [c["raw"] for c in gqa], [EvalSample(id=str(i), answers=[c["answer"]]) for i, c in enumerate(gqa)]
    )
    assert g.compute()["accuracy"].item() == pytest.approx(sum(c["score"] for c in gqa) / len(gqa))


@pytest.mark.parametrize(
    "task,parser,labels", [("vsr", pv.vsr_label, ("true", "false")), ("pope", pv.pope_label, ("yes", "no"))]
)
def test_pythia_vl_vsr_and_pope(pythia, task, parser, labels):
    for b in pythia[task]:
        if task == "vsr":
            _assert_all(((parser(r) == "true", n == 1, r) for r, n in zip(b["raws"], b["numeric"])), "VSR")
            gold = [labels[0] if lab else labels[1] for lab in b["labels"]]
        else:
            _assert_all(
                ((parser(r), "no" if p == "no" else "yes", r) for r, p in zip(b["raws"], b["predictions"])),
                "POPE",
            )
            gold = b["labels"]
        m = POPEMetric(parser, splits=[], labels=labels)
        m.update(b["raws"], [EvalSample(id=str(i), label=g) for i, g in enumerate(gold)])
        out = m.compute()
        if b["metrics"] == "ZeroDivisionError":
            continue
        for ours, theirs in (
            ("accuracy", "acc"),
            ("precision", "precision"),
            ("recall", "recall"),
            ("f1", "f1"),
        ):
            assert out[ours].item() == pytest.approx(b["metrics"][theirs], abs=1e-12)
        if task == "pope":
            assert out["yes_ratio"].item() == pytest.approx(b["metrics"]["yes_ratio"], abs=1e-12)


def test_pythia_vl_ai2d_and_visual7w(pythia):
    cases = pythia["multiple_choice"]
    _assert_all(((pv.ai2d_letter(c["raw"]), c["ai2d_prediction"], c["raw"]) for c in cases), "AI2D")
    _assert_all(((pv.visual7w_letter(c["raw"]), c["v7w_prediction"], c["raw"]) for c in cases), "Visual7W")
    for style in ("ai2d", "visual7w"):
        m = pv.PythiaVLChoiceAccuracy(style)
        m.update(
            [c["raw"] for c in cases],
            [EvalSample(id=str(i), label="ABCD"[c["answer"]]) for i, c in enumerate(cases)],
        )
        key = "ai2d_score" if style == "ai2d" else "v7w_score"
        assert m.compute()["accuracy"].item() == pytest.approx(sum(c[key] for c in cases) / len(cases))


def test_pythia_vl_refcoco(pythia):
    cases = pythia["refcoco"]
    for c in cases:
        box = pv.box_answer(c["raw"])
        if not c["pred_xyxy"]:
            assert box is None, c
        else:
            w, h = c["width"], c["height"]
            assert [box[0] * w, box[1] * h, box[2] * w, box[3] * h] == pytest.approx(
                c["pred_xyxy"], nan_ok=True
            )
    samples, hits = [], []
    for i, c in enumerate(cases):
        (w, h), t = (c["width"], c["height"]), c["target_xyxy"]
        s = EvalSample(id=str(i), box=(t[0] / w, t[1] / h, t[2] / w, t[3] / h), image_size=(w, h))
        samples.append(s)
        box = pv.box_answer(c["raw"])
        target = (s.box[0] * w, s.box[1] * h, s.box[2] * w, s.box[3] * h)  # as the metric rebuilds it
        hits.append((box is not None and pv.box_hit(box, target, (w, h)), bool(c["correct"]), c))
    _assert_all(hits, "RefCOCO compute_score")
    m = pv.PythiaVLBoxAccuracy()
    m.update([c["raw"] for c in cases], samples)
    assert m.compute()["accuracy"].item() == pytest.approx(sum(c["correct"] for c in cases) / len(cases))
    assert 0 < sum(c["correct"] for c in cases) < len(cases)


def test_pythia_vl_captions_and_prompts(pythia):
    for c in pythia["captions"]:
        assert pv.caption_answer(c["raw"], drop_newlines=True) == c["coco"]
        assert pv.caption_answer(c["raw"]) == c["nocaps"]
    for c in pythia["format_text"]:
        assert pv.format_text(c["text"]) == c["question"]
        assert pv.format_text(c["text"], capitalize=False) == c["mc_question"]
        assert pv.format_text(c["text"], punctuate=False) == c["option"]
    p = pythia["prompts"]
    for cap in p["captions"] + p["nocaps"]:
        assert [pv.format_text(r) for r in cap["references"]] == cap["formatted_references"]


def test_pythia_vl_protocol_writes_the_authors_messages(pythia):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from mmssm_lightning.constants import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("eval", overrides=["protocol=pythia_vl", "ckpt_path=x"])
    proto = {k: instantiate(v, _convert_="all") for k, v in cfg.protocol.benchmarks.items()}
    assert all(p.raw_output for p in proto.values())
    p = pythia["prompts"]
    for key, task in (("vqa", "vqav2"), ("gqa", "gqa"), ("pope", "pope")):
        for c in p[key]:
            assert proto[task].format(EvalSample(id="q", question=c["question"])) == c["message"]
    for c in p["textvqa"]:
        s = EvalSample(id="q", question=c["question"], ocr=c["ocr_tokens"])
        assert proto["textvqa"].format(s) == c["message"]
    for c in p["vsr"]:
        assert proto["vsr_random"].format(EvalSample(id="q", question=c["caption"])) == c["message"]
    for c in p["ai2d"]:
        ocr = c["ocr_text"].split("\n")[1:] or None
        s = EvalSample(id="q", question=c["question"], choices=dict(zip("ABCD", c["options"])), ocr=ocr)
        assert proto["ai2d"].format(s) == c["message"]
    for c in p["refcoco"]:
        for task in ("refcoco_testA", "refcoco_plus_testB", "refcocog_test"):
            assert proto[task].format(EvalSample(id="q", question=c["phrase"])) == c["message"]
    for task in ("coco_captions", "nocaps", "textcaps"):
        assert proto[task].format(EvalSample(id="q")) == p["captions"][0]["message"]
