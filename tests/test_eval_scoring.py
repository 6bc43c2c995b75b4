"""Every metric and parser against the official scorers' outputs (tests/fixtures/eval)."""

import json
from pathlib import Path

import pytest

from mmssm_lightning.eval.captions import bleu, cider_d
from mmssm_lightning.eval.metrics import (
    BoxAccuracy,
    CaptionScores,
    ExactMatch,
    LabelAccuracy,
    MMBenchCircular,
    MMEScore,
    MultipleChoiceAccuracy,
    POPEMetric,
    TallyQAAccuracy,
    VQAAccuracy,
    vqa_accuracy,
)
from mmssm_lightning.eval.normalize import evalai_process, ptb_tokenize
from mmssm_lightning.eval.parsing import (
    box_iou,
    box_lenient,
    box_strict,
    can_infer,
    mme_lmms,
    mme_official,
    pope_exact,
    pope_official,
    sqa_llava,
    sqa_lmms_correct,
    tally_int,
    true_false,
)
from mmssm_lightning.eval.sample import EvalSample

FIX = Path(__file__).parent / "fixtures" / "eval"
VQA = json.loads((FIX / "vqa_accuracy_cases.json").read_text())
OTHER = json.loads((FIX / "other_cases.json").read_text())
CIDER = json.loads((FIX / "cider_cases.json").read_text())
TALLY = json.loads((FIX / "tallyqa_parse_cases.json").read_text())
PTB = json.loads((FIX / "ptb_tokenizer_cases.json").read_text())


@pytest.mark.parametrize(
    "mode,column",
    [
        ("official", "official_raw"),
        ("evalai", "official_with_evalai_pred"),
        ("m4c", "m4c_textvqa"),
        ("lmms", "lmms_eval_vqav2"),
        ("tri", "tri_vqav2"),
        ("vlmevalkit", "vlmevalkit"),
    ],
)
def test_vqa_accuracy_matches_each_scorer(mode, column):
    for case in VQA:
        if mode == "m4c" and len(case["gt_answers"]) != 10:
            # m4c asserts 10 answers (the hand-made value is lmms-eval textvqa's, which does not)
            with pytest.raises(ValueError, match="10 answers"):
                vqa_accuracy(case["pred"], case["gt_answers"], mode)
            assert vqa_accuracy(case["pred"], case["gt_answers"], "lmms_evalai") == pytest.approx(
                case[column]
            )
            continue
        assert vqa_accuracy(case["pred"], case["gt_answers"], mode) == pytest.approx(
            case[column], abs=1e-9
        ), case["name"]


def test_vqa_metric_means_and_groups():
    m = VQAAccuracy("evalai", groups=["yes/no", "number"])
    samples = [
        EvalSample(id=c["name"], answers=c["gt_answers"], category="number" if i % 2 else "yes/no")
        for i, c in enumerate(VQA)
    ]
    m.update([c["pred"] for c in VQA], samples)
    out = m.compute()
    want = [c["official_with_evalai_pred"] for c in VQA]
    assert out["accuracy"].item() == pytest.approx(sum(want) / len(want))
    assert out["accuracy/number"].item() == pytest.approx(sum(want[1::2]) / len(want[1::2]))
    with pytest.raises(ValueError, match="normalization"):
        VQAAccuracy("exact")


def test_evalai_processing_and_ptb_tokenizer():
    for case in VQA:
        assert evalai_process(case["pred"]) == case["evalai_processed_pred"], case["name"]
    for case in TALLY:
        assert evalai_process(case["text"]) == case["vqa_norm"], case["text"]
    for case in PTB:
        assert ptb_tokenize(case["raw"]) == case["java_ptb"], case["raw"]
    for key in CIDER["gts_raw"]:
        assert [ptb_tokenize(r) for r in CIDER["gts_raw"][key]] == CIDER["gts_ptb"][key]
        assert [ptb_tokenize(r) for r in CIDER["res_raw"][key]] == CIDER["res_ptb"][key]


def test_cider_d_and_bleu_match_pycocoevalcap():
    score, per_image = cider_d(CIDER["gts_ptb"], CIDER["res_ptb"])
    assert score == pytest.approx(CIDER["CIDEr_pycocoevalcap"], abs=1e-12)
    assert per_image == pytest.approx(CIDER["CIDEr_per_image"], abs=1e-12)
    assert bleu(CIDER["gts_ptb"], CIDER["res_ptb"])[0] == pytest.approx(
        CIDER["BLEU_1_4_pycocoevalcap"], abs=1e-12
    )
    assert cider_d(CIDER["gts_raw"], CIDER["res_raw"])[0] == pytest.approx(
        CIDER["CIDEr_without_tokenisation"], abs=1e-12
    )
    one = {"1": CIDER["gts_ptb"]["1"]}
    assert cider_d(one, {"1": CIDER["res_ptb"]["1"]})[0] == pytest.approx(
        CIDER["CIDEr_single_image_corpus"], abs=1e-12
    )
    first = {k: [v[0]] for k, v in CIDER["gts_ptb"].items()}
    assert cider_d(CIDER["gts_ptb"], first)[0] == pytest.approx(
        CIDER["CIDEr_hyp_equals_first_ref"], abs=1e-12
    )


def test_caption_metric_tokenises_and_hashes_to_the_same_scores():
    m = CaptionScores()
    keys = list(CIDER["res_raw"])
    m.update(
        [CIDER["res_raw"][k][0] for k in keys], [EvalSample(id=k, answers=CIDER["gts_raw"][k]) for k in keys]
    )
    out = m.compute()
    assert out["CIDEr"].item() == pytest.approx(CIDER["CIDEr_pycocoevalcap"], abs=1e-9)
    assert [out[f"BLEU-{k}"].item() for k in range(1, 5)] == pytest.approx(
        CIDER["BLEU_1_4_pycocoevalcap"], abs=1e-9
    )


def test_pope_parsers_and_metrics():
    for case in OTHER["pope_parse"]:
        assert pope_official(case["text"]) == case["official"], case["text"]
        assert pope_exact(case["text"]) == case["lmms_eval_exact"], case["text"]
    ex = OTHER["pope_metrics_example"]
    assert [pope_official(t) for t in ex["raw_outputs"]] == ex["parsed"]
    m = POPEMetric(pope_official)
    m.update(ex["raw_outputs"], [EvalSample(id=str(i), label=lab) for i, lab in enumerate(ex["labels"])])
    out = m.compute()
    for key, want in (
        ("accuracy", "acc"),
        ("precision", "precision"),
        ("recall", "recall"),
        ("f1", "f1"),
        ("yes_ratio", "yes_ratio"),
    ):
        assert out[key].item() == pytest.approx(ex["metrics"][want])
    # per split, and the mean over splits
    m = POPEMetric(pope_official)
    m.update(
        ex["raw_outputs"] * 2,
        [
            EvalSample(id=str(i), label=lab, category=split)
            for split in ("random", "popular")
            for i, lab in enumerate(ex["labels"])
        ],
    )
    out = m.compute()
    assert out["f1/random"].item() == out["f1/popular"].item() == pytest.approx(ex["metrics"]["f1"])
    assert out["f1"].item() == pytest.approx(ex["metrics"]["f1"])


def test_mme_parsers_and_scores():
    for case in OTHER["mme_parse"]:
        assert mme_official(case["text"]) == case["official_calculation_py"], case["text"]
        assert mme_lmms(case["text"]) == case["lmms_eval"], case["text"]
    ex = OTHER["mme_subtask_example"]
    m = MMEScore(parser=lambda t: t)
    preds, samples = [], []
    for image, pair in enumerate(ex["pairs_(gt,parsed)"]):
        for gt, parsed in pair:
            preds.append(parsed)
            samples.append(EvalSample(id=f"{image}", label=gt, category="existence", group=str(image)))
    m.update(preds, samples)
    out = m.compute()
    assert out["existence/acc"].item() == pytest.approx(ex["acc"])
    assert out["existence/acc_plus"].item() == pytest.approx(ex["acc_plus"])
    assert out["existence"].item() == pytest.approx(ex["score"])
    assert out["perception"].item() == pytest.approx(ex["score"]) and "cognition" not in out


def test_multiple_choice_rules():
    for case in OTHER["scienceqa_parse"]:
        assert sqa_llava(case["text"]) == case["llava_eval_science_qa"], case["text"]
        assert float(sqa_lmms_correct(case["text"], "B")) == case["lmms_eval_correct_if_target_B"], case[
            "text"
        ]
    choices = OTHER["mmbench_can_infer"]["choices"]
    for case in OTHER["mmbench_can_infer"]["cases"]:
        assert can_infer(case["text"], choices) == case["vlmevalkit_can_infer"], case["text"]
    m = MultipleChoiceAccuracy("llava_sqa")
    texts = [c["text"] for c in OTHER["scienceqa_parse"]]
    m.update(texts, [EvalSample(id=str(i), label="B", choices=dict(choices)) for i in range(len(texts))])
    assert m.compute()["accuracy"].item() == pytest.approx(
        sum(sqa_llava(t) == "B" for t in texts) / len(texts)
    )


def test_mmbench_circular():
    ex = OTHER["mmbench_circular_example"]
    m = MMBenchCircular()
    choices = {"A": "w", "B": "x", "C": "y", "D": "z"}
    m.update(
        [r["prediction"] for r in ex["rows"]],
        [
            EvalSample(id=str(r["index"]), label=r["answer"], choices=choices, index=r["index"])
            for r in ex["rows"]
        ],
    )
    out = m.compute()
    assert out["circular_accuracy"].item() == ex["hit"]
    assert out["vanilla_accuracy"].item() == pytest.approx(ex["vanilla_acc_all_rows"])
    assert out["vanilla_accuracy/rotation0"].item() == pytest.approx(ex["vanilla_acc_circ0"])


def test_tallyqa_parsing_and_accuracy():
    for case in TALLY:
        assert tally_int(case["text"]) == case["vlmevalkit_int"], case["text"]
    m = TallyQAAccuracy("vlmevalkit")
    m.update(
        ["3", "There are 3 dogs.", "twenty-one", "none"],
        [
            EvalSample(id="a", label="3", category="simple"),
            EvalSample(id="b", label="3", category="complex"),
            EvalSample(id="c", label="21", category="complex"),
            EvalSample(id="d", label="0", category="simple"),
        ],
    )
    out = m.compute()
    assert out["accuracy/simple"].item() == 0.5 and out["accuracy/complex"].item() == 0.5
    vqa = TallyQAAccuracy("vqa")
    vqa.update(["none", "three"], [EvalSample(id="a", label="0"), EvalSample(id="b", label="3")])
    assert vqa.compute()["accuracy"].item() == 1.0


def test_box_parsers_iou_and_threshold_variants():
    gt = OTHER["refcoco_boxes"]["gt_xyxy_norm"]
    for case in OTHER["refcoco_boxes"]["cases"]:
        strict = box_strict(case["text"])
        assert (list(strict) if strict else None) == case["tri_parsed"], case["text"]
        if strict is not None:
            assert box_iou(strict, gt) == pytest.approx(case["tri_iou"])
        lenient = box_lenient(case["text"])
        assert list(lenient) == case["lmms_parsed"], case["text"]
        iou = box_iou(lenient, gt)
        assert (
            iou is None if case["lmms_iou"] == "ZeroDivisionError" else iou == pytest.approx(case["lmms_iou"])
        )
    m = BoxAccuracy("strict")
    texts = [c["text"] for c in OTHER["refcoco_boxes"]["cases"]]
    m.update(texts, [EvalSample(id=str(i), box=tuple(gt)) for i in range(len(texts))])
    assert m.compute()["accuracy"].item() == pytest.approx(
        sum(c["tri_correct"] for c in OTHER["refcoco_boxes"]["cases"]) / len(texts)
    )
    # IoU exactly 0.5: a hit for Acc@IoU>=0.5, a miss for Pythia-VL's > 0.5
    half = [EvalSample(id="h", box=(0.0, 0.0, 1.0, 1.0))]
    for inclusive, want in ((True, 1.0), (False, 0.0)):
        b = BoxAccuracy("strict", 0.5, inclusive)
        b.update(["[0.0, 0.0, 0.5, 1.0]"], half)
        assert b.compute()["accuracy"].item() == want


def test_exact_match_and_label_accuracy():
    m = ExactMatch("llava")
    m.update(
        ["Yes.", "left", "The dog"],
        [EvalSample(id=str(i), answers=[a]) for i, a in enumerate(["yes", "right", "dog"])],
    )
    assert m.compute()["accuracy"].item() == pytest.approx(1 / 3)
    v = ExactMatch("vqa")
    v.update(["The dog"], [EvalSample(id="0", answers=["dog"])])
    assert v.compute()["accuracy"].item() == 1.0
    t = LabelAccuracy(true_false)
    t.update(
        ["True.", "no", "maybe"],
        [EvalSample(id=str(i), label=lab) for i, lab in enumerate(["true", "false", "false"])],
    )
    assert t.compute()["accuracy"].item() == pytest.approx(2 / 3)


def _sync_worker(rank, world, port, queue):
    import torch.distributed as dist

    try:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
        keys = list(CIDER["res_raw"])
        vqa, cap = VQAAccuracy("evalai"), CaptionScores()
        vqa.update(
            [c["pred"] for c in VQA[rank::world]],
            [EvalSample(id=c["name"], answers=c["gt_answers"]) for c in VQA[rank::world]],
        )
        mine = keys[rank::world]
        cap.update(
            [CIDER["res_raw"][k][0] for k in mine],
            [EvalSample(id=k, answers=CIDER["gts_raw"][k]) for k in mine],
        )
        queue.put((rank, vqa.compute()["accuracy"].item(), cap.compute()["CIDEr"].item()))
        dist.destroy_process_group()
    except Exception as e:  # surface the worker's error in the test, not a queue timeout
        queue.put((rank, repr(e), None))


@pytest.mark.slow
def test_metrics_sync_across_ranks():
    """Two gloo ranks, each with half the samples, compute the full-corpus numbers (CIDEr's document
    frequencies need every rank's references)."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_sync_worker, args=(r, 2, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    want_vqa = sum(c["official_with_evalai_pred"] for c in VQA) / len(VQA)
    for _, acc, cider in results:
        assert cider is not None, acc
        assert acc == pytest.approx(want_vqa)
        assert cider == pytest.approx(CIDER["CIDEr_pycocoevalcap"], abs=1e-9)
