"""Answer normalisation of the official scorers, reproduced in pure Python.

* :func:`vqa_process` — the punctuation / digit / article / contraction processing of the official
  VQA evaluation (``vqaEval.py``, GT-Vision-Lab), with its ``periodStrip`` pattern as released
  (``(?!<=\\d)``, a typo that strips a period after a digit too) or corrected (``(?<!\\d)``, as
  VLMEvalKit has it).
* :func:`evalai_process` — the answer processor EvalAI's VQA server applies to predictions
  (``EvalAIAnswerProcessor`` of mmf/pythia, also used by TextVQA's m4c evaluator and lmms-eval).
* :func:`ptb_tokenize` — the PTB tokenisation of pycocoevalcap's caption scorers without Java:
  Stanford PTBTokenizer rules for words, contractions, brackets, quotes and abbreviations, lower
  case, then pycocoevalcap's punctuation filter — including its quirk that the filter compares
  against upper-case ``-LRB-`` after lower-casing, so ``-lrb-`` / ``-rrb-`` survive.
"""

from __future__ import annotations

import re

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
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")
_PERIOD_STRIP_RELEASED = re.compile(r"(?!<=\d)(\.)(?!\d)")  # sic: as in vqaEval.py
_PERIOD_STRIP_FIXED = re.compile(r"(?<!\d)(\.)(?!\d)")


def _punctuation(text: str, period: re.Pattern, comma: re.Pattern = _COMMA_STRIP) -> str:
    out = text
    for p in PUNCT:
        if (p + " " in text or " " + p in text) or comma.search(text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return period.sub("", out)


def _digits_articles(text: str) -> str:
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in ARTICLES]
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


def vqa_process(text: str, fixed_period: bool = False) -> str:
    """vqaEval.py's processPunctuation + processDigitArticle (``fixed_period``: VLMEvalKit's regex)."""
    return _digits_articles(
        _punctuation(text, _PERIOD_STRIP_FIXED if fixed_period else _PERIOD_STRIP_RELEASED)
    )


def clean_whitespace(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


_EVALAI_COMMA = re.compile(r"(?<=\d)(\,)+(?=\d)")


def evalai_process(text: str) -> str:
    """EvalAI's VQA answer processor (mmf ``EvalAIAnswerProcessor``)."""
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = clean_whitespace(text)
    text = _punctuation(text, _PERIOD_STRIP_RELEASED, _EVALAI_COMMA)
    return _digits_articles(text)


# -- PTB tokenisation (pycocoevalcap) --------------------------------------------------------------
COCO_PUNCTUATIONS = {
    "''",
    "'",
    "``",
    "`",
    "-LRB-",
    "-RRB-",
    "-LCB-",
    "-RCB-",
    ".",
    "?",
    "!",
    ",",
    ":",
    "-",
    "--",
    "...",
    ";",
}
_BRACKETS = {"(": "-LRB-", ")": "-RRB-", "{": "-LCB-", "}": "-RCB-", "[": "-LSB-", "]": "-RSB-"}
# Words the Stanford tokenizer keeps with their period (a subset of its list: titles, places, units)
ABBREVIATIONS = {
    "mr",
    "mrs",
    "ms",
    "dr",
    "prof",
    "st",
    "ave",
    "blvd",
    "rd",
    "mt",
    "ft",
    "jr",
    "sr",
    "co",
    "corp",
    "inc",
    "ltd",
    "vs",
    "etc",
    "no",
    "jan",
    "feb",
    "mar",
    "apr",
    "jun",
    "jul",
    "aug",
    "sep",
    "sept",
    "oct",
    "nov",
    "dec",
    "gen",
    "gov",
    "sen",
    "rep",
    "lt",
    "col",
    "capt",
    "sgt",
    "dept",
    "univ",
    "approx",
    "est",
    "min",
    "max",
}
_ACRONYM = re.compile(r"^(?:[A-Za-z]\.){2,}$|^(?:[A-Za-z]\.)+[A-Za-z]$")
_CONTRACTION = re.compile(r"^(.+?)(n't|'s|'re|'ve|'ll|'d|'m)$", re.IGNORECASE)
_LEADING = "([{\"'`"
_TRAILING = ")]},;:?!\"'"


def _split_word(word: str) -> list[str]:
    head: list[str] = []
    tail: list[str] = []
    while word and word[0] in _LEADING:
        c = word[0]
        head.append(_BRACKETS.get(c, "``" if c == '"' else "`" if c in "'`" else c))
        word = word[1:]
    while word:
        if word.endswith("..."):
            tail.insert(0, "...")
            word = word[:-3]
        elif word.endswith("--"):
            tail.insert(0, "--")
            word = word[:-2]
        elif word[-1] in _TRAILING:
            c = word[-1]
            tail.insert(0, _BRACKETS.get(c, "''" if c in "\"'" else c))
            word = word[:-1]
        else:
            break
    middle: list[str] = []
    if word:
        parts = re.split(r"(--|/)", word)  # a dash pair or a slash between words is its own token
        for part in parts:
            if not part:
                continue
            if part in ("--", "/"):
                middle.append(part)
                continue
            if part.endswith(".") and len(part) > 1:
                stem = part[:-1]
                if not (
                    _ACRONYM.match(part) or stem.lower() in ABBREVIATIONS or re.fullmatch(r"\d+\.\d*", part)
                ):
                    m = _CONTRACTION.match(stem)
                    middle.extend([m.group(1), m.group(2)] if m else [stem])
                    middle.append(".")
                    continue
            m = _CONTRACTION.match(part)
            middle.extend([m.group(1), m.group(2)] if m and not _ACRONYM.match(part) else [part])
    return head + middle + tail


def ptb_tokenize(text: str) -> str:
    """pycocoevalcap's ``PTBTokenizer`` output for one caption: space-joined lower-case tokens."""
    text = text.replace('"', ' " ')
    tokens = [t.lower() for w in text.split() for t in _split_word(w)]
    return " ".join(t for t in tokens if t not in COCO_PUNCTUATIONS)
