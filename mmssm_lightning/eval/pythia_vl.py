"""Pythia-VL vs Mamba-VL (Pantazopoulos et al. 2024, App. A.2 and Table 9) as the authors' harness
scores it: gpantaz/vl_mamba at c788f5f, ``src/vl_mamba/evaluation/evaluate_*.py`` run by
``scripts/evaluate_on_all.sh``. Every rule below is that code's, quirks included (tested against its
outputs in ``tests/fixtures/eval/pythia_vl_cases.json``):

* the answer is the decoded generation *with* its special tokens (``tokenizer.decode``), cut at the
  first ".<EOS>" (VQAv2, TextVQA, GQA, VSR, AI2D), at the first EOS (POPE, captions), or at the first
  EOS minus one character (RefCOCO); an answer that ends without "." keeps its EOS and so never
  matches (the protocol sets ``raw_output``);
* VQAv2 / TextVQA: EvalAI's answer processor on the lower-cased answer, the ten annotator answers
  raw, score ``min(1, round(0.3 * count, 1))``;
* GQA: lower-cased answer equal to the lower-cased reference;
* VSR: false iff the answer is exactly "False"; POPE: no iff the answer, lower-cased, is "no";
* AI2D: the answer equals the option letter; Visual7W: EOS removed, text before the first ".";
* RefCOCO: the first "[...]" split at commas into four floats (normalised), scaled by the image's
  width / height, float32 IoU with the pixel box strictly above 0.5;
* captions: references capitalised and given a final period, scored by pycocoevalcap.

The prompts (:class:`PythiaVLProtocol`): the task instruction, the image before it, questions,
captions and phrases through ``format_text`` (stripped, ``str.capitalize``-d, a final period unless
one of .?! ends them), options capitalised, "A: ..." lines, "Answer: " last.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from mmssm_lightning.eval.metrics import CaptionScores, _GroupedMean
from mmssm_lightning.eval.normalize import evalai_process
from mmssm_lightning.eval.protocols import BenchmarkProtocol
from mmssm_lightning.eval.sample import EvalSample

EOS = "<|endoftext|>"  # GPT-NeoX-20B's, the tokenizer of both Pythia and Mamba


def format_text(text: str, capitalize: bool = True, punctuate: bool = True) -> str:
    """``vl_mamba.datasets.base_dataset.format_text`` with ``strip=True`` and no BOS / EOS."""
    text = text.strip()
    if capitalize:
        text = text.capitalize()
    if punctuate and not text.endswith((".", "?", "!")):
        text = f"{text}."
    return text


# -- the answer each evaluate_*.py scores --------------------------------------------------------------


def vqa_answer(raw: str, eos: str = EOS) -> str:
    """``evaluate_vqav2.py`` / ``evaluate_textvqa.py``: cut at ".<EOS>", lower case, EvalAI processing."""
    return evalai_process(raw.split(f".{eos}")[0].lower())


def vqa_score(answer: str, references: Sequence[str]) -> float:
    """``vqa_v2_score``: 0.3 per annotator who gave exactly this answer, at most 1."""
    return min(1.0, round(0.3 * Counter(references).get(answer, 0), 1))


def gqa_answer(raw: str, eos: str = EOS) -> str:
    return raw.split(f".{eos}")[0].lower()


def vsr_label(raw: str, eos: str = EOS) -> str:
    """``evaluate_vsr.py``: "false" only for exactly "False" before ".<EOS>"."""
    return "false" if raw.split(f".{eos}")[0] == "False" else "true"


def pope_label(raw: str, eos: str = EOS) -> str:
    """``evaluate_pope.py``: "no" only for "no" in any case before the EOS."""
    return "no" if raw.split(eos)[0].lower() == "no" else "yes"


def ai2d_letter(raw: str, eos: str = EOS) -> str:
    return raw.split(f".{eos}")[0]


def visual7w_letter(raw: str, eos: str = EOS) -> str:
    return raw.replace(eos, "").split(".")[0]


def box_answer(raw: str, eos: str = EOS) -> list[float] | None:
    """``evaluate_refcoco.py``: the text before the first EOS less its last character, then the first
    "[" ... "]" (or the end) split at commas; four floats or None."""
    text = raw.split(eos)[0][:-1]
    try:
        box = [float(c) for c in text.split("[")[1].split("]")[0].split(",")]
    except (IndexError, ValueError):
        return None
    return box if len(box) == 4 else None


def box_hit(
    box: Sequence[float],
    target: Sequence[float],
    size: tuple[int, int],
    threshold: float = 0.5,
) -> bool:
    """``compute_score``: the normalised ``box`` in pixels, IoU with the pixel ``target`` (x0 y0 x1 y1)
    in float32 as ``matched_pairwise_iou`` computes it, strictly above ``threshold``."""
    w, h = size
    a = torch.tensor([box[0] * w, box[1] * h, box[2] * w, box[3] * h]).unsqueeze(0)
    b = torch.tensor(list(target), dtype=torch.float32).unsqueeze(0)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    wh = (torch.min(a[:, 2:], b[:, 2:]) - torch.max(a[:, :2], b[:, :2])).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]
    return bool((inter / (area_a + area_b - inter))[0] > threshold)


def caption_answer(raw: str, eos: str = EOS, drop_newlines: bool = False) -> str:
    """The caption before the first EOS; COCO's script also removes "\\n##" and then newlines."""
    text = raw.split(eos)[0]
    return text.replace("\n##", "").replace("\n", "") if drop_newlines else text


# -- metrics -----------------------------------------------------------------------------------------


class PythiaVLVQAAccuracy(_GroupedMean):
    """VQAv2 / TextVQA: :func:`vqa_score` of :func:`vqa_answer` against ``samples[i].answers`` (raw)."""

    def __init__(self, eos: str = EOS, groups: Sequence[str] | None = None) -> None:
        super().__init__(groups)
        self.eos = eos

    def update(self, preds: Sequence[str], samples: Sequence[EvalSample]) -> None:
        for p, s in zip(preds, samples):
            self._add(vqa_score(vqa_answer(p, self.eos), s.answers), s.category)


class PythiaVLExactMatch(_GroupedMean):
    """GQA: :func:`gqa_answer` equal to ``answers[0]`` lower-cased."""

    def __init__(self, eos: str = EOS, groups: Sequence[str] | None = None) -> None:
        super().__init__(groups)
        self.eos = eos

    def update(self, preds: Sequence[str], samples: Sequence[EvalSample]) -> None:
        for p, s in zip(preds, samples):
            self._add(float(gqa_answer(p, self.eos) == s.answers[0].lower()), s.category)


_LETTERS: dict[str, Callable[[str, str], str]] = {"ai2d": ai2d_letter, "visual7w": visual7w_letter}


class PythiaVLChoiceAccuracy(_GroupedMean):
    """AI2D / Visual7W: the answer read by ``style`` equal to the option letter (``label``)."""

    def __init__(
        self, style: Literal["ai2d", "visual7w"] = "ai2d", eos: str = EOS, groups: Sequence[str] | None = None
    ) -> None:
        super().__init__(groups)
        if style not in _LETTERS:
            raise ValueError(f"Pythia-VL choice style must be ai2d | visual7w, got {style!r}")
        self.style, self.eos = style, eos

    def update(self, preds: Sequence[str], samples: Sequence[EvalSample]) -> None:
        for p, s in zip(preds, samples):
            self._add(float(_LETTERS[self.style](p, self.eos) == s.label), s.category)


class PythiaVLBoxAccuracy(_GroupedMean):
    """RefCOCO / RefCOCO+ / RefCOCOg: :func:`box_hit` of :func:`box_answer` with ``sample.box`` in the
    pixels of ``sample.image_size``; an unparsable answer is a miss."""

    def __init__(self, threshold: float = 0.5, eos: str = EOS, groups: Sequence[str] | None = None) -> None:
        super().__init__(groups)
        self.threshold, self.eos = threshold, eos

    def update(self, preds: Sequence[str], samples: Sequence[EvalSample]) -> None:
        for p, s in zip(preds, samples):
            if s.box is None or s.image_size is None:
                raise ValueError(f"sample {s.id}: Pythia-VL box scoring needs its box and image_size")
            w, h = s.image_size
            target = (s.box[0] * w, s.box[1] * h, s.box[2] * w, s.box[3] * h)
            box = box_answer(p, self.eos)
            hit = box is not None and box_hit(box, target, s.image_size, self.threshold)
            self._add(float(hit), s.category)


class PythiaVLCaptionScores(CaptionScores):
    """COCO / NoCaps / TextCaps: :func:`caption_answer` against the references through ``format_text``
    (capitalised, final period), then pycocoevalcap's CIDEr-D and BLEU on PTB tokens."""

    def __init__(self, eos: str = EOS, drop_newlines: bool = False, tokenize: bool = True) -> None:
        super().__init__(tokenize)
        self.eos, self.drop_newlines = eos, drop_newlines

    def update(self, preds: Sequence[str], samples: Sequence[EvalSample]) -> None:
        super().update(
            [caption_answer(p, self.eos, self.drop_newlines) for p in preds],
            [
                EvalSample(id=s.id, answers=[format_text(r) for r in s.answers], category=s.category)
                for s in samples
            ],
        )


# -- prompts -----------------------------------------------------------------------------------------


@dataclass
class PythiaVLProtocol(BenchmarkProtocol):
    """A :class:`BenchmarkProtocol` whose ``{question}`` goes through :func:`format_text` (capitalised
    or not: ``capitalize_question``), whose options are capitalised without a period, and whose
    ``{ocr}`` is ``ocr_format`` around the sample's OCR joined by ``ocr_sep`` (TextVQA's tokens, AI2D's
    text labels), shown whenever the reader found OCR (an empty TextVQA list included)."""

    capitalize_question: bool = True
    option_format: str = "{letter}: {text}"
    ocr_format: str | None = None
    ocr_sep: str = " "
    raw_output: bool = True

    def format(self, sample: EvalSample) -> str:
        options = self.option_sep.join(
            self.option_format.format(letter=k, text=format_text(v, punctuate=False))
            for k, v in (sample.choices or {}).items()
        )
        ocr = (
            self.ocr_format.format(ocr=self.ocr_sep.join(sample.ocr))
            if self.ocr_format is not None and sample.ocr is not None
            else ""
        )
        question = format_text(self.question(sample), capitalize=self.capitalize_question)
        return self.prompt.format(question=question, options=options, ocr=ocr)
