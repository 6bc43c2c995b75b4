"""mmssm-eval under the cobra protocol (Prismatic's harness) on every benchmark it defines, on CPU:
a tiny trained checkpoint, the synthetic images in each benchmark's official file format; each
reported number is recomputed from the predictions file with the harness's rules."""

import json
import math
import shutil

import numpy as np
import pytest
from hydra.utils import instantiate

from mmssm_lightning.eval.evaluate import evaluate
from mmssm_lightning.eval.scorers import tri
from tests.test_eval_end_to_end import _eval_cfg, checkpoint, synth  # noqa: F401  (module fixtures)


def _write_more_formats(root):
    """GQA, VizWiz, TextVQA (+ OCR), VSR, TallyQA and AI2D files over the synthetic COCO images."""
    names = sorted(p.name for p in (root / "coco/val2014").glob("*.jpg"))
    stems = [n.removesuffix(".jpg") for n in names]
    gqa = {
        str(i): {
            "imageId": s,
            "question": "Is it red?",
            "answer": ["yes", "t-shirt"][i % 2],
            "types": {"structural": ["verify", "query"][i % 2]},
        }
        for i, s in enumerate(stems)
    }
    (root / "gqa").mkdir()
    (root / "gqa/questions.json").write_text(json.dumps(gqa))
    vizwiz = [
        {
            "image": n,
            "question": "What is this?",
            "answers": [
                {"answer": a} for a in (["unanswerable"] * 10 if i % 2 else ["circle"] * 7 + ["round"] * 3)
            ],
            "answerable": 0 if i % 2 else 1,
            "answer_type": "unanswerable" if i % 2 else "other",
        }
        for i, n in enumerate(names)
    ]
    (root / "vizwiz").mkdir()
    (root / "vizwiz/val.json").write_text(json.dumps(vizwiz))
    (root / "textvqa").mkdir()
    (root / "textvqa/val.json").write_text(
        json.dumps(
            {
                "data": [
                    {
                        "question_id": i,
                        "question": "What does it say?",
                        "image_id": s,
                        "answers": ["stop"] * 10,
                    }
                    for i, s in enumerate(stems)
                ]
            }
        )
    )
    (root / "textvqa/ocr.json").write_text(
        json.dumps({"data": [{"image_id": s, "ocr_tokens": ["stop", "sign"]} for s in stems]})
    )
    (root / "vsr").mkdir()
    (root / "vsr/test.jsonl").write_text(
        "\n".join(
            json.dumps(
                {
                    "image": n,
                    "caption": "The circle is left of the square.",
                    "label": i % 2,
                    "relation": "left of",
                }
            )
            for i, n in enumerate(names)
        )
    )
    (root / "tallyqa").mkdir()
    (root / "tallyqa/test.json").write_text(
        json.dumps(
            [
                {
                    "image": n,
                    "question": "How many shapes?",
                    "answer": i % 3 + 1,
                    "issimple": i % 2 == 0,
                    "question_id": i,
                }
                for i, n in enumerate(names)
            ]
        )
    )
    ai2d = root / "ai2d"
    (ai2d / "questions").mkdir(parents=True)
    (ai2d / "images").mkdir()
    for i, n in enumerate(names):
        shutil.copy(root / "coco/val2014" / n, ai2d / "images" / f"{i}.png")
        q = {"answerTexts": ["red", "blue", "green", "gray"], "correctAnswer": i % 4, "questionId": f"{i}-0"}
        (ai2d / "questions" / f"{i}.png.json").write_text(
            json.dumps({"imageName": f"{i}.png", "questions": {"Which colour?": q}})
        )
    (ai2d / "test_ids.csv").write_text("0\n2\n")


@pytest.mark.slow
def test_cobra_protocol_end_to_end(tmp_path, checkpoint, synth):  # noqa: F811
    if not (synth / "gqa").exists():
        _write_more_formats(synth)
    coco = synth / "coco/val2014"
    names = [
        "vqav2",
        "gqa",
        "vizwiz",
        "textvqa",
        "textvqa_pure",
        "vsr",
        "pope",
        "tallyqa",
        "ai2d_all",
        "refcoco_val",
    ]
    cfg = _eval_cfg(tmp_path, checkpoint, synth, "cobra", names)
    overrides = {
        "gqa": {"questions": synth / "gqa/questions.json", "images": coco},
        "vizwiz": {"annotations": synth / "vizwiz/val.json", "images": coco},
        "textvqa": {
            "annotations": synth / "textvqa/val.json",
            "ocr": synth / "textvqa/ocr.json",
            "images": coco,
        },
        "vsr": {"file": synth / "vsr/test.jsonl", "images": coco},
        "tallyqa": {"file": synth / "tallyqa/test.json", "images": coco},
        "ai2d_all": {"root": synth / "ai2d", "test_ids": synth / "ai2d/test_ids.csv"},
        "refcoco_val": {
            "refs": synth / "refcoco/refs(unc).p",
            "instances": synth / "refcoco/instances.json",
            "images": coco,
            "split": "testA",
        },
    }
    for bench, kv in overrides.items():
        for k, v in kv.items():
            cfg.benchmarks[bench][k] = str(v)
    for name in names:  # short generations keep the CPU run quick; the protocol itself says 128
        if cfg.protocol.benchmarks[name].get("scoring", "generate") == "generate":
            cfg.protocol.benchmarks[name].max_new_tokens = 8
    report = evaluate(cfg)["benchmarks"]
    out = tmp_path / "out"

    def preds(name):
        return {
            r["id"]: r for r in map(json.loads, (out / f"{name}.predictions.jsonl").read_text().splitlines())
        }

    def samples(name):
        return {s.id: s for s in instantiate(cfg.benchmarks[name], _convert_="all").samples()}

    # generated answers, scored again with the harness's rules
    for name, score in (
        ("vqav2", tri.vqav2_score),
        ("textvqa", tri.textvqa_score),
        ("textvqa_pure", tri.textvqa_score),
    ):
        p, s = preds(name), samples(name)
        want = np.mean([score(p[i]["prediction"], s[i].answers) for i in s])
        assert report[name]["metrics"]["accuracy"] == pytest.approx(want, abs=1e-12), name
    p, s = preds("gqa"), samples("gqa")
    assert report["gqa"]["metrics"]["accuracy"] == pytest.approx(
        np.mean([tri.gqa_prediction(p[i]["prediction"]) == s[i].answers[0] for i in s]), abs=1e-12
    )
    p, s = preds("vizwiz"), samples("vizwiz")
    said = [tri.vizwiz_unanswerable(p[i]["prediction"]) for i in s]
    truth = [s[i].label == "0" for i in s]
    m = report["vizwiz"]["metrics"]
    assert m["unanswerable_ap"] == pytest.approx(tri.binary_average_precision(said, truth), abs=1e-12)
    assert {"accuracy", "accuracy/answerable", "accuracy/unanswerable", "unanswerable_f1"} <= set(m)
    p, s = preds("refcoco_val"), samples("refcoco_val")
    hits = [
        (b := tri.parse_bbox(p[i]["prediction"])) is not None
        and tri.box_iou(b, tri.round_box(s[i].box)) >= 0.5
        for i in s
    ]
    assert report["refcoco_val"]["metrics"]["accuracy"] == pytest.approx(np.mean(hits), abs=1e-12)

    # likelihood: the candidates' renormalised probabilities are written and are what was scored
    for name, classes, splits in (
        ("pope", ["yes", "no"], ["adversarial", "popular", "random"]),
        ("vsr", ["true", "false"], []),
        ("tallyqa", [str(i) for i in range(16)], ["simple", "complex"]),
        ("ai2d_all", ["A", "B", "C", "D"], ["val", "test"]),
    ):
        p, s = preds(name), samples(name)
        # the predictions file keeps each candidate's log-probability: renormalised over the
        # candidates, they are the probabilities the metrics scored
        logp = np.array([[p[i]["scores"][c] for c in classes] for i in s])
        probs = np.exp(logp - logp.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        labels = np.array([classes.index(s[i].label) for i in s])
        assert probs.shape == (len(s), len(classes)) and np.allclose(probs.sum(1), 1)
        assert [p[i]["prediction"] for i in s] == [classes[j] for j in probs.argmax(1)]
        m = report[name]["metrics"]
        acc = {
            sp: np.mean([probs[k].argmax() == labels[k] for k, i in enumerate(s) if s[i].category == sp])
            for sp in splits
        }
        assert all(m[f"accuracy/{sp}"] == pytest.approx(a, abs=1e-12) for sp, a in acc.items()), name
        want = np.mean(list(acc.values())) if name == "pope" else np.mean(probs.argmax(1) == labels)
        assert m["accuracy"] == pytest.approx(want, abs=1e-12), name
        if len(classes) == 2:
            want = (
                tri.binary_roc_auc(probs[:, 0], labels == 0),
                tri.binary_average_precision(probs[:, 0], labels == 0),
            )
        else:
            want = tri.ovo_roc_auc(probs, labels), tri.macro_average_precision(probs, labels)
        for got, w in zip((m["auc_roc"], m["auc_pr"]), want):
            assert (math.isnan(got) and math.isnan(w)) or got == pytest.approx(w, abs=1e-12), name
    # TallyQA's 16 counts are not all among 5 samples: undefined, as scikit-learn has it; AI2D's 4 are
    assert math.isnan(report["tallyqa"]["metrics"]["auc_roc"]) and not math.isnan(
        report["ai2d_all"]["metrics"]["auc_roc"]
    )
    assert report["ai2d_all"]["n"] == 5 and {s.category for s in samples("ai2d_all").values()} == {
        "val",
        "test",
    }
