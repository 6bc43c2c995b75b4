"""Per-task answer accuracy as a torchmetrics ``Metric`` (tensor states, summed across ranks).

Text answers are compared after light normalisation (case, surrounding whitespace and final
punctuation); grounding tasks count a hit when the first box parsed from the prediction has
IoU >= ``iou_threshold`` with the reference box (Acc@0.5 of RefCOCO-style evaluation).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torchmetrics import Metric

_NUM = re.compile(r"-?\d+(?:\.\d+)?")


def normalize_answer(text: str) -> str:
    return text.strip().lower().rstrip(".!?").strip()


def parse_box(text: str) -> tuple[float, float, float, float] | None:
    """First four numbers in ``text`` as (x0, y0, x1, y1), or None."""
    nums = _NUM.findall(text)
    if len(nums) < 4:
        return None
    x0, y0, x1, y1 = (float(v) for v in nums[:4])
    return x0, y0, x1, y1


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1]) + max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


class TaskAccuracy(Metric):
    """Accuracy per task name; ``compute()`` returns ``{task: acc}`` plus ``mean`` over tasks seen.

    Args:
        tasks: every task name that may appear (fixed so that states have one shape on all ranks).
        box_tasks: tasks scored by box IoU instead of text match.
        iou_threshold: IoU needed for a box hit.
    """

    full_state_update = False

    def __init__(self, tasks: Sequence[str], box_tasks: Sequence[str] = ("box",), iou_threshold: float = 0.5) -> None:
        super().__init__()
        self.tasks = list(tasks)
        self.box_tasks = set(box_tasks)
        self.iou_threshold = iou_threshold
        self.add_state("correct", default=torch.zeros(len(self.tasks)), dist_reduce_fx="sum")
        self.add_state("total", default=torch.zeros(len(self.tasks)), dist_reduce_fx="sum")

    def score(self, pred: str, target: str, task: str) -> bool:
        if task in self.box_tasks:
            p, t = parse_box(pred), parse_box(target)
            return p is not None and t is not None and box_iou(p, t) >= self.iou_threshold
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
