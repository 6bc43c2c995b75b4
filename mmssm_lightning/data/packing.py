"""Packing several QA pairs about one image into one sequence (Pythia-VL vs Mamba-VL App. A.3).

"We pack examples from the same image and task into one sequence" (§4), "image-text examples from
the same dataset into the same sequence" (Table 5): records that share an image, a source dataset,
a task and an instruction become one multi-turn conversation. The caps are per source (App. A.3):
"packed examples from VQAv2 are limited to 20 qa pairs. Similarly, we limit the number of qa-pairs
to 10 and 5 for the telling, and pointing task in Visual 7W. Finally, for all tasks in Visual
Genome, all packed examples are limited to 10 input-output responses" - a mapping
``source -> max pairs`` (``None``: no cap); sources it does not list are not packed. "We refrain
from packing captioning examples": records whose ``task`` is a captioning task are never packed.

Only the first question keeps the ``<image>`` marker, so the image is embedded once, and a record's
``instruction`` is kept once, before the first question (Table 7). With
``module.loss_normalization=sample`` every packed sequence then weighs the same in the loss,
however many answers it holds (App. B).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from mmssm_lightning.constants import IMAGE_MARKER

#: ``data.pack_max_pairs``: one cap for every source, or source -> cap (None: no cap).
PackCaps = int | Mapping[str, int | None]

#: Tasks never packed, whatever the caps say (App. A.3; the names of the authors' Task enum).
CAPTION_TASKS = frozenset({"captioning", "grounded_captioning"})
DEFAULT_SOURCE = "default"


def _strip_marker(text: str) -> str:
    return (
        text.replace(IMAGE_MARKER + "\n", "")
        .replace("\n" + IMAGE_MARKER, "")
        .replace(IMAGE_MARKER, "")
        .strip()
    )


def _check_caps(caps: PackCaps) -> None:
    items = caps.items() if isinstance(caps, Mapping) else [("", caps)]
    for source, cap in items:
        key = f"data.pack_max_pairs.{source}" if source else "data.pack_max_pairs"
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
            raise ValueError(f"{key} must be an integer >= 1 (or null: no cap), got {cap!r}")


def pack_cap(rec: dict, caps: PackCaps) -> tuple[bool, int | None]:
    """(packed?, cap) of one record under ``caps``."""
    if "image" not in rec:
        return False, None
    source = rec.get("source", DEFAULT_SOURCE)
    if rec.get("task") in CAPTION_TASKS:
        if isinstance(caps, Mapping) and source in caps:
            raise ValueError(
                f"data.pack_max_pairs.{source}: record {rec.get('id')!r} is a {rec['task']} record, "
                "and captions are never packed (Pythia-VL App. A.3)"
            )
        return False, None
    if not isinstance(caps, Mapping):
        return True, caps
    if source not in caps:
        return False, None
    return True, caps[source]


def pack_records(records: Sequence[dict], caps: PackCaps) -> list[dict]:
    """Merge records of one (image, source, task, instruction) into conversations of at most the
    source's cap of QA pairs, keeping the order of first appearance. Text-only, caption and
    unlisted-source records are left alone."""
    _check_caps(caps)
    groups: dict[tuple, list[dict]] = {}
    limits: dict[tuple, int | None] = {}
    for i, rec in enumerate(records):
        packed, cap = pack_cap(rec, caps)
        if packed:
            key = (rec["image"], rec.get("source", DEFAULT_SOURCE), rec.get("task"), rec.get("instruction"))
            limits[key] = cap
        else:
            key = ("", i)
        groups.setdefault(key, []).append(rec)
    packed_records = []
    for key, group in groups.items():
        if not key[0]:
            packed_records.extend(group)
            continue
        cap = limits[key]
        current: dict | None = None
        pairs = 0
        for rec in group:
            turns = rec["conversations"]
            n = len(turns) // 2
            if current is None or (cap is not None and pairs + n > cap):
                current = {**rec, "conversations": list(turns), "packed_ids": [rec.get("id")]}
                packed_records.append(current)
                pairs = n
                continue
            current["conversations"] += [
                {**t, "value": _strip_marker(t["value"])} if t["from"] == "human" else t for t in turns
            ]
            current["packed_ids"].append(rec.get("id"))
            pairs += n
    return packed_records
