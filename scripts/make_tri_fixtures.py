"""Write tests/fixtures/eval/tri_*.json: randomised and adversarial inputs with the outputs of
TRI-ML/vlm-evaluation's own scoring code (the harness Cobra used), for tests/test_eval_tri.py.

    python scripts/make_tri_fixtures.py --harness /path/to/TRI-ML/vlm-evaluation

Needs a checkout of the harness and scikit-learn (its AUC / F1 calls); without them it says so and
exits 0. Nothing of the harness is copied: its scoring modules are imported from the checkout, and
the scorer classes / functions of its task files are executed from their source there (the task
modules themselves import torch, accelerate and torchvision, which scoring does not need).
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import os
import random
import re
import string
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "eval"


# -- loading the harness ---------------------------------------------------------------------------


def _module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class _Overwatch:
    def info(self, *args, **kwargs) -> None:
        pass


def _defs(path: Path, names: set[str], namespace: dict) -> dict:
    """Execute the named top-level functions / classes of a harness file, from its source."""
    tree = ast.parse(path.read_text())
    body = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name in names]
    missing = names - {n.name for n in body}
    if missing:
        raise SystemExit(f"{path}: no {sorted(missing)} (another harness version?)")
    exec(compile(ast.Module(body=body, type_ignores=[]), str(path), "exec"), namespace)
    return namespace


def _namespace() -> dict:
    import typing

    import numpy as np
    from sklearn.metrics import average_precision_score, roc_auc_score

    ns = {k: getattr(typing, k) for k in ("Dict", "List", "Optional", "Tuple", "Callable", "Any")}
    ns.update(
        np=np,
        json=json,
        os=os,
        re=re,
        ast=ast,
        string=string,
        subprocess=subprocess,
        Path=Path,
        overwatch=_Overwatch(),
        roc_auc_score=roc_auc_score,
        average_precision_score=average_precision_score,
        tqdm=lambda it, *a, **k: it,
    )
    return ns


# -- random text -----------------------------------------------------------------------------------

BASES = [
    "yes", "no", "Yes", "NO", "2", "two", "3", "three", "10", "ten", "none", "zero", "one", "0",
    "red", "blue", "light blue", "t-shirt", "tshirt", "t shirt", "teddy bear", "man's", "mans",
    "men", "dont", "don't", "isnt", "whats", "what's", "Im", "yall'll", "oclock", "o'clock",
    "3.5", "1,000", "1000", "1, 000", "5.", "5", ".5", "a dog", "the cat", "an apple", "A Dog",
    "café", "naïve", "über", "’s", "it’s", "cat/dog", "cat / dog", "left-hand", "x-ray", "e.g.",
    "u.s.a.", "mr. smith", "50%", "$5", "#1", "@home", "(none)", "[1]", "a", "the", "an",
    "unanswerable", "unsuitable", "Unanswerable", "UNANSWERABLE", "unanswerable.", "couldnt",
    "couldn'tve", "hadn'tve", "weve", "wheres", "whove", "wont", "won't", "youre", "can't",
    "new york", "New York City", "12:30", "1:00 pm", "10 feet", "2010", "#", "-", "", " ",
    "hot dog", "hot-dog", "hotdog", "baseball bat", "stop sign", "frisbee", "nike", "Nike!",
    "coca cola", "coca-cola", "7 up", "7-up", "8;9", "a_b", "a+b", "x=y", "<3", ">_<", "`tick`",
    "\"quoted\"", "{brace}", "back\\slash", "?", "!", "wait...", "yes, sir", "no; never",
]  # fmt: skip
PUNCT = list(string.punctuation) + ["’", "“", "”", "—", "…", "«", "»", "¿", "¡"]


def noisy(rng: random.Random, text: str, strength: float = 0.5) -> str:
    """One random perturbation chain of the kind model outputs and annotations show."""
    t = text
    if rng.random() < strength * 0.4:
        t = rng.choice([t.upper(), t.title(), t.capitalize(), t.lower()])
    if rng.random() < strength * 0.3:
        t = rng.choice(["a ", "an ", "the ", "The ", "A "]) + t
    if rng.random() < strength * 0.3:
        t = t + rng.choice([".", "!", "?", ",", ".", " .", "..", ":", ";"])
    if rng.random() < strength * 0.25 and t:
        i = rng.randrange(len(t) + 1)
        t = t[:i] + rng.choice(PUNCT) + t[i:]
    if rng.random() < strength * 0.15:
        t = rng.choice(["\n", "\t", "  ", " "]) + t + rng.choice(["\n", "\t", " ", ""])
    if rng.random() < strength * 0.1:
        t = t.replace(" ", rng.choice(["\n", "\t", "  ", "-"]))
    if rng.random() < strength * 0.1:
        t = t + " " + rng.choice(BASES)
    if rng.random() < 0.01:
        t = t + "." * rng.randint(30, 40) + " 1.5"  # vqaEval's period regex removes at most 32
    if rng.random() < 0.01:
        t = "1,5 " + t  # digit-comma-digit: punctuation is deleted instead of spaced
    return t


def answer_set(rng: random.Random, n: int = 10, clean: bool = False) -> tuple[str, list[str]]:
    """A "true" base and n annotator answers around it."""
    base = rng.choice(BASES)
    others = [rng.choice(BASES) for _ in range(rng.randint(0, 3))]
    answers = []
    for _ in range(n):
        a = base if rng.random() < 0.6 or not others else rng.choice(others)
        answers.append(a if clean or rng.random() < 0.6 else noisy(rng, a, 0.5))
    return base, answers


def prediction(rng: random.Random, base: str) -> str:
    return noisy(rng, base if rng.random() < 0.7 else rng.choice(BASES), 0.8)


# -- VQAv2 -----------------------------------------------------------------------------------------


def vqav2_cases(root: Path, rng: random.Random, runs: int, per_run: int) -> dict:
    ev = _module(root / "vlm_eval/util/evaluation/vqav2/eval.py", "tri_vqav2_eval")
    ev.tqdm = lambda it, *a, **k: it
    out = []
    for r in range(runs):
        questions, annotations, results, cases = [], [], [], []
        for i in range(per_run):
            qid = r * per_run + i
            base, answers = answer_set(rng)
            pred = prediction(rng, base)
            atype = rng.choice(["yes/no", "number", "other"])
            questions.append({"question_id": qid, "image_id": qid, "question": "q"})
            annotations.append(
                {
                    "question_id": qid,
                    "image_id": qid,
                    "question_type": "what",
                    "answer_type": atype,
                    "answers": [
                        {"answer": a, "answer_confidence": "yes", "answer_id": k + 1}
                        for k, a in enumerate(answers)
                    ],
                }
            )
            results.append({"question_id": qid, "answer": pred})
            cases.append({"pred": pred, "answers": answers, "answer_type": atype})
        meta = {"task_type": "Open-Ended", "data_type": "mscoco", "data_subtype": "val2014", "license": {}}
        with tempfile.TemporaryDirectory() as tmp:
            q, a, p = Path(tmp, "q.json"), Path(tmp, "a.json"), Path(tmp, "p.json")
            q.write_text(json.dumps({**meta, "questions": questions}))
            a.write_text(json.dumps({"annotations": annotations}))
            p.write_text(json.dumps(results))
            index = ev.VQAIndex(q, a)
            scorer = ev.VQAEvaluator(index, index.load_result_file(result_file=p, question_file=q))
            scorer.evaluate()
        for c, qq in zip(cases, questions):
            c["score"] = scorer.eval_qa[qq["question_id"]]
        out.append(
            {
                "cases": cases,
                "accuracy": scorer.accuracy["overall"],
                "by_answer_type": scorer.accuracy["answer_type"],
            }
        )
    return {"runs": out}


# -- VizWiz ----------------------------------------------------------------------------------------


def vizwiz_cases(root: Path, rng: random.Random, runs: int, per_run: int) -> dict:
    ev = _module(root / "vlm_eval/util/evaluation/vizwiz/eval.py", "tri_vizwiz_eval")
    ns = _namespace()
    ns["VQAEval"] = ev.VQAEval
    _defs(root / "vlm_eval/tasks/harnesses/vizwiz.py", {"VizWizScorer"}, ns)
    out = []
    for _ in range(runs):
        unans_rate = rng.choice([0.0, 0.1, 0.3, 0.5])  # 0.0: nothing predicted unanswerable
        pairs, cases = {}, []
        while True:
            pairs, cases = {}, []
            for i in range(per_run):
                answerable = int(rng.random() > 0.3)
                if answerable:
                    base, answers = answer_set(rng, clean=rng.random() < 0.5)
                else:
                    base = "unanswerable"
                    answers = ["unanswerable"] * rng.randint(5, 10)
                    answers += [rng.choice(BASES) for _ in range(10 - len(answers))]
                if unans_rate and rng.random() < unans_rate:
                    pred = noisy(rng, rng.choice(["unanswerable", "Unanswerable", "unanswerable."]), 0.3)
                else:
                    pred = prediction(rng, base)
                    if not unans_rate and "unanswerable" in pred.lower():
                        pred = "no"
                qa = [{"answer": a, "answer_confidence": "yes"} for a in answers]
                pairs[i] = {
                    "question_id": i,
                    "question": "q",
                    "model_output": pred,
                    "ground_truth_answer": qa,
                    "answerable": answerable,
                }
                cases.append({"pred": pred, "answers": answers, "answerable": answerable})
            if 0 < sum(c["answerable"] for c in cases) < per_run:  # the harness divides by both subsets
                break
        scorer = ns["VizWizScorer"]("vizwiz", Path("."), pairs, Path("unused"))
        metrics = scorer.score("fixture")
        per_q = ev.VQAEval(scorer.gts, scorer.res, n=2)
        per_q.evaluate()
        for i, c in enumerate(cases):
            c["score_rounded"] = per_q.evalQA[i]
        out.append({"cases": cases, "metrics": metrics})
    return {"runs": out}


# -- TextVQA ---------------------------------------------------------------------------------------


def textvqa_cases(root: Path, rng: random.Random, runs: int, per_run: int) -> dict:
    m4c = _module(root / "vlm_eval/util/evaluation/textvqa/m4c_evaluators.py", "tri_m4c")
    ns = _namespace()
    ns["TextVQAAccuracyEvaluator"] = m4c.TextVQAAccuracyEvaluator
    _defs(root / "vlm_eval/tasks/harnesses/textvqa.py", {"TextVQAScorer"}, ns)
    out = []
    for _ in range(runs):
        pairs, annotations, cases = {}, {}, []
        for i in range(per_run):
            base, answers = answer_set(rng)
            ocr, pure = prediction(rng, base), prediction(rng, base)
            annotations[str(i)] = {"answers": answers}
            pairs[i] = {"question_id": i, "model_output_ocr": ocr, "model_output_no_ocr": pure}
            one = m4c.TextVQAAccuracyEvaluator()
            cases.append(
                {
                    "answers": answers,
                    "pred_ocr": ocr,
                    "pred_pure": pure,
                    "score_ocr": one.eval_pred_list([{"pred_answer": ocr, "gt_answers": answers}]),
                    "score_pure": one.eval_pred_list([{"pred_answer": pure, "gt_answers": answers}]),
                }
            )
        with tempfile.TemporaryDirectory() as tmp:
            ann = Path(tmp, "annotations.json")
            ann.write_text(json.dumps(annotations))
            metrics = ns["TextVQAScorer"]("text-vqa", Path(tmp), pairs, ann).score("fixture")
        out.append({"cases": cases, "metrics": metrics})
    return {"runs": out}


# -- GQA -------------------------------------------------------------------------------------------


def gqa_cases(root: Path, rng: random.Random, runs: int, per_run: int) -> dict:
    ns = _namespace()
    _defs(root / "vlm_eval/tasks/harnesses/gqa.py", {"GQAScorer"}, ns)
    out = []
    for r in range(runs):
        questions, pairs, cases = {}, {}, []
        for i in range(per_run):
            qid = str(r * per_run + i)
            gold = rng.choice(BASES).lower().strip() or "yes"
            if rng.random() < 0.2:
                gold = rng.choice(["t-shirt", "tshirt", "man's", "3.5", "x-ray", "coca-cola", "mr. smith"])
            pred = noisy(rng, gold if rng.random() < 0.7 else rng.choice(BASES), 0.8)
            structural = rng.choice(["query", "verify", "logical", "choose", "compare"])
            questions[qid] = {
                "question": "what is it",
                "answer": gold,
                "isBalanced": True,
                "semantic": [],
                "types": {"structural": structural, "semantic": "obj", "detailed": "x"},
                "groups": {"global": "g", "local": None},
            }
            pairs[qid] = {"question_id": int(qid), "model_output": pred}
            cases.append({"pred": pred, "answer": gold, "structural": structural})
        with tempfile.TemporaryDirectory() as tmp:
            qfile = Path(tmp, "questions.json")
            qfile.write_text(json.dumps(questions))
            cwd = os.getcwd()
            os.chdir(root)  # the scorer runs `python vlm_eval/util/evaluation/gqa/eval.py`
            try:
                scorer = ns["GQAScorer"]("gqa", Path(tmp), pairs, qfile)
                metrics = scorer.score("fixture")
            finally:
                os.chdir(cwd)
            blob = Path(tmp, "gqa-eval-output.txt").read_text()
            cleaned = {
                str(p["questionId"]): p["prediction"]
                for p in json.loads(Path(tmp, "gqa-formatted-predictions.json").read_text())
            }
        for qid, c in zip(questions, cases):
            c["cleaned"] = cleaned[qid]
        binary = float(re.search(r"Binary: (.*)%", blob).group(1))
        open_ = float(re.search(r"Open: (.*)%", blob).group(1))
        out.append({"cases": cases, "accuracy": metrics["accuracy"], "binary": binary, "open": open_})
    return {"runs": out}


# -- RefCOCO ---------------------------------------------------------------------------------------


def _box_strings(rng: random.Random) -> str:
    def num() -> str:
        v = rng.choice([rng.random(), rng.random(), rng.uniform(-0.5, 1.5), rng.randint(0, 2), 0.0, 1.0])
        fmt = rng.choice(["{:.2f}", "{:.3f}", "{}", "{:.1e}", "{:.0f}", "{:.4f}"])
        s = fmt.format(v)
        if rng.random() < 0.1 and s.startswith("0."):
            s = s[1:]  # ".13"
        if rng.random() < 0.03:
            s = rng.choice(["+" + s, "-" + s, s + "e0", "True", "False", "None", "1_0", "0x1", "1j", "'0.1'"])
        return s

    nums = [num() for _ in range(rng.choice([4, 4, 4, 4, 3, 5]))]
    sep = rng.choice([", ", ",", " ,", ",  ", " "])
    body = sep.join(nums)
    if rng.random() < 0.1:
        body += ","
    wrap = rng.choice(["[{}]", "[{}]", "[{}]", "({})", "{}", "[ {} ]", "[[{}]]", "{{{}}}"])
    s = wrap.format(body)
    r = rng.random()
    if r < 0.05:
        s = "The box is " + s
    elif r < 0.1:
        s = s + "."
    elif r < 0.15:
        s = s + ", " + wrap.format(body)
    elif r < 0.2:
        s = rng.choice([" ", "\t", "\n", "  "]) + s + rng.choice([" ", "\n", ""])
    elif r < 0.22:
        s = "[" * 300 + "0.1" + "]" * 300
    return s


ADVERSARIAL_BOXES = [
    "[.13, .2, .5, .6]", "[0.1, 0.2, 0.5, 0.6,]", "[1e-1, 2e-1, 5e-1, 6E-1]", "[0.1,0.2,0.5,0.6]",
    " [0.1, 0.2, 0.5, 0.6]", "\n[0.1, 0.2, 0.5, 0.6]", "[0.1, 0.2, 0.5, 0.6]\n", "\t[0.1, 0.2, 0.5, 0.6]",
    "[0.1, 0.2, 0.5, 0.6] ", "0.1, 0.2, 0.5, 0.6", "(0.1, 0.2, 0.5, 0.6)", "[0.1, 0.2, 0.5]",
    "[0.1, 0.2, 0.5, 0.6, 0.7]", "[-0.1, 0.2, 0.5, 0.6]", "[-0.0, 0.2, 0.5, 0.6]", "[+0.1, 0.2, 0.5, 0.6]",
    "[0.1, 0.2, 1.5, 0.6]", "[0, 0, 1, 1]", "[False, 0, True, 1]", "[0.5, 0.2, 0.1, 0.6]",
    "[0.1, 0.6, 0.5, 0.2]", "[0.1, 0.2, 0.1, 0.6]", "[0.1, 0.2, 0.5, 0.6], [0.1, 0.2, 0.5, 0.6]",
    "[[0.1, 0.2, 0.5, 0.6]]", "[0.1, 0.2, 0.5, 0.6].", "The box is [0.1, 0.2, 0.5, 0.6]",
    "[0.1, 0.2, 0.5, 0.6] is the box", "[0.1 0.2 0.5 0.6]", "[0x0, 0b0, 1, 1]", "[0_1, 0, 1, 1]",
    "[0.1_0, 0.2, 0.5, 0.6]", "['0.1', 0.2, 0.5, 0.6]", "[1j, 0.2, 0.5, 0.6]", "[None, 0.2, 0.5, 0.6]",
    "[0.1, 0.2, 0.5, 1e999]", "[nan, 0.2, 0.5, 0.6]", "[0.1, 0.2, 0.5, 0.6", "0.1, 0.2, 0.5, 0.6]", "[]",
    "", "   ", "[0.10, 0.20, 0.50, 0.60]", "[1., 1., 1., 1.]", "[0., 0., 1., 1.]",
    "[0.1 + 0.1, 0.2, 0.5, 0.6]", "[0.1, 0.2, 0.5, 0.6]  # box", "[0.1, 0.2, 0.5, 0.6];",
    "[0.1,\n0.2,\n0.5,\n0.6]", "[ 0.1 , 0.2 , 0.5 , 0.6 ]", "{0.1, 0.2, 0.5, 0.6}", "[0.1, 0.2, 0.5, 0.6]]",
    "[[0.1, 0.2], [0.5, 0.6]]", "[1/10, 0.2, 0.5, 0.6]", "[0.1, 0.2, 0.5, 0.6,,]",
    "[0.1, 0.2, 0.5, 0.6] [0.1, 0.2, 0.5, 0.6]", "[" * 300 + "]" * 300, "[" * 150 + "]" * 150,
    "[0, 0, 0.5, 1]", "[0.1, 0.2, 0.3, 0.6]", "[0.1, 0.2, 0.30000000000000004, 0.6]", "[0.3, 0.2, 0.5, 0.6]",
    "[0.1, 0.2, 0.5, 0.6]\n[0.2, 0.2, 0.5, 0.6]", "[0.1, 0.2, 0.5, 0.6]\r\n", "\u00a0[0.1, 0.2, 0.5, 0.6]",
    "[\uff10.1, 0.2, 0.5, 0.6]", "[0.1,0.2,0.5,0.6]<|endoftext|>", "[1e-2, 1e-2, 9.9e-1, 9.9e-1]",
    "[0.1, 0.2, 0.5, 0.6] or [0.2, 0.3, 0.4, 0.5]", "[True, True, True, True]", "[0.1, 0.2, 0.5, 0.6]\\",
]  # fmt: skip


def refcoco_cases(root: Path, rng: random.Random, runs: int, per_run: int) -> dict:
    ns = _namespace()
    _defs(
        root / "vlm_eval/tasks/harnesses/refcoco.py",
        {"parse_bbox", "compute_iou", "box_xywh2xyxy", "RefCOCOScorer"},
        ns,
    )
    datasets = ["RefCOCO", "RefCOCO+", "RefCOCOg"]
    out = []
    for _ in range(runs):
        pairs, annotations, cases = {}, {}, []
        for i in range(per_run):
            w, h = rng.randint(50, 700), rng.randint(50, 700)
            x, y = rng.uniform(0, w - 2), rng.uniform(0, h - 2)
            bw, bh = rng.uniform(0.5, w - x), rng.uniform(0.5, h - y)
            if rng.random() < 0.3:
                x, y, bw, bh = int(x), int(y), max(1, int(bw)), max(1, int(bh))
            gt = ns["box_xywh2xyxy"]([x, y, bw, bh], (w, h), do_normalize=True)
            if rng.random() < 0.5:  # a box near the ground truth: IoU around the 0.5 threshold
                jit = rng.choice([0.0, 0.01, 0.05, 0.1, 0.2])
                near = [min(1.0, max(0.0, c + rng.uniform(-jit, jit))) for c in gt]
                text = "[" + ", ".join(rng.choice(["{:.2f}", "{}"]).format(c) for c in near) + "]"
            else:
                text = _box_strings(rng)
            parsed = ns["parse_bbox"](text)
            iou = ns["compute_iou"](parsed, gt) if parsed is not None else None
            ds = rng.choice(datasets)
            key = str(i)
            annotations[key] = {"refer_dataset": ds}
            pairs[key] = {"model_output": text, "ground_truth_bbox": gt}
            cases.append(
                {
                    "text": text,
                    "xywh": [x, y, bw, bh],
                    "wh": [w, h],
                    "gt": gt,
                    "dataset": ds,
                    "parsed": parsed,
                    "iou": iou,
                }
            )
        if {c["dataset"] for c in cases} != set(datasets):
            continue
        with tempfile.TemporaryDirectory() as tmp:
            ann = Path(tmp, "annotations.json")
            ann.write_text(json.dumps(annotations))
            metrics = ns["RefCOCOScorer"]("refcoco", Path(tmp), pairs, ann).score("fixture")
        out.append({"cases": cases, "metrics": metrics})
    adversarial = []
    for gt_xywh, wh in (([64, 128, 256, 256], (640, 640)), ([0, 0, 320, 480], (640, 480))):
        gt = ns["box_xywh2xyxy"](gt_xywh, wh, do_normalize=True)
        for text in ADVERSARIAL_BOXES:
            parsed = ns["parse_bbox"](text)
            iou = ns["compute_iou"](parsed, gt) if parsed is not None else None
            adversarial.append({"text": text, "gt": gt, "parsed": parsed, "iou": iou})
    return {"runs": out, "adversarial": adversarial}


# -- likelihood-scored: POPE, VSR, TallyQA, AI2D ---------------------------------------------------


def _probs(rng: random.Random, k: int) -> list[float]:
    """Normalised probabilities with frequent ties (within a row and across rows)."""
    if rng.random() < 0.4:
        raw = [rng.choice([1, 2, 3, 4]) for _ in range(k)]
    else:
        raw = [rng.random() ** 3 + 1e-9 for _ in range(k)]
    s = sum(raw)
    return [round(v / s, 6) for v in raw]  # short fixtures; rows still sum to 1 within sklearn's 1e-5


def _informative(rng: random.Random, k: int, label: int) -> list[float]:
    p = _probs(rng, k)
    if rng.random() < 0.6:  # lean towards the label so that AUCs are not all near 0.5
        p[label] += rng.random() * 2
        s = sum(p)
        p = [round(v / s, 6) for v in p]
    return p


def choice_cases(root: Path, rng: random.Random, runs: int) -> dict:
    ns = _namespace()
    harness = root / "vlm_eval/tasks/harnesses"
    _defs(harness / "pope.py", {"PopeScorer"}, ns)
    _defs(harness / "vsr.py", {"VSRScorer"}, ns)
    _defs(harness / "tallyqa.py", {"TallyQAScorer"}, ns)
    _defs(harness / "ai2d.py", {"AI2DScorer"}, ns)
    out: dict[str, list] = {"pope": [], "vsr": [], "tallyqa": [], "ai2d": []}
    with tempfile.TemporaryDirectory() as tmp:
        ann = Path(tmp, "annotations.json")
        for _ in range(runs):
            # POPE: three splits, both labels in each (sklearn of the harness's time raises on one)
            pairs, annotations, cases = {}, {}, []
            for i in range(rng.randint(12, 60)):
                split = ["adversarial", "popular", "random"][i % 3]
                label = ["yes", "no"][i // 3] if i < 6 else rng.choice(["yes", "no"])
                p = _informative(rng, 2, 0 if label == "yes" else 1)
                pairs[str(i)] = {"yes_no_probabilities": p, "ground_truth_answer": label}
                annotations[str(i)] = {"split": split}
                cases.append({"probs": p, "label": label, "split": split})
            ann.write_text(json.dumps(annotations))
            metrics = ns["PopeScorer"]("pope", Path(tmp), pairs, ann).score("fixture")
            out["pope"].append({"cases": cases, "metrics": {k: float(v) for k, v in metrics.items()}})

            # VSR: one pool
            pairs, cases = {}, []
            for i in range(rng.randint(4, 80)):
                label = i % 2 == 0 if i < 2 else rng.random() < 0.5
                p = _informative(rng, 2, 0 if label else 1)
                pairs[i] = {"true_false_probabilities": p, "ground_truth_answer": label}
                cases.append({"probs": p, "label": label})
            metrics = ns["VSRScorer"]("vsr", Path(tmp), pairs, ann).score("fixture")
            out["vsr"].append({"cases": cases, "metrics": {k: float(v) for k, v in metrics.items()}})

            # TallyQA (16 counts) and AI2D (4 letters): every class in every split, as sklearn needs
            for name, scorer, k, splits in (
                ("tallyqa", "TallyQAScorer", 16, ("simple", "complex")),
                ("ai2d", "AI2DScorer", 4, ("val", "test")),
            ):
                pairs, annotations, cases = {}, {}, []
                i = 0
                for split in splits:
                    labels = list(range(k)) + [rng.randrange(k) for _ in range(rng.randint(0, 3 * k))]
                    rng.shuffle(labels)
                    for label in labels:
                        p = _informative(rng, k, label)
                        pairs[str(i)] = {
                            "question_id": i,
                            "mc_probabilities": p,
                            "ground_truth_answer": label,
                        }
                        annotations[str(i)] = {"split": split}
                        cases.append({"probs": p, "label": label, "split": split})
                        i += 1
                ann.write_text(json.dumps(annotations))
                metrics = ns[scorer](name, Path(tmp), pairs, ann).score("fixture")
                out[name].append({"cases": cases, "metrics": {k2: float(v) for k2, v in metrics.items()}})
    return out


def auc_cases(rng: random.Random, n_cases: int) -> list[dict]:
    """sklearn's roc_auc_score / average_precision_score as the harness calls them, on their own."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    cases = []
    for c in range(n_cases):
        if c % 2 == 0:  # binary: P(positive) with ties, labels sometimes one class only
            n = rng.randint(1, 40)
            grid = rng.choice([None, 2, 3, 5])
            scores = [rng.randrange(grid) / (grid - 1) if grid else round(rng.random(), 6) for _ in range(n)]
            labels = [int(rng.random() < rng.choice([0.0, 0.2, 0.5, 0.8, 1.0])) for _ in range(n)]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # no positive: AP warns
                ap = float(average_precision_score(labels, scores))
                try:
                    roc = float(roc_auc_score(labels, scores))
                except ValueError:  # one class only: undefined (sklearn >= 1.6 returns nan instead)
                    roc = None
            cases.append({"scores": scores, "labels": labels, "roc_auc": roc, "ap": ap})
        else:  # multiclass: one-vs-one ROC and macro AP, every class present
            k = rng.choice([3, 4, 4, 4, 3, 16])
            labels = list(range(k)) + [rng.randrange(k) for _ in range(rng.randint(0, 16))]
            rng.shuffle(labels)
            probs = [_informative(rng, k, y) for y in labels]
            roc = float(roc_auc_score(labels, probs, multi_class="ovo"))
            ap = float(average_precision_score(labels, probs))
            cases.append({"probs": probs, "labels": labels, "roc_auc": roc, "ap": ap})
    return cases


# -- prompts of the Cobra wrapper -----------------------------------------------------------------

QUESTIONS = [
    "What color is the cat?", "Is there a {brace} here?", 'What does the "sign" say?', "How many?",
    "Qu'est-ce que c'est ?", "what is written on the t-shirt", "Is the man's hat red?\n", "A B C",
]  # fmt: skip


def prompt_cases(fork: Path, cobra: Path) -> list[dict]:
    """The user turns the h-zhao1997 wrapper builds, through Cobra's Zephyr prompt builder."""
    import abc
    import typing

    ns = {k: getattr(typing, k) for k in ("Any", "Callable", "List", "Optional", "Tuple", "Union")}
    ns.update(ABC=abc.ABC, abstractmethod=abc.abstractmethod)
    _defs(cobra / "cobra/models/backbones/llm/prompting/base_prompter.py", {"PromptBuilder"}, ns)
    _defs(cobra / "cobra/models/backbones/llm/prompting/zephyr_prompter.py", {"ZephyrChatPromptBuilder"}, ns)

    class _Torch:  # the wrapper decorates its generation methods with torch.inference_mode()
        inference_mode = staticmethod(lambda: lambda f: f)

    ns.update(torch=_Torch, VLM=object, Path=Path)
    _defs(fork / "vlm_eval/models/cobra.py", {"CobraVLM"}, ns)
    wrapper = object.__new__(ns["CobraVLM"])
    wrapper.model = type(
        "M", (), {"get_prompt_builder": staticmethod(lambda s=None: ns["ZephyrChatPromptBuilder"]("cobra"))}
    )()
    ocr = ["dakota", "digital", "single-use", "camera"]
    cases = []
    for q in QUESTIONS:
        for family in ("vqa-v2", "gqa", "vizwiz", "pope", "vsr", "refcoco"):
            cases.append({"family": family, "question": q, "prompt": wrapper.get_prompt_fn(family)(q)})
        # TextVQA: LLaVA's question file appends the OCR line; the harness asks with it and without
        with_ocr = f"{q}\nReference OCR token: {', '.join(ocr)}"
        fn = wrapper.get_prompt_fn("text-vqa")
        cases.append({"family": "text-vqa", "question": q, "ocr": ocr, "prompt": fn(with_ocr)})
        cases.append(
            {
                "family": "text-vqa-pure",
                "question": q,
                "prompt": fn(with_ocr.split("\nReference OCR token:")[0]),
            }
        )
        cases.append(
            {
                "family": "tally-qa",
                "question": q,
                "prompt": wrapper.get_prompt_fn("tally-qa")(q, [str(i) for i in range(16)]),
            }
        )
        choices = ["a leaf", "the {root}", '"stem"', "none of the above"]
        cases.append(
            {
                "family": "ai2d",
                "question": q,
                "choices": choices,
                "prompt": wrapper.get_prompt_fn("ai2d")(q, choices),
            }
        )
    return cases


# -- main ------------------------------------------------------------------------------------------


def _commit(root: Path) -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--harness", default=os.environ.get("TRI_VLM_EVAL"), help="TRI-ML/vlm-evaluation checkout"
    )
    ap.add_argument("--commit", default=None, help="the checkout's commit, when it is not a git work tree")
    ap.add_argument("--fork", default=None, help="h-zhao1997/vlm-evaluation checkout (Cobra's prompts)")
    ap.add_argument("--fork-commit", default=None)
    ap.add_argument("--cobra", default=None, help="h-zhao1997/cobra checkout (its Zephyr prompt builder)")
    ap.add_argument("--cobra-commit", default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    root = Path(args.harness) if args.harness else None
    if root is None or not (root / "vlm_eval/util/evaluation/vqav2/eval.py").is_file():
        print("no TRI-ML/vlm-evaluation checkout (--harness or TRI_VLM_EVAL): nothing written")
        return
    try:
        import numpy  # noqa: F401
        import sklearn
    except ImportError:
        print("scikit-learn is not installed (the harness scores with it): nothing written")
        return
    rng = random.Random(args.seed)
    source = {
        "harness": "TRI-ML/vlm-evaluation",
        "commit": args.commit or _commit(root),
        "python": sys.version.split()[0],
        "sklearn": sklearn.__version__,
        "seed": args.seed,
    }
    fixtures = {
        "tri_vqav2.json": vqav2_cases(root, rng, runs=30, per_run=100),
        "tri_vizwiz.json": vizwiz_cases(root, rng, runs=30, per_run=100),
        "tri_textvqa.json": textvqa_cases(root, rng, runs=30, per_run=100),
        "tri_gqa.json": gqa_cases(root, rng, runs=30, per_run=100),
        "tri_refcoco.json": refcoco_cases(root, rng, runs=30, per_run=100),
        "tri_choice.json": choice_cases(root, rng, runs=24),
        "tri_auc.json": {"cases": auc_cases(rng, 1200)},
    }
    if args.fork and args.cobra:
        fork, cobra = Path(args.fork), Path(args.cobra)
        fixtures["tri_prompts.json"] = {
            "fork": {"repo": "h-zhao1997/vlm-evaluation", "commit": args.fork_commit or _commit(fork)},
            "cobra": {"repo": "h-zhao1997/cobra", "commit": args.cobra_commit or _commit(cobra)},
            "cases": prompt_cases(fork, cobra),
        }
    else:
        print("no --fork / --cobra checkouts: tri_prompts.json not written")
    for name, data in fixtures.items():
        (OUT / name).write_text(json.dumps({"source": source, **data}, separators=(",", ":")))
        print(f"{name}: {(OUT / name).stat().st_size / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
