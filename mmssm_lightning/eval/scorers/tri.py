"""The scoring rules of TRI-ML/vlm-evaluation (Prismatic's harness; Cobra ran it through the
h-zhao1997/vlm-evaluation fork, whose scoring is the same), reproduced from its behaviour at commit
d9f58967de7f62371ee068dbfa07878cdaef5607, file by file:

* ``util/evaluation/vqav2/eval.py`` — VQAv2: annotator answers through the punctuation rule only,
  the prediction through punctuation + digits / articles / contractions: :func:`vqav2_score`.
* ``util/evaluation/vizwiz/eval.py`` — VizWiz: raw annotator answers, the prediction processed with
  that file's own contraction table (backticks for apostrophes): :func:`vizwiz_score`,
  :func:`vizwiz_unanswerable`.
* ``util/evaluation/textvqa/m4c_evaluators.py`` — TextVQA: EvalAI's answer processor on both sides:
  :func:`textvqa_score`.
* ``tasks/harnesses/gqa.py`` — GQA: every ASCII punctuation character deleted, then lower case,
  compared with the raw answer by ``util/evaluation/gqa/eval.py``: :func:`gqa_prediction`.
* ``tasks/harnesses/refcoco.py`` — ``parse_bbox`` / ``compute_iou`` / ``box_xywh2xyxy``:
  :func:`parse_bbox`, :func:`box_iou`, :func:`round_box`.
* ``tasks/harnesses/{pope,vsr,tallyqa,ai2d}.py`` — scikit-learn's ``roc_auc_score`` (binary, or
  multiclass one-vs-one) and ``average_precision_score`` (binary, or macro over the classes):
  :func:`binary_roc_auc`, :func:`binary_average_precision`, :func:`ovo_roc_auc`,
  :func:`macro_average_precision`.

The three punctuation rules share ``vqaEval.py``'s quirks: its period pattern ``(?!<=\\d)`` is a
look-ahead (a period after a digit goes too) and ``re.UNICODE`` lands in ``sub``'s count, so at
most 32 periods go.
"""

from __future__ import annotations

import ast
import itertools
import math
import re
import string
from collections.abc import Sequence

import numpy as np
import torch

from mmssm_lightning.eval.normalize import ARTICLES, CONTRACTIONS, NUMBER_WORDS, PUNCT

HARNESS = "TRI-ML/vlm-evaluation"
COMMIT = "d9f58967de7f62371ee068dbfa07878cdaef5607"

_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")
_PERIOD_COUNT = re.UNICODE.value  # sic: vqaEval.py passes the flag as sub's count (32)
_DIGIT_COMMA_DIGIT = re.compile(r"(\d)(,)(\d)")
_M4C_COMMA = re.compile(r"(?<=\d)(\,)+(?=\d)")


def _punctuation(text: str, comma: re.Pattern = _DIGIT_COMMA_DIGIT) -> str:
    out = text
    digit_comma = comma.search(text) is not None
    for p in PUNCT:
        # beside a space, or anywhere in a text with "1,2" in it: deleted; otherwise: a space
        if digit_comma or p + " " in text or " " + p in text:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD.sub("", out, _PERIOD_COUNT)


def _words(text: str, contractions: dict[str, str]) -> str:
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split() if w not in ARTICLES]
    return " ".join(contractions.get(w, w) for w in words)


def _clean(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def _leave_one_out(pred: str, answers: Sequence[str]) -> float:
    """Mean over annotators of min(1, (#other annotators who gave ``pred``) / 3)."""
    accs = [min(1, sum(a == pred for j, a in enumerate(answers) if j != i) / 3) for i in range(len(answers))]
    return sum(accs) / len(accs)


# -- VQAv2 -----------------------------------------------------------------------------------------


def vqav2_prediction(text: str) -> str:
    return _words(_punctuation(_clean(text)), CONTRACTIONS)


def vqav2_score(pred: str, answers: Sequence[str]) -> float:
    """``VQAEvaluator.evaluate``: annotator answers get the punctuation rule only (no lower case, no
    strip, no digits / articles) — whether or not the annotators agree."""
    return _leave_one_out(vqav2_prediction(pred), [_punctuation(a) for a in answers])


# -- VizWiz ----------------------------------------------------------------------------------------


def _backticks(s: str) -> str:
    return s.replace("'", "`")


# VizWiz's eval.py carries the VQA contraction table with most apostrophes turned into backticks;
# these keep theirs (in the value; in the key for the two "n'tve" entries).
_VIZWIZ_APOSTROPHE_VALUES = {"aint", "arent", "cant", "couldve", "couldnt", "weve", "wheres", "whove"}
_VIZWIZ_APOSTROPHE_KEYS = {"couldn'tve", "hadn'tve"}
VIZWIZ_CONTRACTIONS = {
    (k if k in _VIZWIZ_APOSTROPHE_KEYS else _backticks(k)): (
        v if k in _VIZWIZ_APOSTROPHE_VALUES else _backticks(v)
    )
    for k, v in CONTRACTIONS.items()
}


def vizwiz_prediction(text: str) -> str:
    return _words(_punctuation(_clean(text)), VIZWIZ_CONTRACTIONS)


def vizwiz_score(pred: str, answers: Sequence[str]) -> float:
    """``VQAEval.evaluate`` of VizWiz: the processed prediction against the raw annotator answers."""
    return _leave_one_out(vizwiz_prediction(pred), list(answers))


def vizwiz_unanswerable(pred: str) -> bool:
    """``get_answerable_preds``: the prediction says "unanswerable" once processed."""
    return vizwiz_prediction(pred) == "unanswerable"


# -- TextVQA ---------------------------------------------------------------------------------------


def m4c_process(text: str) -> str:
    """m4c's ``EvalAIAnswerProcessor``."""
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    return _words(_punctuation(_clean(text), _M4C_COMMA), CONTRACTIONS)


def textvqa_score(pred: str, answers: Sequence[str]) -> float:
    """``TextVQAAccuracyEvaluator``: both sides processed; the harness requires ten answers."""
    if len(answers) != 10:
        raise ValueError(f"TextVQA (TRI m4c scorer) needs 10 answers per question, got {len(answers)}")
    return _leave_one_out(m4c_process(pred), [m4c_process(a) for a in answers])


# -- GQA -------------------------------------------------------------------------------------------

_ASCII_PUNCT = str.maketrans("", "", string.punctuation)


def gqa_prediction(text: str) -> str:
    """``GQAScorer.convert_results``: no ASCII punctuation ("t-shirt" -> "tshirt"), lower case."""
    return text.translate(_ASCII_PUNCT).lower()


# -- RefCOCO ---------------------------------------------------------------------------------------


def parse_bbox(text: str) -> list | None:
    """``parse_bbox``: the whole output is one Python list literal of four numbers in [0, 1] with
    x0 < x1 and y0 < y1 (so ".13", "1e-2", a trailing comma, "+0.5", "0x1", True / False and
    surrounding whitespace or a comment pass; other text around the list does not)."""
    try:
        box = ast.literal_eval(text)
        if not (isinstance(box, list) and len(box) == 4):
            return None
        if not all(0 <= c <= 1 for c in box) or not (box[0] < box[2] and box[1] < box[3]):
            return None
        return box
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        # the harness lets the last two escape (a crash); here they make an invalid answer
        return None


def box_iou(pred: Sequence[float], gt: Sequence[float]) -> float:
    """``compute_iou``, in its order of float operations (the 0.5 cut is decided in the last bit)."""
    ix0, iy0 = max(pred[0], gt[0]), max(pred[1], gt[1])
    ix1, iy1 = min(pred[2], gt[2]), min(pred[3], gt[3])
    pred_area = (pred[2] - pred[0]) * (pred[3] - pred[1])
    gt_area = (gt[2] - gt[0]) * (gt[3] - gt[1])
    inter = max(0, ix1 - ix0) * max(0, iy1 - iy0)
    return inter / (pred_area + gt_area - inter)


def round_box(box: Sequence[float], decimals: int = 2) -> list[float]:
    """``box_xywh2xyxy``'s rounding of the normalised ground-truth box."""
    return [round(c, decimals) for c in box]


# -- AUCs (scikit-learn's definitions, float64; numpy: these run once per compute on small arrays) ---


def _np(x: torch.Tensor | np.ndarray | Sequence, dtype=np.float64) -> np.ndarray:
    return (x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)).astype(dtype)


def _curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """True / false positives above each distinct score, highest first (``_binary_clf_curve``)."""
    order = np.argsort(scores, kind="mergesort")[::-1]
    s, y = scores[order], labels[order]
    last_of_tie = np.append(np.flatnonzero(s[1:] != s[:-1]), len(s) - 1)
    tps = np.cumsum(y)[last_of_tie]
    return tps, last_of_tie + 1 - tps


def binary_roc_auc(scores, labels) -> float:
    """``roc_auc_score(labels, scores)``; nan where only one class is present (scikit-learn of the
    harness's time raises there, >= 1.6 returns nan)."""
    scores, labels = _np(scores), _np(labels)
    if labels.size == 0 or labels.all() or not labels.any():
        return math.nan
    tps, fps = _curve(scores, labels)
    tpr, fpr = np.insert(tps, 0, 0) / tps[-1], np.insert(fps, 0, 0) / fps[-1]
    return float(np.trapezoid(tpr, fpr))


def binary_average_precision(scores, labels) -> float:
    """``average_precision_score(labels, scores)``: sum over thresholds of (R_k - R_k-1) * P_k;
    0 without a positive."""
    scores, labels = _np(scores), _np(labels)
    if labels.size == 0:
        return math.nan
    tps, fps = _curve(scores, labels)
    if tps[-1] == 0:
        return 0.0
    precision, recall = tps / (tps + fps), tps / tps[-1]
    return max(0.0, float(np.sum(np.diff(recall, prepend=0.0) * precision)))


def _all_classes(probs: np.ndarray, labels: np.ndarray) -> bool:
    # scikit-learn binarises against the labels present: a missing class misaligns the columns
    # (an error); a label outside the columns is refused here likewise
    return labels.size > 0 and np.array_equal(np.unique(labels), np.arange(probs.shape[1]))


def ovo_roc_auc(probs, labels) -> float:
    """``roc_auc_score(labels, probs, multi_class="ovo")``: Hand & Till's mean over class pairs of
    the two one-against-the-other AUCs (each on its own column, both classes' samples only)."""
    probs, labels = _np(probs), _np(labels, np.int64)
    if not _all_classes(probs, labels):
        return math.nan
    pairs = []
    for a, b in itertools.combinations(range(probs.shape[1]), 2):
        m = (labels == a) | (labels == b)
        pairs.append(
            (binary_roc_auc(probs[m, a], labels[m] == a) + binary_roc_auc(probs[m, b], labels[m] == b)) / 2
        )
    return float(np.mean(pairs))


def macro_average_precision(probs, labels) -> float:
    """``average_precision_score(labels, probs)`` on multiclass labels: the mean over classes of
    each class's AP against its column."""
    probs, labels = _np(probs), _np(labels, np.int64)
    if not _all_classes(probs, labels):
        return math.nan
    return float(np.mean([binary_average_precision(probs[:, c], labels == c) for c in range(probs.shape[1])]))
