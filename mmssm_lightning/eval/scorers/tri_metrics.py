"""Metrics of TRI-ML/vlm-evaluation (the harness of Cobra's Table 2), torchmetrics ``Metric`` s with
tensor states that sync across ranks. Rules in :mod:`~mmssm_lightning.eval.scorers.tri`; every
class is checked against the harness's outputs in ``tests/fixtures/eval/tri_*.json``.

Values are fractions, unrounded; the harness prints VQAv2 / VizWiz / GQA as ``round(100 * x, 2)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torchmetrics import Metric

from mmssm_lightning.eval.metrics import _GroupedMean
from mmssm_lightning.eval.sample import EvalSample
from mmssm_lightning.eval.scorers.tri import (
    binary_average_precision,
    binary_roc_auc,
    box_iou,
    gqa_prediction,
    macro_average_precision,
    ovo_roc_auc,
    parse_bbox,
    round_box,
    textvqa_score,
    vizwiz_score,
    vizwiz_unanswerable,
    vqav2_score,
)


def _cat(state: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    return state if isinstance(state, torch.Tensor) else torch.cat(state)


def _answers(s: EvalSample, what: str) -> list[str]:
    if not s.answers:
        raise ValueError(f"{what} sample {s.id} has no reference answers (a test split?)")
    return s.answers


class TRIVQAv2Accuracy(_GroupedMean):
    """VQAv2 accuracy (``util/evaluation/vqav2/eval.py``), overall and per answer type (``category``)."""

    def __init__(self, groups: Sequence[str] = ("yes/no", "number", "other")) -> None:
        super().__init__(groups)

    def update(self, preds: Sequence[str], samples: Sequence[EvalSample]) -> None:
        for p, s in zip(preds, samples):
            self._add(vqav2_score(p, _answers(s, "VQAv2")), s.category)


class TRITextVQAAccuracy(_GroupedMean):
    """TextVQA accuracy (``util/evaluation/textvqa/m4c_evaluators.py``); the harness scores the same
    questions asked with OCR tokens ("TextVQA-OCR") and without ("TextVQA-Pure") separately."""

    def update(self, preds: Sequence[str], samples: Sequence[EvalSample]) -> None:
        for p, s in zip(preds, samples):
            self._add(textvqa_score(p, _answers(s, "TextVQA")), s.category)


class TRIGQAAccuracy(_GroupedMean):
    """GQA accuracy: the cleaned prediction equals the answer (``tasks/harnesses/gqa.py`` +
    ``util/evaluation/gqa/eval.py``); also binary / open (structural type "query") as eval.py prints."""

    def __init__(self) -> None:
        super().__init__(("binary", "open"))

    def update(self, preds: Sequence[str], samples: Sequence[EvalSample]) -> None:
        for p, s in zip(preds, samples):
            group = None if s.category is None else "open" if s.category == "query" else "binary"
            self._add(float(gqa_prediction(p) == _answers(s, "GQA")[0]), group)


class TRIVizWizAccuracy(Metric):
    """VizWiz (``tasks/harnesses/vizwiz.py`` + ``util/evaluation/vizwiz/eval.py``): accuracy overall,
    on answerable and on unanswerable questions (``label`` "1" / "0"), and the average precision and
    F1 of "the prediction says unanswerable" as a detector of unanswerable questions."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        # rows: all / answerable / unanswerable; columns: score sum, count
        self.add_state("table", default=torch.zeros(3, 2, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("said_unanswerable", default=[], dist_reduce_fx="cat")
        self.add_state("is_unanswerable", default=[], dist_reduce_fx="cat")

    def update(self, preds: Sequence[str], samples: Sequence[EvalSample]) -> None:
        for p, s in zip(preds, samples):
            score = vizwiz_score(p, _answers(s, "VizWiz"))
            self.table[0] += torch.tensor([score, 1.0], dtype=torch.float64)
            if s.label is None:
                continue
            if s.label not in ("0", "1"):
                raise ValueError(
                    f"VizWiz sample {s.id}: label must be answerable '1' or '0', got {s.label!r}"
                )
            self.table[1 if s.label == "1" else 2] += torch.tensor([score, 1.0], dtype=torch.float64)
            self.said_unanswerable.append(torch.tensor([float(vizwiz_unanswerable(p))], dtype=torch.float64))
            self.is_unanswerable.append(torch.tensor([s.label == "0"]))

    def compute(self) -> dict[str, torch.Tensor]:
        acc = self.table[:, 0] / self.table[:, 1].clamp(min=1)
        out = {"accuracy": acc[0]}
        for i, name in ((1, "answerable"), (2, "unanswerable")):
            if self.table[i, 1] > 0:
                out[f"accuracy/{name}"] = acc[i]
        if len(self.is_unanswerable):
            said, truth = _cat(self.said_unanswerable), _cat(self.is_unanswerable)
            tp = float((said.bool() & truth).sum())
            denom = float(said.sum() + truth.sum())
            f64 = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
            out["unanswerable_ap"] = f64(binary_average_precision(said, truth))
            out["unanswerable_f1"] = f64(2 * tp / denom if denom > 0 else 0.0)
        return out


class TRIBoxAccuracy(_GroupedMean):
    """RefCOCO / RefCOCO+ / RefCOCOg Acc@0.5 (``tasks/harnesses/refcoco.py``): the output must be one
    normalised box list (``parse_bbox``; anything else counts as wrong and as ``invalid``), scored by
    IoU >= ``threshold`` against the ground-truth box rounded to ``decimals`` places."""

    def __init__(
        self, threshold: float = 0.5, decimals: int = 2, groups: Sequence[str] | None = None
    ) -> None:
        super().__init__(groups)
        self.threshold, self.decimals = threshold, decimals
        self.add_state("invalid", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: Sequence[str], samples: Sequence[EvalSample]) -> None:
        for p, s in zip(preds, samples):
            if s.box is None:
                raise ValueError(f"RefCOCO sample {s.id} has no target box")
            box = parse_bbox(p)
            if box is None:
                self.invalid += 1
            hit = box is not None and box_iou(box, round_box(s.box, self.decimals)) >= self.threshold
            self._add(float(hit), s.category)

    def compute(self) -> dict[str, torch.Tensor]:
        return super().compute() | {"invalid": self.invalid / self.counts[-1].clamp(min=1)}


FinalAccuracy = Literal["pooled", "split_mean"]


class TRIChoiceMetrics(Metric):
    """Closed-set benchmarks scored by likelihood (``tasks/harnesses/{pope,vsr,tallyqa,ai2d}.py``).

    ``update(preds, samples, scores)`` takes the candidates' first-token probabilities renormalised
    over the candidates (``scores[i, j]``: sample i, ``classes[j]``), as Prismatic's
    ``generate_batch(return_string_probabilities=...)`` returns them. The prediction is their argmax
    (the first on a tie, as ``np.argmax``); ROC-AUC and PR-AUC are scikit-learn's on them: binary on
    the first class's probability for two classes (POPE's P("Yes"), VSR's P("True")), one-vs-one /
    macro over the classes otherwise (TallyQA's 16 counts, AI2D's 4 letters). Per split and "final"
    (all samples); the final accuracy is the mean of the split accuracies (POPE) or pooled.

    Args:
        classes: the protocol's candidate names in its order; a sample's ``label`` is one of them
            (another label scores wrong and leaves the AUCs undefined, nan).
        splits: ``category`` values reported on their own (every sample must have one); () for none.
        final_accuracy: ``split_mean`` (POPE) or ``pooled`` (VSR, TallyQA, AI2D).
    """

    full_state_update = False

    def __init__(
        self, classes: Sequence[str], splits: Sequence[str] = (), final_accuracy: FinalAccuracy = "pooled"
    ) -> None:
        super().__init__()
        if len(classes) < 2:
            raise ValueError(f"TRIChoiceMetrics classes: need at least two, got {list(classes)}")
        if final_accuracy not in ("pooled", "split_mean"):
            raise ValueError(
                f"TRIChoiceMetrics final_accuracy must be pooled | split_mean, got {final_accuracy!r}"
            )
        self.classes, self.splits, self.final_accuracy = list(classes), list(splits), final_accuracy
        for name in ("probs", "label", "split"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(
        self, preds: Sequence[str], samples: Sequence[EvalSample], scores: torch.Tensor | None = None
    ) -> None:
        if scores is None:
            raise ValueError(
                "TRIChoiceMetrics needs the candidates' probabilities: protocol scoring: likelihood"
            )
        probs = scores.detach().to(torch.float64)
        if probs.shape != (len(samples), len(self.classes)):
            raise ValueError(
                f"TRIChoiceMetrics: scores of shape {tuple(probs.shape)} for {len(samples)} samples and "
                f"classes {self.classes} (protocol candidates)"
            )
        top = probs.max(-1, keepdim=True).values
        unique = (probs == top).sum(-1) == 1
        for i, p in enumerate(preds):
            if unique[i] and self.classes[int(probs[i].argmax())] != p:
                raise ValueError(
                    f"TRIChoiceMetrics classes {self.classes} are not in the order of the protocol's "
                    f"candidates (the likeliest of sample {samples[i].id} is {p!r})"
                )
        labels, splits = [], []
        for s in samples:
            labels.append(self.classes.index(s.label) if s.label in self.classes else -1)
            if self.splits:
                if s.category not in self.splits:
                    raise ValueError(
                        f"sample {s.id}: category {s.category!r} is not one of the splits {self.splits}"
                    )
                splits.append(self.splits.index(s.category))
            else:
                splits.append(0)
        self.probs.append(probs)
        self.label.append(torch.tensor(labels, dtype=torch.long, device=probs.device))
        self.split.append(torch.tensor(splits, dtype=torch.long, device=probs.device))

    def _scores(self, probs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        acc = float((probs.argmax(-1) == labels).double().mean())
        if (labels < 0).any():
            return {"accuracy": acc, "auc_roc": math.nan, "auc_pr": math.nan}
        if probs.shape[1] == 2:
            positive = labels == 0
            return {
                "accuracy": acc,
                "auc_roc": binary_roc_auc(probs[:, 0], positive),
                "auc_pr": binary_average_precision(probs[:, 0], positive),
            }
        return {
            "accuracy": acc,
            "auc_roc": ovo_roc_auc(probs, labels),
            "auc_pr": macro_average_precision(probs, labels),
        }

    def compute(self) -> dict[str, torch.Tensor]:
        if len(self.label) == 0:
            return {}
        probs, labels, splits = _cat(self.probs).cpu(), _cat(self.label).cpu(), _cat(self.split).cpu()
        out: dict[str, float] = {}
        split_acc = []
        for i, name in enumerate(self.splits):
            m = splits == i
            if m.any():
                sc = self._scores(probs[m], labels[m])
                split_acc.append(sc["accuracy"])
                out.update({f"{k}/{name}": v for k, v in sc.items()})
        final = self._scores(probs, labels)
        if self.final_accuracy == "split_mean" and split_acc:
            final["accuracy"] = float(torch.tensor(split_acc, dtype=torch.float64).mean())
        out.update(final)
        return {k: torch.tensor(v, dtype=torch.float64) for k, v in out.items()}
