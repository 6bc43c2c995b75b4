"""Answer normalisation of the official VQA scorers, reproduced in pure Python.

The VQA scorers share ``processPunctuation`` / ``processDigitArticle`` of GT-Vision-Lab's
``PythonEvaluationTools/vqaEvaluation/vqaEval.py`` (a013f0043c1e2cdc995922dfe257f7149aa9af06) and differ
in the regexes and in the Python that runs them:

* :func:`official_process` — ``vqaEval.py`` as released, which is Python 2: its ``\\d`` is ASCII (the
  ``re.UNICODE`` it means to pass lands in ``sub``'s ``count``, so at most 32 periods go), ``lower()``
  knows Unicode 5.2 only (no final sigma, ``İ`` -> ``i``) and U+180E is whitespace. The period pattern
  ``(?!<=\\d)(\\.)(?!\\d)`` is malformed (a look-ahead), so "5." loses its period.
* :func:`evalai_process` — ``EvalAIAnswerProcessor`` of LLaVA ``llava/eval/m4c_evaluator.py``
  (c121f0432da27facab705978f83c4ada465e46fd; a copy of mmf's, and of lmms-eval's
  ``tasks/_task_utils/vqa_eval_metric.py``), Python 3.
* :func:`lmms_process` — lmms-eval ``tasks/vqav2/utils.py`` (75571cfe0fa36ca5ec2e6aa2bb268f9d38295af3):
  the processor's punctuation (its comma pattern) and digit/article steps without its lower-casing,
  comma / ``?`` removal and ``'s`` split.
* :func:`tri_process_prediction` / :func:`tri_process_answer` — TRI-ML/vlm-evaluation
  ``vlm_eval/util/evaluation/vqav2/eval.py`` (d9f58967de7f62371ee068dbfa07878cdaef5607): the prediction
  gets both steps, the ground truth only the punctuation step (not even lower case).
* :func:`vlmevalkit_process` — VLMEvalKit ``vlmeval/dataset/utils/vqa_eval.py`` ``process_answer``
  (e8e78f05f3080fe28154f2130321f17951c3be94) with ``vlmeval/smp/misc.py`` ``process_punctuation``:
  the period pattern fixed to ``(?<!\\d)\\.(?!\\d)``, so "5." keeps its period.

The PTB tokenisation of the caption scorers is :mod:`~mmssm_lightning.eval.ptb`.
"""

from __future__ import annotations

import re
from functools import lru_cache

from mmssm_lightning.eval.ptb import ptb_tokenize, ptb_tokenize_corpus

__all__ = [
    "clean_whitespace",
    "evalai_process",
    "lmms_process",
    "official_process",
    "ptb_tokenize",
    "ptb_tokenize_corpus",
    "py2_clean_whitespace",
    "tri_process_answer",
    "tri_process_prediction",
    "vlmevalkit_process",
    "vqa_process",
]

CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's",
    "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll",
    "let's": "let's", "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at",
    "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've",
    "she'dve": "she'd've", "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've", "somebodyll": "somebody'll",
    "somebodys": "somebody's", "someoned": "someone'd", "someoned've": "someone'd've",
    "someone'dve": "someone'd've", "someonell": "someone'll", "someones": "someone's",
    "somethingd": "something'd", "somethingd've": "something'd've", "something'dve": "something'd've",
    "somethingll": "something'll", "thats": "that's", "thered": "there'd", "thered've": "there'd've",
    "there'dve": "there'd've", "therere": "there're", "theres": "there's", "theyd": "they'd",
    "theyd've": "they'd've", "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're",
    "theyve": "they've", "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're", "whats": "what's",
    "whatve": "what've", "whens": "when's", "whered": "where'd", "wheres": "where's", "whereve": "where've",
    "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've", "wholl": "who'll", "whos": "who's",
    "whove": "who've", "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't",
    "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've",
    "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll", "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd", "youd've": "you'd've",
    "you'dve": "you'd've", "youll": "you'll", "youre": "you're", "youve": "you've",
}  # fmt: skip
NUMBER_WORDS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
ARTICLES = ("a", "an", "the")
PUNCT = [
    ";",
    r"/",
    "[",
    "]",
    '"',
    "{",
    "}",
    "(",
    ")",
    "=",
    "+",
    "\\",
    "_",
    "-",
    ">",
    "<",
    "@",
    "`",
    ",",
    "?",
    "!",
]
# ``re.UNICODE`` (32) passed where ``sub`` takes ``count``: every scorer removes at most 32 periods.
_PERIOD_COUNT = int(re.UNICODE)
# (?!<=\d) is a look-ahead that always holds: "5." loses its period, "3.5" keeps it.
_PERIOD_RELEASED = re.compile(r"(?!<=\d)(\.)(?!\d)")
_PERIOD_RELEASED_PY2 = re.compile(r"(?!<=\d)(\.)(?!\d)", re.ASCII)  # Python 2 without re.UNICODE: \d = [0-9]
_PERIOD_FIXED = re.compile(r"(?<!\d)\.(?!\d)")
_COMMA = re.compile(r"(\d)(,)(\d)")
_COMMA_PY2 = re.compile(r"(\d)(,)(\d)", re.ASCII)
_COMMA_EVALAI = re.compile(r"(?<=\d)(,)+(?=\d)")  # also matches "1,,000", which (\d)(,)(\d) does not

# Python 2.7's unicode database is Unicode 5.2: these letters got their case later, so its lower()
# leaves them as they are (Cherokee, Georgian Mtavruli, Latin Extended-D additions, ...).
_PY2_CASELESS = frozenset(
    c
    for lo, hi in (
        (0x37F, 0x37F), (0x526, 0x52E), (0x10C7, 0x10C7), (0x10CD, 0x10CD), (0x13A0, 0x13F5),
        (0x1C90, 0x1CBA), (0x1CBD, 0x1CBF), (0x2C2F, 0x2C2F), (0x2CF2, 0x2CF2), (0xA660, 0xA660),
        (0xA698, 0xA69A), (0xA78D, 0xA78D), (0xA790, 0xA792), (0xA796, 0xA7AE), (0xA7B0, 0xA7B4),
        (0xA7B6, 0xA7C7), (0xA7C9, 0xA7C9), (0xA7D0, 0xA7D0), (0xA7D6, 0xA7D8), (0xA7F5, 0xA7F5),
        (0x104B0, 0x104D3), (0x10570, 0x10595), (0x10C80, 0x10CB2), (0x118A0, 0x118BF),
        (0x16E40, 0x16E5F), (0x1E900, 0x1E921),
    )
    for c in map(chr, range(lo, hi + 1))
    if c.lower() != c
)  # fmt: skip
_PY2_WHITESPACE = "".join(c for c in map(chr, range(0x3001)) if c.isspace()) + "\u180e"


def _py2_lower(text: str) -> str:
    """``unicode.lower()`` of Python 2.7: simple case mapping char by char (no final sigma, no
    ``İ`` -> ``i̇``), Unicode 5.2."""
    if text.isascii():
        return text.lower()
    return "".join("i" if c == "\u0130" else c if c in _PY2_CASELESS else c.lower() for c in text)


def _py2_split(text: str) -> list[str]:
    return text.replace("\u180e", " ").split()


def py2_clean_whitespace(text: str) -> str:
    """``vqaEval.py``'s ``\\n`` / ``\\t`` -> space and ``strip()`` under Python 2 (U+180E is whitespace)."""
    return text.replace("\n", " ").replace("\t", " ").strip(_PY2_WHITESPACE)


def clean_whitespace(text: str) -> str:
    """The same under Python 3: the lmms-eval, TRI and VLMEvalKit copies."""
    return text.replace("\n", " ").replace("\t", " ").strip()


def _punctuation(text: str, comma: re.Pattern, period: re.Pattern) -> str:
    """``processPunctuation``: a mark next to a space, or any mark once a digit-comma-digit is
    anywhere in the text, is deleted; otherwise it becomes a space. Both tests read the original text."""
    out = text
    delete_all = comma.search(text) is not None
    for p in PUNCT:
        out = out.replace(p, "" if delete_all or p + " " in text or " " + p in text else " ")
    return period.sub("", out, _PERIOD_COUNT)


def _digits_articles(words: list[str]) -> str:
    """``processDigitArticle`` after its ``lower().split()``: number words to digits, articles out,
    contractions restored."""
    words = [NUMBER_WORDS.get(w, w) for w in words]
    return " ".join(CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES)


@lru_cache(maxsize=1 << 16)  # answers repeat: VQAv2 has ~2M answers, far fewer strings
def official_process(text: str) -> str:
    """``processPunctuation`` then ``processDigitArticle`` of ``vqaEval.py`` as Python 2.7 runs them."""
    return _digits_articles(_py2_split(_py2_lower(_punctuation(text, _COMMA_PY2, _PERIOD_RELEASED_PY2))))


def vqa_process(text: str, fixed_period: bool = False) -> str:
    """The two steps under Python 3 (TRI, lmms-eval's copy of the comma rule aside), with VLMEvalKit's
    period pattern if ``fixed_period``."""
    text = _punctuation(text, _COMMA, _PERIOD_FIXED if fixed_period else _PERIOD_RELEASED)
    return _digits_articles(text.lower().split())


@lru_cache(maxsize=1 << 16)
def evalai_process(text: str) -> str:
    """``EvalAIAnswerProcessor.__call__``: lower case, commas and ``?`` out, ``'s`` split off, whitespace
    cleaned, then punctuation (its comma pattern: moot, commas are gone) and digits / articles."""
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = clean_whitespace(text)
    return _digits_articles(_punctuation(text, _COMMA_EVALAI, _PERIOD_RELEASED).lower().split())


@lru_cache(maxsize=1 << 16)
def lmms_process(text: str) -> str:
    """lmms-eval vqav2: whitespace cleaned, then the processor's ``process_punctuation`` and
    ``process_digit_article`` (applied to prediction and every answer)."""
    text = _punctuation(clean_whitespace(text), _COMMA_EVALAI, _PERIOD_RELEASED)
    return _digits_articles(text.lower().split())


@lru_cache(maxsize=1 << 16)
def tri_process_prediction(text: str) -> str:
    """TRI vqav2 on the prediction: whitespace cleaned, punctuation, digits / articles / contractions."""
    return vqa_process(clean_whitespace(text))


@lru_cache(maxsize=1 << 16)
def tri_process_answer(text: str) -> str:
    """TRI vqav2 on each ground-truth answer: punctuation only (no whitespace cleaning, no lower case)."""
    return _punctuation(text, _COMMA, _PERIOD_RELEASED)


@lru_cache(maxsize=1 << 16)
def vlmevalkit_process(text: str) -> str:
    """VLMEvalKit ``process_answer`` (prediction and answers alike)."""
    return vqa_process(clean_whitespace(text), fixed_period=True)
