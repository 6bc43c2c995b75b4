"""Turning generated text into the answer a benchmark scores, one function per official rule.

Each parser reproduces a named scorer, because the papers' numbers depend on which one was used:

* yes/no — POPE's official ``evaluate.py`` (first sentence, "no"/"not" anywhere -> no, else yes)
  or lmms-eval's exact match; MME's ``calculation.py`` (first 4 characters) or lmms-eval's variant.
* letters — LLaVA's ``eval_science_qa.py``; lmms-eval's ScienceQA match; VLMEvalKit's ``can_infer``
  (MMBench) with its treatment of a stand-alone "A" as an article.
* counts — VLMEvalKit's TallyQA integer extraction (0-20, digits or words).
* boxes — a strict parser (the whole answer is one ``[x0, y0, x1, y1]`` in [0, 1], x0 < x1,
  y0 < y1) and lmms-eval's lenient one (the first four numbers anywhere; none -> all zeros).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

# -- yes / no ------------------------------------------------------------------------------------


def pope_official(text: str) -> str:
    """POPE ``evaluate.py``: keep the first sentence; "No", "no" or "not" among its words -> no."""
    if "." in text:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if ("No" in words or "not" in words or "no" in words) else "yes"


def pope_exact(text: str) -> str:
    """lmms-eval's POPE: the whole (lower-cased, stripped) answer must be "yes" or "no"."""
    t = text.strip().lower()
    return t if t in ("yes", "no") else "INVALID"


def mme_official(text: str) -> str:
    """MME ``calculation.py``: exact yes/no, else "yes"/"no" within the first four characters."""
    t = text.lower()
    if t in ("yes", "no"):
        return t
    prefix = t[:4]
    return "yes" if "yes" in prefix else "no" if "no" in prefix else "other"


def mme_lmms(text: str) -> str:
    """lmms-eval's MME parse: stripped, periods removed, "y"/"n" accepted."""
    t = text.lower().strip().replace(".", "")
    if t in ("yes", "no"):
        return t
    if len(t) == 1:
        return {"y": "yes", "n": "no"}.get(t, "other")
    prefix = t[:4]
    return "yes" if "yes" in prefix else "no" if "no" in prefix else "other"


def true_false(text: str) -> str:
    """A statement judged true or false (VSR): the first word, "true"/"yes" or "false"/"no"."""
    words = re.findall(r"[a-z]+", text.lower())
    first = words[0] if words else ""
    return "true" if first in ("true", "yes") else "false" if first in ("false", "no") else "other"


# -- option letters ------------------------------------------------------------------------------

_ANSWER_IS = re.compile(r"The answer is ([A-Z]).")


def sqa_llava(text: str, options: Sequence[str] = ("A", "B", "C", "D", "E")) -> str:
    """LLaVA ``eval_science_qa.py``: a bare letter, "X. ...", or exactly one "The answer is X."."""
    if text in options:
        return text
    if len(text) >= 3 and text[0] in options and text[1:3] == ". ":
        return text[0]
    found = _ANSWER_IS.findall(text)
    return found[0] if len(found) == 1 else "FAILED"


def sqa_lmms_correct(text: str, target: str) -> bool:
    """lmms-eval's ScienceQA: the stripped answer is the letter, or starts with "<letter>."."""
    t = text.strip()
    return t == target or t.startswith(target + ".")


_REJECTIONS = (
    "Sorry, I can't help with images of people yet.",
    "I can't process this file.",
    "I'm sorry, but without the image provided",
    "Cannot determine the answer",
)


def can_infer_option(text: str, choices: Mapping[str, str]) -> str | bool:
    if "Failed to obtain answer via API" in text:
        return False
    if any(r in text for r in _REJECTIONS):
        return "Z"
    mod = text
    for c in ".()[],:;!*#{}":
        mod = mod.replace(c, " ")
    splits = [x.strip() for x in mod.split()]
    # "A" is an article as often as an option: in a sentence that names another option too, drop it
    # (VLMEvalKit: "A might be a quantifier in the string").
    if "A" in splits and len(splits) > 3 and sum(c in splits for c in choices if c != "A") == 1:
        splits = [s for s in splits if s != "A"]
    found = [c for c in choices if c in splits]
    if len(found) == 1:
        return found[0]
    if not found and sum(s in ("Z", "") for s in splits) == 1:
        return "Z"
    return False


def can_infer_text(text: str, choices: Mapping[str, str]) -> str | bool:
    t = text.lower()
    cands = [k for k, v in choices.items() if str(v).lower() in t]
    return cands[0] if len(cands) == 1 else False


def can_infer(text: str, choices: Mapping[str, str]) -> str | bool:
    """VLMEvalKit ``can_infer``: an option letter, else a unique option text; "Z" = refused; False = none."""
    return can_infer_option(str(text), choices) or can_infer_text(str(text), choices)


# -- counts --------------------------------------------------------------------------------------

_NUMBER_WORDS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
]


def tally_int(text: str) -> int | None:
    """VLMEvalKit's TallyQA parse: the first word that is 0-20 in digits or words, else None."""
    for token in re.split(r"[^0-9a-zA-Z]+", text.lower()):
        if token.isdigit() and int(token) <= 20:
            return int(token)
        if token in _NUMBER_WORDS:
            return _NUMBER_WORDS.index(token)
    return None


# -- boxes ---------------------------------------------------------------------------------------

_NUM = r"\s*(-?\d+(?:\.\d+)?)\s*"
_STRICT_BOX = re.compile(rf"^\[{_NUM},{_NUM},{_NUM},{_NUM}\]$")
_ANY_NUM = re.compile(r"-?\d+(?:\.\d+)?")


def box_strict(text: str) -> tuple[float, float, float, float] | None:
    """The answer is exactly one normalised, well-ordered box "[x0, y0, x1, y1]", or None."""
    m = _STRICT_BOX.match(text.strip())
    if m is None:
        return None
    x0, y0, x1, y1 = (float(v) for v in m.groups())
    if not all(0.0 <= v <= 1.0 for v in (x0, y0, x1, y1)) or x0 >= x1 or y0 >= y1:
        return None
    return x0, y0, x1, y1


def first_box(text: str) -> tuple[float, float, float, float] | None:
    """The first four numbers anywhere in the answer as (x0, y0, x1, y1), or None."""
    nums = [float(v) for v in _ANY_NUM.findall(text)[:4]]
    return tuple(nums) if len(nums) == 4 else None  # type: ignore[return-value]


def box_lenient(text: str) -> tuple[float, float, float, float]:
    """lmms-eval: the first four numbers anywhere in the answer; none found -> (0, 0, 0, 0)."""
    return first_box(text) or (0.0, 0.0, 0.0, 0.0)


def box_iou(a: Sequence[float], b: Sequence[float]) -> float | None:
    """IoU of (x0, y0, x1, y1) boxes, lmms-eval's arithmetic (signed areas); None where the union
    is zero (a reversed box cancelling the other's area: lmms-eval raises ZeroDivisionError)."""
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return None if union == 0 else inter / union
