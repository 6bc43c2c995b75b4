"""LLaVA-format conversation datasets: a json list of records + an image folder.

A record is ``{"id", "image"?: relative path, "conversations": [{"from": "human"|"gpt", "value"}...]}``
with turns alternating human/gpt, human first. Records without ``image`` are text-only (the
ShareGPT part of the LLaVA-1.5 mix). Optional keys: ``task`` (metrics and packing group by it),
``source`` (the dataset it comes from, e.g. ``vqav2``: packing caps are per source) and
``instruction`` (the task instruction, Pythia-VL Table 6, kept apart from the question so that
``prompt.image_position=after_instruction`` can put the image between them). Every record is
validated when the dataset is built, and a bad one is reported with the file and index at fault
(the line, for a jsonl that does not parse).
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset

from mmssm_lightning.data.errors import DataValidationError, NothingSupervisedError
from mmssm_lightning.data.image_check import check_images as check_image_files
from mmssm_lightning.data.packing import PackCaps, pack_records
from mmssm_lightning.data.prompting import SequenceBuilder

_ROLES = ("human", "gpt")


def _check_record(rec: Any, idx: int, path: Path, image_folder: Path | None) -> None:
    def fail(msg: str) -> None:
        raise DataValidationError(f"{path} record {idx}: {msg}")

    if not isinstance(rec, dict):
        fail(f"expected an object, got {type(rec).__name__}")
    convs = rec.get("conversations")
    if not isinstance(convs, list) or not convs:
        fail("'conversations' must be a non-empty list")
    for t, turn in enumerate(convs):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            fail(f"conversations[{t}] needs a string 'value'")
        want = _ROLES[t % 2]
        if turn.get("from") != want:
            fail(
                f"conversations[{t}].from is {turn.get('from')!r}, expected {want!r} "
                "(turns alternate, human first)"
            )
    for key in ("instruction", "source", "task"):
        if key in rec and (not isinstance(rec[key], str) or not rec[key]):
            fail(f"'{key}' must be a non-empty string")
    if "image" in rec:
        if not isinstance(rec["image"], str) or not rec["image"]:
            fail("'image' must be a non-empty relative path")
        if image_folder is None:
            fail("has an 'image' but data.image_folder is not set")


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[bom:].decode("utf-8")
    except UnicodeDecodeError as e:
        at = bom + e.start
        raise DataValidationError(
            f"{path} is not UTF-8 text: byte 0x{data[at]:02x} at offset {at} ({e.reason})"
        ) from None


def _parse(path: Path, text: str) -> Any:
    if path.suffix != ".jsonl":
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise DataValidationError(f"{path} is not valid JSON: {e}") from None
    records = []
    for n, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataValidationError(
                    f"{path} line {n} is not valid JSON: {e.msg} (column {e.colno})"
                ) from None
    return records


def load_records(
    json_path: str | Path,
    image_folder: str | Path | None,
    check_images: bool = True,
    cache_dir: str | Path | None = None,
) -> list[dict]:
    """Read and validate a LLaVA json (a list) or jsonl (one record a line). With ``check_images``
    every referenced image is decoded (see :mod:`mmssm_lightning.data.image_check`; images that
    passed before are found in ``cache_dir``)."""
    path = Path(json_path)
    if not path.is_file():
        raise DataValidationError(f"data file {path} does not exist")
    folder = Path(image_folder) if image_folder is not None else None
    if folder is not None and not folder.is_dir():
        raise DataValidationError(f"image folder {folder} does not exist")
    records = _parse(path, _read_text(path))
    if not isinstance(records, list):
        raise DataValidationError(f"{path} must hold a list of records, got {type(records).__name__}")
    for i, rec in enumerate(records):
        _check_record(rec, i, path, folder)
    if check_images and folder is not None:
        uses = ((rec["image"], f"{path} record {i}") for i, rec in enumerate(records) if "image" in rec)
        check_image_files(uses, folder, cache_dir)
    return records


def supervised_records(records: Sequence[dict], builder: SequenceBuilder, source: str) -> list[dict]:
    """The records that keep a loss target under ``data.max_length``; an error if none does.

    A record whose first answer starts at or beyond ``max_length`` tokens trains nothing (and with
    every record so, the loss is 0 at every step while the run "succeeds")."""
    kept = [
        rec
        for rec in records
        if builder.supervises(rec["conversations"], "image" in rec, rec.get("instruction"))
    ]
    if records and not kept:
        raise NothingSupervisedError(
            f"data.max_length={builder.max_length} truncates every answer of {source} away "
            f"({len(records)} records): nothing would be trained; raise data.max_length"
        )
    return kept


class LlavaDataset(Dataset):
    """Items: ``input_ids``/``labels`` (training sequence), ``prompt_ids`` (generation prompt),
    ``pixel_values`` (or None), ``answer``, ``task`` and ``index``.

    Args:
        records: validated LLaVA records (any sequence, also one that makes them on demand).
        builder / transform: tokenisation and image preprocessing (``transform`` may be None
            when no record has an image).
        image_folder: where record image paths are relative to.
        source: what the records came from, for error messages.
    """

    def __init__(
        self,
        records: Sequence[dict],
        builder: SequenceBuilder,
        transform: Callable[[Image.Image], torch.Tensor] | None,
        image_folder: str | Path | None = None,
        source: str = "records",
    ) -> None:
        self.records = records
        self.builder = builder
        self.transform = transform
        self.image_folder = Path(image_folder) if image_folder is not None else None
        self.source = source

    @classmethod
    def from_file(
        cls,
        json_path: str | Path | Sequence[str | Path],
        image_folder: str | Path | None,
        builder: SequenceBuilder,
        transform: Callable[[Image.Image], torch.Tensor] | None,
        check_images: bool = True,
        pack_max_pairs: PackCaps | None = None,
        cache_dir: str | Path | None = None,
    ) -> LlavaDataset:
        """Read and validate ``json_path`` (one file or several, concatenated); optionally pack QA
        pairs of one image (see packing.py)."""
        paths = [json_path] if isinstance(json_path, (str, Path)) else list(json_path)
        records = [rec for p in paths for rec in load_records(p, image_folder, check_images, cache_dir)]
        if pack_max_pairs is not None:
            records = pack_records(records, pack_max_pairs)
        return cls(records, builder, transform, image_folder, " + ".join(str(p) for p in paths))

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, idx: int) -> dict:
        rec = self.records[idx]
        has_image = "image" in rec
        pixels = None
        if has_image:
            if self.transform is None:
                raise DataValidationError(
                    f"{self.source} record {idx} has an image but the model has no vision tower "
                    "(encoder=none)"
                )
            path = self.image_folder / rec["image"]
            try:
                with Image.open(path) as img:
                    pixels = self.transform(img)
            except OSError as e:
                raise DataValidationError(
                    f"{self.source} record {idx}: cannot read image {path}: {e}"
                ) from None
        turns = rec["conversations"]
        instruction = rec.get("instruction")
        enc = self.builder.encode(turns, has_image, instruction)
        return {
            "input_ids": enc.input_ids,
            "labels": enc.labels,
            "prompt_ids": self.builder.encode_prompt(turns, has_image, instruction),
            "pixel_values": pixels,
            "answer": turns[-1]["value"] if len(turns) % 2 == 0 else "",
            "task": rec.get("task", "default"),
            "index": idx,
        }
