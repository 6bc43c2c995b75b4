"""Regenerate tests/fixtures/eval/vqa_harness_cases.json: random + adversarial VQA cases scored by the
reference scorers themselves (run from their own files; nothing of them is copied here).

    python scripts/make_scoring_fixtures_vqa.py --refs DIR [--python2 python2.7] [--out FILE]

DIR holds checkouts (``git archive <commit> | tar -x``) at these commits:
  VQA/             GT-Vision-Lab/VQA a013f0043c1e2cdc995922dfe257f7149aa9af06
                   (PythonEvaluationTools/vqaEvaluation/vqaEval.py: Python 2, run by --python2)
  LLaVA/           haotian-liu/LLaVA c121f0432da27facab705978f83c4ada465e46fd (llava/eval/m4c_evaluator.py)
  lmms-eval/       EvolvingLMMs-Lab/lmms-eval 75571cfe0fa36ca5ec2e6aa2bb268f9d38295af3
                   (lmms_eval/tasks/{vqav2,textvqa,vizwiz_vqa}/utils.py, _task_utils/vqa_eval_metric.py)
  vlm-evaluation/  TRI-ML/vlm-evaluation d9f58967de7f62371ee068dbfa07878cdaef5607
                   (vlm_eval/util/evaluation/vqav2/eval.py)
  VLMEvalKit/      open-compass/VLMEvalKit e8e78f05f3080fe28154f2130321f17951c3be94
                   (vlmeval/dataset/utils/vqa_eval.py, vlmeval/smp/misc.py)
Without them (or without Python 2.7) it says what is missing and exits 0.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import random
import shutil
import subprocess
import sys
import tempfile
import types
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILES = {
    "VQA": "PythonEvaluationTools/vqaEvaluation/vqaEval.py",
    "LLaVA": "llava/eval/m4c_evaluator.py",
    "lmms-eval": "lmms_eval/tasks/vqav2/utils.py",
    "vlm-evaluation": "vlm_eval/util/evaluation/vqav2/eval.py",
    "VLMEvalKit": "vlmeval/dataset/utils/vqa_eval.py",
}
REFERENCES = {
    "official": "GT-Vision-Lab/VQA a013f0043c1e2cdc995922dfe257f7149aa9af06 "
    "PythonEvaluationTools/vqaEvaluation/vqaEval.py VQAEval.evaluate, Python 2.7",
    "evalai": "LLaVA c121f04 llava/eval/m4c_evaluator.py EvalAIAnswerProcessor on the prediction "
    "(scripts/convert_vqav2_for_submission.py), then the official scorer",
    "m4c": "LLaVA c121f04 llava/eval/m4c_evaluator.py TextVQAAccuracyEvaluator.eval_pred_list",
    "lmms": "lmms-eval 75571cf lmms_eval/tasks/vqav2/utils.py vqav2_process_results",
    "lmms_evalai": "lmms-eval 75571cf lmms_eval/tasks/textvqa/utils.py textvqa_process_results",
    "tri": "TRI-ML/vlm-evaluation d9f5896 vlm_eval/util/evaluation/vqav2/eval.py VQAEvaluator.evaluate",
    "vlmevalkit": "VLMEvalKit e8e78f0 vlmeval/dataset/utils/vqa_eval.py process_line(vqa_score) + "
    "hit_calculate",
}

# ---- the cases ---------------------------------------------------------------------------------------
R = random.Random(20240611)
PUNCT = list(';/[]"{}()=+\\_-><@`,?!')
CONTRACTION_KEYS = (
    "aint dont isnt whats Im Ive Id've I'dve let's ow's'at 'ows'at somebody'd y'all'll yall youre cant wont "
    "oclock maam twas hes she's shouldnt've wouldn'tve"
).split()
NUMBER_WORDS = "none zero one two three four five six seven eight nine ten eleven None TWO".split()
WORDS = (
    "yes|no|red|blue|dog|cat|man|tennis|pizza|left|right|white and black|t-shirt|frisbee|baseball bat|"
    "stop sign|kitchen|nike|new york|Yes|NO|Red|a|an|the|on table|in the sky|dog's|it's|cats'|o'clock|"
    "rock 'n' roll|e.g.|u.s.a.|mr. smith|unanswerable|unsuitable|1st|2nd|snow-boarding|black/white|1:30|"
    "10:00|$5|50%|#1|c++|a.m.|p.m|sandwich.|yes.|no!|?|...|.|,|3.5|5.|.5|0.25|1,000|1,,000|10,000,000|1, 2|"
    "1 ,2|a,b|3 , 4|one, two"
).split("|")
UNICODE = (
    "café|naïve|İstanbul|ΟΔΟΣ|Σ|ß|猫|東京|١٢٣|٣|１２|٫|e\u0301|😀|👍🏽|Ꭰ|Ა|Ԧ|Ω|ǅ|ﬁ|Ⅻ|½|²|\u00a0|\u180e|\u2028|"
    "\u200b|\u3000|\x85|\x1c|\u2019|“yes”|—|…|\u212a|\u017f"
).split("|")
SPACES = ["\n", "\t", " ", "  ", "\r", "\x0b", "\x0c"]


def word() -> str:
    r = R.random()
    if r < 0.35:
        return R.choice(WORDS)
    if r < 0.5:
        return R.choice(NUMBER_WORDS)
    if r < 0.6:
        return R.choice(CONTRACTION_KEYS)
    if r < 0.72:
        return str(R.choice([0, 1, 2, 3, 4, 5, 7, 10, 12, 100, 2015, 1000000]))
    if r < 0.82:
        return R.choice(UNICODE)
    return "".join(R.choice("abcdefghijklmnopqrstuvwxyzABCXYZ0123456789.,'") for _ in range(R.randint(1, 6)))


def perturb(s: str) -> str:
    """What annotators and models do to an answer: case, punctuation, articles, whitespace, periods."""
    for _ in range(R.choice([0, 0, 1, 1, 2, 3])):
        op = R.randrange(12)
        if op == 0:
            s = s.upper() if R.random() < 0.5 else s.capitalize()
        elif op == 1:
            p, i, pad = R.choice(PUNCT), R.randint(0, len(s)), R.choice(["", "", " "])
            s = s[:i] + (pad + p if R.random() < 0.5 else p + pad) + s[i:]
        elif op == 2:
            s = R.choice(["a ", "an ", "the ", "The ", "A "]) + s
        elif op == 3:
            s = R.choice(SPACES) + s + R.choice(SPACES)
        elif op == 4:
            s = s + R.choice([".", ". ", "..", "!", "?", "...", "." * R.randint(30, 40)])
        elif op == 5:
            s = s.replace(" ", R.choice(["\n", "\t", "  ", " , ", ","]))
        elif op == 6:
            s = s + " " + word()
        elif op == 7:
            s = word() + " " + s
        elif op == 8:
            s = s.lower()
        elif op == 9:
            i = R.randint(0, len(s))
            s = s[:i] + R.choice([",", ".", "'", "'s", ", ", " . "]) + s[i:]
        elif op == 10:
            s = R.choice(["", " ", "\n", "\t"])
        else:
            s = ".".join(R.choice("ab12") for _ in range(R.randint(20, 45)))
    return s


def answers() -> list[str]:
    n = R.choice([10] * 20 + list(range(1, 11)))
    base = perturb(word()) if R.random() < 0.85 else perturb(word() + " " + word())
    if R.random() < 0.25:  # all annotators agree
        return [base] * n
    pool = (
        [base]
        + [perturb(base) for _ in range(R.randint(0, 3))]
        + [perturb(word()) for _ in range(R.randint(0, 3))]
    )
    return [R.choice(pool) if R.random() < 0.7 else base for _ in range(n)]


def case() -> list:
    ans = answers()
    r = R.random()
    pred = R.choice(ans) if r < 0.45 else perturb(R.choice(ans)) if r < 0.8 else perturb(word())
    atype = R.choice(["yes/no", "number", "other"])
    qtype = R.choice(["what", "how many", "is the", "what color is the", "none of the above"])
    return [pred, ans, atype, qtype]


def agree(*groups: tuple[str, int]) -> list[str]:
    return [a for a, n in groups for _ in range(n)]


ADVERSARIAL = [
    ["yes", agree(("yes", 10))],
    ["Yes", agree(("yes", 10))],
    [" yes\n", agree(("yes", 10))],
    ["yes", agree(("yes\n", 10))],
    ["yes", agree(("yes\n", 9), ("yes", 1))],
    ["yes", agree((" yes", 5), ("yes ", 5))],
    ["Yes", agree(("yes\t", 5), ("yes", 5))],
    ["Yes", agree((" yes", 5), ("yes ", 5))],
    ["two", agree(("2", 9), ("two", 1))],
    ["5.", agree(("5", 4), ("6", 6))],
    ["3.5", agree(("3.5", 4), ("3", 6))],
    ["3.", agree(("3", 4), ("3.", 6))],
    ["1,000", agree(("1000", 4), ("1,000", 6))],
    ["a dog", agree(("dog", 3), ("the dog", 7))],
    ["dont", agree(("don't", 5), ("no", 5))],
    ["." * 40 + "a", agree(("a", 5), ("b", 5))],  # more than 32 periods: the scorers stop at 32
    ["a" + "." * 33, agree(("a", 5), ("b", 5))],
    ["a" + "." * 32, agree(("a", 5), ("b", 5))],
    ["", ["", "", "a"]],
    ["", agree(("", 10))],
    ["cat", ["cat", "cat", "dog"]],
    ["cat", ["cat"]],
    ["cat", ["cat", "cat"]],
    ["cat", agree(("cat", 4))],
    ["٣", agree(("3", 5), ("٣", 5))],  # a non-ASCII digit: \d under Python 3, not under Python 2
    ["١,٢", agree(("١,٢", 5), ("12", 5))],
    ["1,2", agree(("12", 5), ("x", 5))],
    ["İ", agree(("i", 5), ("x", 5))],  # Python 2 lower-cases İ to i, Python 3 to i + U+0307
    ["ΟΔΟΣ", agree(("οδοσ", 5), ("οδος", 5))],  # final sigma: Python 3 only
    ["a\u180eb", agree(("a b", 5), ("x", 5))],  # U+180E: whitespace for Python 2 only
    ["dog's", agree(("dog 's", 5), ("dogs", 5))],
    ["it's", agree(("it 's", 5), ("its", 5))],
    ["1,,000", agree(("1000", 5), ("x", 5))],
    ["Ꭰ", agree(("ꭰ", 5), ("x", 5))],  # cased after Unicode 5.2
    ["Ა", agree(("ა", 5), ("x", 5))],
    ["\u212a", agree(("k", 5), ("x", 5))],
    ["x", []],
]


# ---- running the references --------------------------------------------------------------------------
PY2_DRIVER = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from vqaEval import VQAEval
cases = json.load(open(sys.argv[2]))
preds = json.load(open(sys.argv[3]))


class Index(object):  # what VQAEval reads of the VQA API objects
    def __init__(self, qa):
        self.qa = qa

    def getQuesIds(self):
        return sorted(self.qa)


gt, res = {}, {}
for i, (c, p) in enumerate(zip(cases, preds)):
    answers = [{"answer": a, "answer_id": j + 1, "answer_confidence": "yes"} for j, a in enumerate(c[1])]
    gt[i] = {"answers": answers, "answer_type": c[2], "question_type": c[3]}
    res[i] = {"answer": p}
ev = VQAEval(Index(gt), Index(res))
raw, means = {}, {}
set_eval, set_acc = ev.setEvalQA, ev.setAccuracy


def capture_eval(quesId, acc):  # the accuracy before setEvalQA rounds it
    raw[quesId] = acc
    set_eval(quesId, acc)


def capture_acc(accQA, accQuesType, accAnsType):  # the means before setAccuracy rounds them
    means["overall"] = float(sum(accQA)) / len(accQA)
    means["perQuestionType"] = dict((k, float(sum(v)) / len(v)) for k, v in accQuesType.items())
    means["perAnswerType"] = dict((k, float(sum(v)) / len(v)) for k, v in accAnsType.items())
    set_acc(accQA, accQuesType, accAnsType)


ev.setEvalQA, ev.setAccuracy = capture_eval, capture_acc
ev.evaluate([i for i in sorted(gt) if gt[i]["answers"]])  # no answers: a ZeroDivisionError in evaluate()
processed = [ev.processDigitArticle(ev.processPunctuation(p.replace("\n", " ").replace("\t", " ").strip()))
             for p in preds]
json.dump({"accuracy": [repr(raw[i]) if i in raw else "ZeroDivisionError" for i in sorted(gt)],
           "means": dict((k, repr(v) if not isinstance(v, dict) else dict((a, repr(b)) for a, b in v.items()))
                         for k, v in means.items()),
           "report": ev.accuracy, "processed_pred": processed}, open(sys.argv[4], "w"))
"""


def run_official(python2: str, vqa_dir: Path, cases: list, preds: list, tmp: Path) -> dict:
    (tmp / "driver.py").write_text(PY2_DRIVER)
    (tmp / "cases.json").write_text(json.dumps(cases))
    (tmp / "preds.json").write_text(json.dumps(preds))
    subprocess.run(
        [python2, str(tmp / "driver.py"), str(vqa_dir / Path(FILES["VQA"]).parent), str(tmp / "cases.json"),
         str(tmp / "preds.json"), str(tmp / "out.json")],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    out = json.loads((tmp / "out.json").read_text())
    out["accuracy"] = [v if not v[0].isdigit() else float(v) for v in out["accuracy"]]
    out["means"] = {
        k: float(v) if isinstance(v, str) else {a: float(b) for a, b in v.items()}
        for k, v in out["means"].items()
    }
    return out


def load(name: str, path: Path) -> types.ModuleType:
    """A module from its file; its parent packages bare (their __init__ would import whole harnesses)."""
    parts = name.split(".")
    root = path.parents[len(parts) - 1]
    for k in range(1, len(parts)):
        pkg = ".".join(parts[:k])
        if pkg not in sys.modules:
            mod = types.ModuleType(pkg)
            mod.__path__ = [str(root.joinpath(*parts[:k]))]
            sys.modules[pkg] = mod
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def stub_unused(*names: str) -> None:
    """Modules a reference file imports at the top but the scoring functions never touch."""
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            sys.modules[name] = types.ModuleType(name)
            sys.modules[name].__getattr__ = lambda attr: None  # type: ignore[method-assign]


def score(fn, *args, key: str | None = None):
    """The reference's accuracy as a float, or the name of the exception it raises."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # np.mean([]) warns and gives nan: the error it is
            out = fn(*args)
            return float(out if key is None else out[key])
    except Exception as e:  # noqa: BLE001 - the reference's own failure is the expected value
        return type(e).__name__


def run_python3(refs: Path, cases: list) -> dict:
    stub_unused("loguru", "pandas", "sty", "huggingface_hub", "huggingface_hub.utils",
                "huggingface_hub.utils._cache_manager")  # fmt: skip
    m4c = load("llava.eval.m4c_evaluator", refs / "LLaVA" / FILES["LLaVA"])
    lmms = refs / "lmms-eval" / "lmms_eval" / "tasks"
    lmms_metric = load("lmms_eval.tasks._task_utils.vqa_eval_metric", lmms / "_task_utils/vqa_eval_metric.py")
    load("lmms_eval.tasks._task_utils.file_utils", lmms / "_task_utils/file_utils.py")
    vqav2 = load("lmms_eval.tasks.vqav2.utils", lmms / "vqav2/utils.py")
    textvqa = load("lmms_eval.tasks.textvqa.utils", lmms / "textvqa/utils.py")
    tri = load("vlm_eval.util.evaluation.vqav2.eval", refs / "vlm-evaluation" / FILES["vlm-evaluation"])
    misc = load("vlmeval.smp.misc", refs / "VLMEvalKit/vlmeval/smp/misc.py")
    sys.modules["vlmeval.smp"].__dict__.update(
        istype=misc.istype, listinstr=misc.listinstr, process_punctuation=misc.process_punctuation
    )
    vk = load("vlmeval.dataset.utils.vqa_eval", refs / "VLMEvalKit" / FILES["VLMEvalKit"])

    processor, textvqa_eval = m4c.EvalAIAnswerProcessor(), m4c.TextVQAAccuracyEvaluator()
    lmms_processor = lmms_metric.EvalAIAnswerProcessor()

    def doc(answers):
        return {
            "question_id": 1,
            "answers": [{"answer": a, "answer_id": j + 1} for j, a in enumerate(answers)],
        }

    def tri_accuracy(pred, answers):
        gt, res = tri.VQAIndex(), tri.VQAIndex()
        gt.qid2ann = {1: {"question_id": 1, "answers": copy.deepcopy(doc(answers)["answers"]),
                          "question_type": "q", "answer_type": "a"}}  # fmt: skip
        res.qid2ann = {1: {"question_id": 1, "answer": pred}}
        evaluator = tri.VQAEvaluator(gt, res)
        evaluator.evaluate()
        return evaluator.eval_qa[1]

    def vk_accuracy(pred, answers):
        line = vk.process_line({"answer": str(list(answers)), "prediction": pred}, method="vqa_score")
        return vk.hit_calculate([line], "VQAv2")[0]

    out = {k: [] for k in ("m4c", "lmms", "lmms_evalai", "tri", "vlmevalkit")}
    norm = {k: [] for k in ("evalai_process", "lmms_process", "tri_process_prediction", "vlmevalkit_process")}
    for pred, answers, _, _ in cases:
        out["m4c"].append(score(textvqa_eval.eval_pred_list, [{"pred_answer": pred, "gt_answers": answers}]))
        out["lmms"].append(score(vqav2.vqav2_process_results, doc(answers), [pred], key="exact_match"))
        textvqa_doc = {"question_id": 1, "answers": list(answers)}
        out["lmms_evalai"].append(
            score(textvqa.textvqa_process_results, textvqa_doc, [pred], key="exact_match")
        )
        out["tri"].append(score(tri_accuracy, pred, answers))
        out["vlmevalkit"].append(score(vk_accuracy, pred, answers))
        clean = pred.replace("\n", " ").replace("\t", " ").strip()
        norm["evalai_process"].append(processor(pred))
        norm["lmms_process"].append(
            lmms_processor.process_digit_article(lmms_processor.process_punctuation(clean))
        )
        norm["tri_process_prediction"].append(
            tri.process_digits_articles_contractions(tri.process_punctuation(clean))
        )
        norm["vlmevalkit_process"].append(vk.process_answer(pred))
    return {"accuracy": out, "normalized": norm}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--refs", type=Path, required=True)
    ap.add_argument("--python2", default="python2.7")
    ap.add_argument("--cases", type=int, default=3000)
    ap.add_argument("--out", type=Path, default=ROOT / "tests/fixtures/eval/vqa_harness_cases.json")
    args = ap.parse_args()
    missing = [str(args.refs / d / f) for d, f in FILES.items() if not (args.refs / d / f).exists()]
    if shutil.which(args.python2) is None:
        missing.append(f"a Python 2.7 interpreter ({args.python2})")
    if missing:
        print("skipped, references missing:\n  " + "\n  ".join(missing))
        return

    cases = [[p, a, "other", "what"] for p, a in ADVERSARIAL] + [case() for _ in range(args.cases)]
    py3 = run_python3(args.refs, cases)
    with tempfile.TemporaryDirectory() as tmp:
        official = run_official(args.python2, args.refs / "VQA", cases, [c[0] for c in cases], Path(tmp))
        evalai = run_official(
            args.python2, args.refs / "VQA", cases, py3["normalized"]["evalai_process"], Path(tmp)
        )
    fixture = {
        "about": "VQA accuracy of each harness on random + adversarial cases, computed by running the "
        "reference scorers (scripts/make_scoring_fixtures_vqa.py); errors are their exception names",
        "references": REFERENCES,
        "cases": cases,
        "accuracy": {"official": official["accuracy"], "evalai": evalai["accuracy"]} | py3["accuracy"],
        "official_means": official["means"],
        "official_report": official["report"],
        "normalized_prediction": {"official_process": official["processed_pred"]} | py3["normalized"],
    }
    args.out.write_text(json.dumps(fixture, ensure_ascii=False, separators=(",", ":")))
    print(f"{args.out}: {len(cases)} cases, {args.out.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
