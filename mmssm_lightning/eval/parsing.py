"""Turning generated text into the answer a benchmark scores, one function per official rule.

Each parser reproduces a named scorer, because the papers' numbers depend on which one was used:

* yes/no — POPE's official ``evaluate.py`` (first sentence, "no"/"not" anywhere -> no, else yes)
  or lmms-eval's exact match; MME's ``calculation.py`` (first 4 characters) or lmms-eval's variant.
* letters — LLaVA's ``eval_science_qa.py``; lmms-eval's ScienceQA match; VLMEvalKit's ``can_infer``
  (MMBench: a lone option letter among the last words, "answer is X", or a unique option text).
* counts — VLMEvalKit's TallyQA integer extraction (0-20, ASCII digits or words, as whole words).
* boxes — a strict parser (the whole answer is one ``[x0, y0, x1, y1]`` in [0, 1], x0 < x1,
  y0 < y1) and lmms-eval's lenient one (the first "[a, b, c, d]" anywhere; none -> all zeros).

Each agrees with its harness's own code on the cases of ``tests/fixtures/eval/*_cases.json``;
Pythia-VL's answer handling is in :mod:`~mmssm_lightning.eval.pythia_vl`.
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
    """lmms-eval ``scienceqa/utils.py`` ``sqa_process_results`` (75571cf): the stripped answer is the
    letter in either case, or starts with an upper-case character and "." whose lower case is it."""
    pred, target = text.strip(), target.strip().lower()
    if pred.lower() == target:
        return True
    return len(pred) >= 2 and pred[0].isupper() and pred[1] == "." and pred[0].lower() == target


_REJECTIONS = (
    "Sorry, I can't help with images of people yet.",
    "I can't process this file.",
    "I'm sorry, but without the image provided",
    "Cannot determine the answer",
)
_VERBOSE_ANSWER = re.compile(r"(?i)(?:correct\s+)?answer\s+is\s+\**([ABCD])\**")


def can_infer_option(text: str, choices: Mapping[str, str]) -> str | bool:
    """VLMEvalKit ``vlmeval/utils/matching_util.py`` ``can_infer_option`` (e8e78f0): a refusal -> "Z";
    exactly one option letter among the words (after ``.()[],:;!*#{}`` become spaces), and it is one
    of the last four words -> that letter; no letter but a "Z" word -> "Z"; else "answer is X"."""
    if "Failed to obtain answer via API" in text:
        return False
    if any(r in text for r in _REJECTIONS):
        return "Z"
    mod = text
    for c in ".()[],:;!*#{}":
        mod = mod.replace(c, " ")
    splits = [x.strip() for x in mod.split()]
    found = [c for c in choices if c in splits]
    if len(found) == 1:
        for c in choices:  # VLMEvalKit tests every option: the unique one is the one that can pass
            if c in splits and splits.index(c) > len(splits) - 5:
                return c
    elif not found and sum(z in splits for z in ("Z", "")) == 1:
        return "Z"
    m = _VERBOSE_ANSWER.search(text)
    if m and m.group(1).upper() in choices:
        return m.group(1).upper()
    return False


def can_infer_text(text: str, choices: Mapping[str, str]) -> str | bool:
    """VLMEvalKit ``can_infer_text``: the one option whose text (lower case) is in the answer, unless the
    answer is longer than twice all option texts together."""
    t = text.lower()
    if len(t) > 2 * sum(len(str(v)) for v in choices.values()):
        return False
    cands = [k for k, v in choices.items() if str(v).lower() in t]
    return cands[0] if len(cands) == 1 else False


def can_infer(text: str, choices: Mapping[str, str]) -> str | bool:
    """VLMEvalKit ``can_infer``: an option letter, else a unique option text; "Z" = refused; False = none."""
    return can_infer_option(str(text), choices) or can_infer_text(str(text), choices)


# -- counts --------------------------------------------------------------------------------------

_NUMBER_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty"
).split()
# \b is Unicode-aware: "3_dogs", "é3" and "03" hold no count, "3.5" and "twenty-one" do (3, 20)
_TALLY = re.compile(r"(\b([0-9]|1[0-9]|20)\b|\b(" + "|".join(_NUMBER_WORDS) + r")\b)")


def tally_int(text: str) -> int | None:
    """VLMEvalKit ``dataset/utils/tallyqa.py`` ``text_to_int`` (e8e78f0): the first 0-20, in ASCII
    digits or English words, standing as a word of the lower-cased answer; else None."""
    m = _TALLY.search(str(text).lower())
    if m is None:
        return None
    found = m.group()
    return int(found) if found.isdigit() else _NUMBER_WORDS.index(found)


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


_NUM_LMMS = r"(-?\d+(?:\.\d+)?)"
_LMMS_BOX = re.compile(rf"\[\s*{_NUM_LMMS},\s*{_NUM_LMMS},\s*{_NUM_LMMS},\s*{_NUM_LMMS}\s*\]")


def box_lenient(text: str) -> tuple[float, float, float, float]:
    """lmms-eval ``refcoco/utils_rec.py`` ``parse_float_sequence_within`` (75571cf): the first
    "[a, b, c, d]" anywhere (no space before a comma; Unicode digits count), else (0, 0, 0, 0)."""
    m = _LMMS_BOX.search(text)
    return tuple(float(v) for v in m.groups()) if m else (0.0, 0.0, 0.0, 0.0)  # type: ignore[return-value]


def box_iou(a: Sequence[float], b: Sequence[float]) -> float | None:
    """IoU of (x0, y0, x1, y1) boxes, lmms-eval's arithmetic (signed areas); None where the union
    is zero (a reversed box cancelling the other's area: lmms-eval raises ZeroDivisionError)."""
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return None if union == 0 else inter / union
