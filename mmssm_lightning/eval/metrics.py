"""Benchmark metrics as torchmetrics ``Metric`` s with tensor states, so ``compute()`` after a
multi-GPU evaluation sees every rank's samples (counts are summed; per-sample records are
concatenated). Text never travels between ranks: captions go as 63-bit token hashes, which is
all n-gram matching needs.

Every metric takes ``update(preds, samples)``: the generated (or likelihood-chosen) answers and the
:class:`~mmssm_lightning.eval.sample.EvalSample` s they answer; each reads the fields it needs.
``compute()`` returns a flat ``{name: float tensor}``. The rules come from the official scorers
(:mod:`~mmssm_lightning.eval.normalize`, :mod:`~mmssm_lightning.eval.parsing`,
:mod:`~mmssm_lightning.eval.captions`), tested against their outputs in ``shared/eval_fixtures``.

:class:`TaskAccuracy` is the training-time metric of the synthetic tasks (exact answer, or box IoU).
"""

from __future__ import annotations

import hashlib
import statistics
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Literal, get_args

import numpy as np
import torch
from torchmetrics import Metric

from mmssm_lightning.data.answers import normalize_answer
from mmssm_lightning.eval.captions import bleu, cider_d
from mmssm_lightning.eval.normalize import (
    evalai_process,
    lmms_process,
    official_process,
    ptb_tokenize_corpus,
    py2_clean_whitespace,
    tri_process_answer,
    tri_process_prediction,
    vlmevalkit_process,
)
from mmssm_lightning.eval.parsing import (
    box_iou,
    box_lenient,
    box_strict,
    can_infer,
    first_box,
    pope_exact,
    pope_official,
    sqa_llava,
    sqa_lmms_correct,
    tally_int,
)
from mmssm_lightning.eval.sample import EvalSample


class _GroupedMean(Metric):
    """Mean of per-sample scores, overall and per group (groups fixed at construction so that every
    rank's state has one shape; a sample of another group counts in the overall mean only)."""

    full_state_update = False

    def __init__(self, groups: Sequence[str] | None = None) -> None:
        super().__init__()
        self.groups = list(groups or [])
        self.add_state(
            "sums", default=torch.zeros(len(self.groups) + 1, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state(
            "counts", default=torch.zeros(len(self.groups) + 1, dtype=torch.float64), dist_reduce_fx="sum"
        )

    def _add(self, value: float, group: str | None) -> None:
        self.sums[-1] += value
        self.counts[-1] += 1
        if group in self.groups:
            i = self.groups.index(group)
            self.sums[i] += value
            self.counts[i] += 1

    def compute(self) -> dict[str, torch.Tensor]:
        mean = self.sums / self.counts.clamp(min=1)
        out = {"accuracy": mean[-1]}
        out.update({f"accuracy/{g}": mean[i] for i, g in enumerate(self.groups) if self.counts[i] > 0})
        return out


VQANormalization = Literal["official", "evalai", "m4c", "lmms", "lmms_evalai", "tri", "vlmevalkit"]
VQA_NORMALIZATIONS: tuple[str, ...] = get_args(VQANormalization)


def _leave_one_out(pred: str, gts: Sequence[str]) -> list[float]:
    """Per annotator: min(1, matches among the other annotators / 3); ``min(1, x)`` keeps the int 1
    where the scorers do (it matters to ``statistics.mean``)."""
    return [min(1, float(sum(a == pred for j, a in enumerate(gts) if j != i)) / 3) for i in range(len(gts))]


def vqa_accuracy(pred: str, answers: Sequence[str], normalization: VQANormalization = "evalai") -> float:
    """VQA accuracy of one prediction against the annotators' answers, as each harness computes it
    (normalisers in :mod:`~mmssm_lightning.eval.normalize`; every value equal to the harness's own,
    float for float, in ``tests/fixtures/eval/vqa_harness_cases.json``):

    * ``official`` — GT-Vision-Lab ``PythonEvaluationTools/vqaEvaluation/vqaEval.py`` (a013f00, Python
      2.7): whitespace cleaned on both sides, both processed only if the cleaned answers disagree;
      mean by a plain running sum.
    * ``evalai`` — LLaVA ``scripts/convert_vqav2_for_submission.py`` (c121f04): the EvalAI processor on the
      prediction before upload, then ``official`` (what the VQAv2 server is understood to run; VizWiz's
      own scorer, TRI's ``vizwiz/eval.py``, differs: raw answers, another contraction table).
    * ``m4c`` — LLaVA ``llava/eval/m4c_evaluator.py`` ``TextVQAAccuracyEvaluator`` (c121f04): the
      processor on prediction and answers; exactly 10 answers (it asserts).
    * ``lmms`` — lmms-eval ``tasks/vqav2/utils.py`` (75571cf): :func:`lmms_process` on both sides,
      ``statistics.mean``.
    * ``lmms_evalai`` — lmms-eval ``tasks/textvqa/utils.py`` and ``tasks/vizwiz_vqa/utils.py`` (75571cf):
      the processor on both sides, ``statistics.mean``, any number of answers.
    * ``tri`` — TRI-ML/vlm-evaluation ``vlm_eval/util/evaluation/vqav2/eval.py`` (d9f5896): prediction
      fully processed, answers punctuation-only.
    * ``vlmevalkit`` — VLMEvalKit ``vlmeval/dataset/utils/vqa_eval.py`` (e8e78f0): ``process_answer`` on
      both sides, ``np.mean``.

    Answers are told apart by position (the scorers compare answer dicts, whose ``answer_id`` differs).
    No answers is an error in every harness (a division by zero, an empty mean); here a ValueError.
    """
    if normalization not in VQA_NORMALIZATIONS:
        raise ValueError(
            f"VQA normalization must be one of {' | '.join(VQA_NORMALIZATIONS)}, got {normalization!r}"
        )
    if len(answers) == 0:
        raise ValueError("VQA accuracy needs ground-truth answers; the sample has none")
    if normalization in ("official", "evalai"):
        pred = py2_clean_whitespace(evalai_process(pred) if normalization == "evalai" else pred)
        gts = [py2_clean_whitespace(a) for a in answers]
        if len(set(gts)) > 1:
            gts, pred = [official_process(a) for a in gts], official_process(pred)
        total = 0  # Python 2's sum: no compensated summation (Python >= 3.12's sum() has it)
        for acc in _leave_one_out(pred, gts):
            total += acc
        return float(total) / len(gts)
    if normalization == "m4c":
        if len(answers) != 10:
            raise ValueError(f"m4c's TextVQA evaluator takes exactly 10 answers, got {len(answers)}")
        accs = _leave_one_out(evalai_process(pred), [evalai_process(a) for a in answers])
        return sum(accs) / len(accs)
    if normalization == "tri":
        accs = _leave_one_out(tri_process_prediction(pred), [tri_process_answer(a) for a in answers])
        return sum(accs) / len(accs)
    if normalization == "vlmevalkit":
        return float(
            np.mean(_leave_one_out(vlmevalkit_process(pred), [vlmevalkit_process(a) for a in answers]))
        )
    process = lmms_process if normalization == "lmms" else evalai_process
    return float(statistics.mean(_leave_one_out(process(pred), [process(a) for a in answers])))


class VQAAccuracy(_GroupedMean):
    """VQAv2 / VizWiz / TextVQA accuracy (``samples[i].answers``: the annotators' answers), per
    ``category`` (answer type) too: the running float64 sums give ``vqaEval.py``'s per-type means."""

    def __init__(
        self, normalization: VQANormalization = "evalai", groups: Sequence[str] | None = None
    ) -> None:
        super().__init__(groups)
        if normalization not in VQA_NORMALIZATIONS:
            raise ValueError(
                f"VQA normalization must be one of {' | '.join(VQA_NORMALIZATIONS)}, got {normalization!r}"
            )
        self.normalization = normalization

    def update(self, preds: Sequence[str], samples: Sequence[EvalSample]) -> None:
        for p, s in zip(preds, samples):
            try:
                acc = vqa_accuracy(p, s.answers, self.normalization)
            except ValueError as e:
                raise ValueError(f"VQA sample {s.id!r}: {e}") from None
            self._add(acc, s.category)


ExactNormalization = Literal["none", "llava", "vqa"]


def _exact_norm(text: str, mode: ExactNormalization) -> str:
    if mode == "none":
        return text.strip()
    if mode == "llava":  # LLaVA's GQA conversion: lower case, no final period
        return text.strip().rstrip(".").lower()
    if mode == "vqa":
        return evalai_process(text)
    raise ValueError(f"exact-match normalization must be none | llava | vqa, got {mode!r}")


class ExactMatch(_GroupedMean):
    """Exact match with the single reference answer (GQA testdev-balanced: ``answers[0]``)."""

    def __init__(
        self, normalization: ExactNormalization = "llava", groups: Sequence[str] | None = None
    ) -> None:
        super().__init__(groups)
        _exact_norm("", normalization)
        self.normalization = normalization

    def update(self, preds: Sequence[str], samples: Sequence[EvalSample]) -> None:
        for p, s in zip(preds, samples):
            self._add(
                float(_exact_norm(p, self.normalization) == _exact_norm(s.answers[0], self.normalization)),
                s.category,
            )


class LabelAccuracy(_GroupedMean):
    """Accuracy of ``parser(pred) == sample.label`` (VSR true/false, yes/no tasks)."""

    def __init__(self, parser: Callable[[str], str], groups: Sequence[str] | None = None) -> None:
        super().__init__(groups)
        self.parser = parser

    def update(self, preds: Sequence[str], samples: Sequence[EvalSample]) -> None:
        for p, s in zip(preds, samples):
            self._add(float(self.parser(p) == s.label), s.category)


class POPEMetric(Metric):
    """POPE (Li et al. 2023) as its ``evaluate.py`` (AoiDragon/POPE 08d957b) and LLaVA's
    ``eval_pope.py`` (c121f04) score it: accuracy, precision, recall, F1 and the ratio of "yes"
    predictions, per split (``category``: random / popular / adversarial) and their mean (LLaVA-1.5
    reports the mean F1). A prediction the parser calls neither yes nor no counts as wrong and as
    not-yes; where a precision or recall has no denominator (those scripts raise
    ZeroDivisionError) it is 0. ``labels``: the (positive, negative) label pair, ("true", "false")
    for image-text matching (Pythia-VL's VSR)."""

    full_state_update = False
    _FIELDS = ("tp", "fp", "tn", "fn", "yes", "n")

    def __init__(
        self,
        parser: Callable[[str], str] = pope_official,
        splits: Sequence[str] = ("random", "popular", "adversarial"),
        labels: Sequence[str] = ("yes", "no"),
    ) -> None:
        super().__init__()
        self.parser = parser
        self.splits = list(splits)
        self.positive, self.negative = labels
        self.add_state(
            "table",
            default=torch.zeros(len(self.splits) + 1, len(self._FIELDS), dtype=torch.float64),
            dist_reduce_fx="sum",
        )

    def _row(self, pred: str, label: str | None) -> torch.Tensor:
        row = torch.zeros(len(self._FIELDS), dtype=torch.float64)
        if pred == self.positive:
            row[0 if label == self.positive else 1] = 1
            row[4] = 1
        elif pred == self.negative:
            row[2 if label == self.negative else 3] = 1
        elif label == self.positive:
            row[3] = 1  # unparseable on a positive: a miss
        row[5] = 1
        return row

    def update(self, preds: Sequence[str], samples: Sequence[EvalSample]) -> None:
        for p, s in zip(preds, samples):
            row = self._row(self.parser(p), s.label)
            self.table[-1] += row
            if s.category in self.splits:
                self.table[self.splits.index(s.category)] += row

    @staticmethod
    def scores(tp, fp, tn, fn, yes, n) -> dict[str, torch.Tensor]:
        precision = tp / (tp + fp) if tp + fp > 0 else tp * 0
        recall = tp / (tp + fn) if tp + fn > 0 else tp * 0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else tp * 0
        return {
            "accuracy": (tp + tn) / n,
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "yes_ratio": yes / n,
        }

    def _per_split(self) -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
        out, per_split = {}, []
        for i, split in enumerate(self.splits):
            if self.table[i, 5] > 0:
                sc = self.scores(*self.table[i])
                per_split.append(sc)
                out.update({f"{k}/{split}": v for k, v in sc.items()})
        return out, per_split

    def compute(self) -> dict[str, torch.Tensor]:
        out, per_split = self._per_split()
        if per_split:  # the papers report the mean over the three splits
            out.update({k: torch.stack([sc[k] for sc in per_split]).mean() for k in per_split[0]})
        else:
            out.update(self.scores(*self.table[-1]))
        return out


class LmmsPOPEMetric(POPEMetric):
    """lmms-eval's POPE (``tasks/pope/utils.py``, 75571cf), pooled over all samples (per split
    too): correct iff the lower-cased, stripped answer is the label (``parsing.pope_exact``); recall
    counts only a literal "no" on a positive as a miss (any other answer leaves its denominator),
    and ``yes_ratio`` is the share of *labels* that are yes."""

    def __init__(
        self,
        parser: Callable[[str], str] = pope_exact,
        splits: Sequence[str] = ("random", "popular", "adversarial"),
    ) -> None:
        super().__init__(parser, splits)

    def _row(self, pred: str, label: str | None) -> torch.Tensor:
        row = torch.zeros(len(self._FIELDS), dtype=torch.float64)
        if label == "yes":
            row[4] = 1
            if pred == "yes":
                row[0] = 1
            elif pred == "no":
                row[3] = 1
        elif pred == "yes":
            row[1] = 1
        elif pred == "no":
            row[2] = 1
        row[5] = 1
        return row

    def compute(self) -> dict[str, torch.Tensor]:
        out, _ = self._per_split()
        out.update(self.scores(*self.table[-1]))
        return out


def _cat(state: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """A ``cat`` state: a list of tensors on one rank, one tensor after a cross-rank sync."""
    return state if isinstance(state, torch.Tensor) else torch.cat(state)


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") & (2**63 - 1)


MME_PERCEPTION = (
    "existence",
    "count",
    "position",
    "color",
    "posters",
    "celebrity",
    "scene",
    "landmark",
    "artwork",
    "OCR",
)
MME_COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")


class MMEScore(Metric):
    """MME (Fu et al. 2023), ``calculation.py``: per subtask accuracy (% of questions) and acc+ (% of
    images with both questions right), score = acc + acc+; perception = sum over its 10 subtasks,
    cognition over its 4. ``category`` = subtask, ``group`` = image, ``label`` = yes / no."""

    full_state_update = False

    def __init__(
        self, parser: Callable[[str], str], subtasks: Sequence[str] = MME_PERCEPTION + MME_COGNITION
    ) -> None:
        super().__init__()
        self.parser = parser
        self.subtasks = list(subtasks)
        for name in ("subtask", "image", "correct"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, preds: Sequence[str], samples: Sequence[EvalSample]) -> None:
        for p, s in zip(preds, samples):
            if s.category not in self.subtasks:
                raise ValueError(f"MME subtask {s.category!r} is not one of {self.subtasks}")
            self.subtask.append(torch.tensor([self.subtasks.index(s.category)]))
            self.image.append(torch.tensor([_hash(f"{s.category}/{s.group}")]))
            self.correct.append(torch.tensor([float(self.parser(p) == s.label)], dtype=torch.float64))

    def compute(self) -> dict[str, torch.Tensor]:
        if len(self.subtask) == 0:
            return {}
        sub, img, cor = _cat(self.subtask), _cat(self.image), _cat(self.correct)
        out: dict[str, torch.Tensor] = {}
        for i, name in enumerate(self.subtasks):
            m = sub == i
            if not m.any():
                continue
            per_image = defaultdict(list)
            for im, c in zip(img[m].tolist(), cor[m].tolist()):
                per_image[im].append(c)
            acc = 100 * cor[m].mean()
            acc_plus = (
                100 * torch.tensor([float(all(v)) for v in per_image.values()], dtype=torch.float64).mean()
            )
            out[f"{name}/acc"], out[f"{name}/acc_plus"], out[name] = acc, acc_plus, acc + acc_plus
        for total, names in (("perception", MME_PERCEPTION), ("cognition", MME_COGNITION)):
            present = [out[n] for n in names if n in out]
            if present:
                out[total] = torch.stack(present).sum()
        return out


MCRule = Literal["llava_sqa", "lmms", "can_infer"]


def choice_correct(pred: str, sample: EvalSample, rule: MCRule) -> bool:
    if rule == "llava_sqa":  # eval_science_qa.py parses with its --options default, A-E, whatever the choices
        return sqa_llava(pred) == sample.label
    if rule == "lmms":
        return sqa_lmms_correct(pred, sample.label)
    if rule == "can_infer":
        return can_infer(pred, sample.choices or {}) == sample.label
    raise ValueError(f"multiple-choice rule must be llava_sqa | lmms | can_infer, got {rule!r}")


class MultipleChoiceAccuracy(_GroupedMean):
    """Letter accuracy (ScienceQA-IMG, AI2D), the letter read from the answer by ``rule``."""

    def __init__(self, rule: MCRule = "llava_sqa", groups: Sequence[str] | None = None) -> None:
        super().__init__(groups)
        self.rule = rule

    def update(self, preds: Sequence[str], samples: Sequence[EvalSample]) -> None:
        for p, s in zip(preds, samples):
            self._add(float(choice_correct(p, s, self.rule)), s.category)


class MMBenchCircular(Metric):
    """MMBench CircularEval (Liu et al. 2023) as VLMEvalKit's ``mcq_circular_eval`` scores it without a
    judge (``dataset/utils/multiple_choice.py``, e8e78f0): the TSV's rows ``index + k * 1e6`` are one
    question with its options rotated k times; a question is scored where its unrotated row
    (``index < 1e6``) is present, and counts only if every row's letter (``rule``, VLMEvalKit's
    ``can_infer``) is that row's answer (no letter, or "Z", is a miss). ``categories``: the names whose
    accuracy is also reported (the unrotated row's ``category``). Also the plain accuracy over all
    rows and over the unrotated rows."""

    full_state_update = False

    def __init__(self, rule: MCRule = "can_infer", categories: Sequence[str] | None = None) -> None:
        super().__init__()
        self.rule = rule
        self.categories = list(categories or [])
        for name in ("question", "rotation", "correct", "category"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, preds: Sequence[str], samples: Sequence[EvalSample]) -> None:
        for p, s in zip(preds, samples):
            if s.index is None:
                raise ValueError(f"MMBench sample {s.id} has no index (the TSV's 'index' column)")
            self.question.append(torch.tensor([s.index % 1_000_000]))
            self.rotation.append(torch.tensor([s.index // 1_000_000]))
            self.correct.append(torch.tensor([float(choice_correct(p, s, self.rule))], dtype=torch.float64))
            cat = self.categories.index(s.category) if s.category in self.categories else -1
            self.category.append(torch.tensor([cat]))

    def compute(self) -> dict[str, torch.Tensor]:
        if len(self.question) == 0:
            return {}
        q, r, c, cat = _cat(self.question), _cat(self.rotation), _cat(self.correct), _cat(self.category)
        index = (q + r * 1_000_000).tolist()
        hits = circular_hits(index, [ci == 1.0 for ci in c.tolist()])
        category = {qi: ki for qi, ri, ki in zip(q.tolist(), r.tolist(), cat.tolist()) if ri == 0}
        f64 = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
        out = {
            "circular_accuracy": f64([float(h) for h in hits.values()]).mean(),
            "vanilla_accuracy": c.mean(),
            "vanilla_accuracy/rotation0": c[r == 0].mean(),
        }
        for k, name in enumerate(self.categories):
            of_k = [float(h) for qi, h in hits.items() if category[qi] == k]
            if of_k:
                out[f"circular_accuracy/{name}"] = f64(of_k).mean()
        return out


def circular_hits(index: Sequence[int], correct: Sequence[bool]) -> dict[int, bool]:
    """CircularEval's verdict per question (``index % 1e6``) that has its unrotated row: every row of
    the question right (VLMEvalKit ``mcq_circular_eval``: rows of a question without one are dropped)."""
    right: dict[int, bool] = defaultdict(lambda: True)
    main = []
    for i, ok in zip(index, correct):
        g = i % 1_000_000
        right[g] = right[g] and bool(ok)
        if i == g:
            main.append(g)
    return {g: right[g] for g in main}


class TallyQAAccuracy(_GroupedMean):
    """TallyQA count accuracy, simple and complex (``category``), the count read by VLMEvalKit's
    integer parse (``vlmevalkit``) or compared as VQA-normalised strings (``vqa``)."""

    def __init__(
        self,
        parse: Literal["vlmevalkit", "vqa"] = "vlmevalkit",
        groups: Sequence[str] = ("simple", "complex"),
    ) -> None:
        super().__init__(groups)
        if parse not in ("vlmevalkit", "vqa"):
            raise ValueError(f"TallyQA parse must be vlmevalkit | vqa, got {parse!r}")
        self.parse = parse

    def update(self, preds: Sequence[str], samples: Sequence[EvalSample]) -> None:
        for p, s in zip(preds, samples):
            if self.parse == "vlmevalkit":
                ok = tally_int(p) == int(s.label)
            else:
                ok = evalai_process(p) == evalai_process(str(s.label))
            self._add(float(ok), s.category)


class BoxAccuracy(_GroupedMean):
    """Referring-expression accuracy: IoU of the parsed box with ``sample.box`` (normalised x0 y0 x1 y1)
    at least ``threshold`` (``inclusive``) or above it. ``parser``: ``strict`` (one well-formed
    normalised box) or ``lenient`` (lmms-eval's ``utils_rec.py``: the first "[a, b, c, d]", else
    zeros; a zero-area union, where lmms-eval raises, is a miss). Pythia-VL's boxes:
    :class:`~mmssm_lightning.eval.pythia_vl.PythiaVLBoxAccuracy`."""

    def __init__(
        self,
        parser: Literal["strict", "lenient"] = "lenient",
        threshold: float = 0.5,
        inclusive: bool = True,
        groups: Sequence[str] | None = None,
    ) -> None:
        super().__init__(groups)
        if parser not in ("strict", "lenient"):
            raise ValueError(f"box parser must be strict | lenient, got {parser!r}")
        self.parser, self.threshold, self.inclusive = parser, threshold, inclusive

    def update(self, preds: Sequence[str], samples: Sequence[EvalSample]) -> None:
        for p, s in zip(preds, samples):
            box = box_strict(p) if self.parser == "strict" else box_lenient(p)
            iou = box_iou(box, s.box) if box is not None else None
            hit = iou is not None and (iou >= self.threshold if self.inclusive else iou > self.threshold)
            self._add(float(hit), s.category)


class CaptionScores(Metric):
    """CIDEr-D and BLEU-1..4 over the evaluated corpus (``samples[i].answers``: the references),
    PTB-tokenised as pycocoevalcap does unless ``tokenize`` is false.

    pycocoevalcap tokenises all references in one file and all candidates in another, so a caption's last
    token can depend on the caption after it (``letter A.`` keeps its period unless the next line starts
    with ``The`` / ``A`` / ...; a smiley, ``'90`` or file name at the end of the file lexes differently).
    Each ``update`` tokenises its batch that way, references sample by sample then the candidates: one
    ``update`` with the whole corpus in the scorer's order is exact; batch boundaries see an end of file.
    """

    full_state_update = False

    def __init__(self, tokenize: bool = True) -> None:
        super().__init__()
        self.tokenize = tokenize
        for name in ("tokens", "lengths", "owners", "is_ref"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def _add_text(self, text: str, owner: int, is_ref: bool) -> None:
        words = text.split()
        self.tokens.append(torch.tensor([_hash(w) for w in words], dtype=torch.long))
        self.lengths.append(torch.tensor([len(words)]))
        self.owners.append(torch.tensor([owner]))
        self.is_ref.append(torch.tensor([is_ref]))

    def update(self, preds: Sequence[str], samples: Sequence[EvalSample]) -> None:
        preds, samples = list(preds), list(samples)
        refs = [r for s in samples for r in s.answers]
        if self.tokenize:
            preds, refs = ptb_tokenize_corpus(preds), ptb_tokenize_corpus(refs)
        refs_left = iter(refs)
        for p, s in zip(preds, samples):
            owner = _hash(s.id)
            self._add_text(p, owner, False)
            for _ in s.answers:
                self._add_text(next(refs_left), owner, True)

    def compute(self) -> dict[str, torch.Tensor]:
        if len(self.lengths) == 0:
            return {}
        tokens, lengths, owners, is_ref = (
            _cat(self.tokens),
            _cat(self.lengths),
            _cat(self.owners),
            _cat(self.is_ref),
        )
        gts: dict[str, list[str]] = defaultdict(list)
        res: dict[str, list[str]] = {}
        offsets = torch.cumsum(lengths, 0) - lengths
        for start, n, owner, ref in zip(offsets.tolist(), lengths.tolist(), owners.tolist(), is_ref.tolist()):
            text = " ".join(map(str, tokens[start : start + n].tolist()))
            (gts[str(owner)].append(text) if ref else res.setdefault(str(owner), [text]))
        cider, _ = cider_d(gts, res)
        bleus, _ = bleu(gts, res)
        f64 = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
        return {"CIDEr": f64(cider)} | {f"BLEU-{k + 1}": f64(b) for k, b in enumerate(bleus)}


class TaskAccuracy(Metric):
    """Accuracy per task name of the synthetic training data; ``compute()`` returns ``{task: acc}``
    plus ``mean`` over tasks seen.

    Args:
        tasks: every task name that may appear (fixed so that states have one shape on all ranks).
        box_tasks: tasks scored by box IoU (the first four numbers of the answer) instead of text match.
        iou_threshold: IoU needed for a box hit.
    """

    full_state_update = False

    def __init__(
        self, tasks: Sequence[str], box_tasks: Sequence[str] = ("box",), iou_threshold: float = 0.5
    ) -> None:
        super().__init__()
        self.tasks = list(tasks)
        self.box_tasks = set(box_tasks)
        self.iou_threshold = iou_threshold
        self.add_state("correct", default=torch.zeros(len(self.tasks)), dist_reduce_fx="sum")
        self.add_state("total", default=torch.zeros(len(self.tasks)), dist_reduce_fx="sum")

    def score(self, pred: str, target: str, task: str) -> bool:
        if task in self.box_tasks:
            p, t = first_box(pred), first_box(target)
            iou = box_iou(p, t) if p is not None and t is not None else None
            return iou is not None and iou >= self.iou_threshold
        return normalize_answer(pred) == normalize_answer(target)

    def update(self, preds: Sequence[str], targets: Sequence[str], tasks: Sequence[str]) -> None:
        for pred, target, task in zip(preds, targets, tasks):
            if task not in self.tasks:
                raise ValueError(f"task {task!r} is not among the metric's tasks {self.tasks} (data.tasks)")
            i = self.tasks.index(task)
            self.total[i] += 1
            self.correct[i] += float(self.score(pred, target, task))

    def compute(self) -> dict[str, torch.Tensor]:
        seen = self.total > 0
        acc = self.correct / self.total.clamp(min=1)
        out = {t: acc[i] for i, t in enumerate(self.tasks) if seen[i]}
        out["mean"] = acc[seen].mean() if seen.any() else torch.tensor(0.0)
        return out
