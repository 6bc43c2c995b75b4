"""Packing several QA pairs about one image into one sequence (Pythia-VL vs Mamba-VL App. A.3).

"We pack examples from the same image and task into one sequence": records that share an image
and a task become one multi-turn conversation of at most ``max_pairs`` question-answer pairs
(20 for VQAv2 in the paper). Only the first question keeps the ``<image>`` marker, so the image is
embedded once. With ``module.loss_normalization=sample`` every packed sequence then weighs the same
in the loss, however many answers it holds (App. B).
"""

from __future__ import annotations

from collections.abc import Sequence

from mmssm_lightning.constants import IMAGE_MARKER


def _strip_marker(text: str) -> str:
    return (
        text.replace(IMAGE_MARKER + "\n", "")
        .replace("\n" + IMAGE_MARKER, "")
        .replace(IMAGE_MARKER, "")
        .strip()
    )


def pack_records(records: Sequence[dict], max_pairs: int) -> list[dict]:
    """Merge records of one (image, task) into conversations of <= ``max_pairs`` QA pairs, keeping
    the order of first appearance. Text-only records are left alone."""
    if max_pairs < 1:
        raise ValueError(f"data.pack_max_pairs must be >= 1, got {max_pairs}")
    groups: dict[tuple, list[dict]] = {}
    for i, rec in enumerate(records):
        key = (rec["image"], rec.get("task", "default")) if "image" in rec else ("", i)
        groups.setdefault(key, []).append(rec)
    packed = []
    for key, group in groups.items():
        if not key[0]:
            packed.extend(group)
            continue
        current: dict | None = None
        pairs = 0
        for rec in group:
            turns = rec["conversations"]
            n = len(turns) // 2
            if current is None or pairs + n > max_pairs:
                current = {**rec, "conversations": list(turns), "packed_ids": [rec.get("id")]}
                packed.append(current)
                pairs = n
                continue
            current["conversations"] += [
                {**t, "value": _strip_marker(t["value"])} if t["from"] == "human" else t for t in turns
            ]
            current["packed_ids"].append(rec.get("id"))
            pairs += n
    return packed
