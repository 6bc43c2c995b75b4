"""Readers of the benchmarks' official files: each turns question / annotation files and an image
folder into :class:`~mmssm_lightning.eval.sample.EvalSample` s, checking the files as it goes —
a missing file, a missing field or a missing image is a :class:`BenchmarkFormatError` naming it.

Formats (as the benchmarks distribute them):

* VQAv2 — ``v2_OpenEnded_mscoco_<subtype>_questions.json`` (+ ``v2_mscoco_<subtype>_annotations.json``;
  none for test-dev), images ``COCO_<subtype>_<image_id:012d>.jpg``.
* GQA — ``testdev_balanced_questions.json`` ({qid: {imageId, question, answer}}), ``<imageId>.jpg``.
* VizWiz — ``val.json`` ([{image, question, answers: [{answer}], answer_type}]).
* TextVQA — ``TextVQA_0.5.1_val.json`` ({data: [...]}), optional Rosetta OCR
  ``TextVQA_Rosetta_OCR_v0.2_val.json``.
* POPE — one ``coco_pope_<split>.json`` per split, a json object per line {question_id, image, text, label}.
* VSR — ``test.jsonl`` ({image, caption, label 0/1}); zero-shot or random split by which file is given.
* TallyQA — ``test.json`` ([{image, question, answer, issimple}]).
* AI2D — ``questions/<image>.json`` + ``images/``, optionally a file of test image ids.
* ScienceQA — ``problems.json`` + ``pid_splits.json`` + ``images/<split>/<pid>/image.png`` (IMG subset).
* MME — ``MME_Benchmark_release_version/<subtask>/`` with ``images/`` + ``questions_answers_YN/`` or
  images and ``.txt`` files side by side; a txt holds "question<TAB>answer" lines.
* MMBench — the dev ``.tsv`` (index, question, hint, A-D, answer, category, base64 image), its
  CircularEval rotations already in it (rows ``index + k * 1e6``).
* RefCOCO / RefCOCO+ / RefCOCOg — ``refs(unc).p`` / ``refs(umd).p`` + ``instances.json`` + COCO
  train2014 images.
* Captions — COCO Karpathy ``dataset_coco.json``; COCO-format caption files (COCO val, NoCaps);
  ``TextCaps_0.1_val.json``.
"""

from __future__ import annotations

import csv
import json
import pickle
import sys
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmssm_lightning.eval.metrics import MME_COGNITION, MME_PERCEPTION
from mmssm_lightning.eval.sample import EvalSample

LETTERS = "ABCDEFGH"


class BenchmarkFormatError(ValueError):
    pass


def _path(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise BenchmarkFormatError(f"{what}: {p} does not exist")
    return p


def _json(path: str | Path, what: str) -> Any:
    p = _path(path, what)
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise BenchmarkFormatError(f"{what}: {p} is not valid JSON: {e}") from None


def _jsonl(path: str | Path, what: str) -> list[dict]:
    p = _path(path, what)
    rows = []
    for i, line in enumerate(p.read_text().splitlines()):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise BenchmarkFormatError(f"{what}: {p} line {i + 1} is not valid JSON: {e}") from None
    return rows


def _get(rec: Any, key: str, where: str) -> Any:
    if not isinstance(rec, Mapping) or key not in rec:
        raise BenchmarkFormatError(f"{where}: missing field '{key}'")
    return rec[key]


class Benchmark:
    """A benchmark's samples, read once. ``check_images``: every referenced image must exist."""

    def __init__(self, images: str | Path | None = None, check_images: bool = True) -> None:
        self.images = Path(images) if images is not None else None
        self.check_images = check_images
        self._samples: list[EvalSample] | None = None

    def read(self) -> list[EvalSample]:
        raise NotImplementedError

    def samples(self) -> list[EvalSample]:
        if self._samples is None:
            if self.images is not None and not self.images.is_dir():
                raise BenchmarkFormatError(
                    f"{type(self).__name__}: image folder {self.images} does not exist"
                )
            self._samples = self.read()
        return self._samples

    def image(self, name: str | Path, where: str) -> Path:
        path = self.images / name
        if self.check_images and not path.is_file():
            raise BenchmarkFormatError(f"{where}: image {path} does not exist")
        return path


class VQAv2(Benchmark):
    """Args: questions / annotations (None for test-dev: predictions only) / images;
    image_subtype: the images' folder subtype when it differs from the questions'
        (test-dev2015 -> test2015)."""

    def __init__(
        self,
        questions: str,
        images: str,
        annotations: str | None = None,
        image_subtype: str | None = None,
        check_images: bool = True,
    ) -> None:
        super().__init__(images, check_images)
        self.questions, self.annotations, self.image_subtype = questions, annotations, image_subtype

    def read(self) -> list[EvalSample]:
        q = _json(self.questions, "VQAv2 questions")
        questions = _get(q, "questions", str(self.questions))
        subtype = self.image_subtype or _get(q, "data_subtype", str(self.questions)).replace(
            "test-dev", "test"
        )
        answers: dict[int, dict] = {}
        if self.annotations is not None:
            anns = _get(_json(self.annotations, "VQAv2 annotations"), "annotations", str(self.annotations))
            for i, a in enumerate(anns):
                where = f"{self.annotations} annotation {i}"
                answers[_get(a, "question_id", where)] = {
                    "answers": [_get(x, "answer", where) for x in _get(a, "answers", where)],
                    "type": a.get("answer_type"),
                }
        out = []
        for i, rec in enumerate(questions):
            where = f"{self.questions} question {i}"
            qid, image_id = _get(rec, "question_id", where), _get(rec, "image_id", where)
            if self.annotations is not None and qid not in answers:
                raise BenchmarkFormatError(
                    f"{where}: question_id {qid} has no annotation in {self.annotations}"
                )
            ann = answers.get(qid, {})
            out.append(
                EvalSample(
                    id=str(qid),
                    question=_get(rec, "question", where),
                    image=self.image(f"COCO_{subtype}_{image_id:012d}.jpg", where),
                    answers=ann.get("answers", []),
                    category=ann.get("type"),
                )
            )
        return out


class GQA(Benchmark):
    def __init__(self, questions: str, images: str, check_images: bool = True) -> None:
        super().__init__(images, check_images)
        self.questions = questions

    def read(self) -> list[EvalSample]:
        data = _json(self.questions, "GQA questions")
        if not isinstance(data, Mapping):
            raise BenchmarkFormatError(f"GQA questions: {self.questions} must map question ids to questions")
        out = []
        for qid, rec in data.items():
            where = f"{self.questions} question {qid}"
            out.append(
                EvalSample(
                    id=str(qid),
                    question=_get(rec, "question", where),
                    image=self.image(f"{_get(rec, 'imageId', where)}.jpg", where),
                    answers=[_get(rec, "answer", where)],
                    category=(rec.get("types") or {}).get("structural"),
                )
            )
        return out


class VizWiz(Benchmark):
    def __init__(self, annotations: str, images: str, check_images: bool = True) -> None:
        super().__init__(images, check_images)
        self.annotations = annotations

    def read(self) -> list[EvalSample]:
        data = _json(self.annotations, "VizWiz annotations")
        out = []
        for i, rec in enumerate(data):
            where = f"{self.annotations} record {i}"
            name = _get(rec, "image", where)
            out.append(
                EvalSample(
                    id=name,
                    question=_get(rec, "question", where),
                    image=self.image(name, where),
                    answers=[_get(a, "answer", where) for a in rec.get("answers", [])],
                    label=str(int(rec["answerable"])) if "answerable" in rec else None,
                    category=rec.get("answer_type"),
                )
            )
        return out


class TextVQA(Benchmark):
    """Args: annotations (TextVQA json); ocr: Rosetta OCR json, its tokens go to ``context``."""

    def __init__(
        self, annotations: str, images: str, ocr: str | None = None, check_images: bool = True
    ) -> None:
        super().__init__(images, check_images)
        self.annotations, self.ocr = annotations, ocr

    def read(self) -> list[EvalSample]:
        data = _get(_json(self.annotations, "TextVQA annotations"), "data", str(self.annotations))
        ocr: dict[str, list[str]] = {}
        if self.ocr is not None:
            for i, rec in enumerate(_get(_json(self.ocr, "TextVQA OCR"), "data", str(self.ocr))):
                where = f"{self.ocr} record {i}"
                ocr[_get(rec, "image_id", where)] = _get(rec, "ocr_tokens", where)
        out = []
        for i, rec in enumerate(data):
            where = f"{self.annotations} record {i}"
            image_id = _get(rec, "image_id", where)
            if self.ocr is not None and image_id not in ocr:
                raise BenchmarkFormatError(f"{where}: image {image_id} has no OCR tokens in {self.ocr}")
            out.append(
                EvalSample(
                    id=str(_get(rec, "question_id", where)),
                    question=_get(rec, "question", where),
                    image=self.image(f"{image_id}.jpg", where),
                    answers=list(rec.get("answers", [])),
                    context=", ".join(ocr[image_id]) if self.ocr is not None else None,
                    ocr=list(ocr[image_id]) if self.ocr is not None else None,
                )
            )
        return out


class POPE(Benchmark):
    """Args: files: split name -> question file (random / popular / adversarial)."""

    def __init__(self, files: Mapping[str, str], images: str, check_images: bool = True) -> None:
        super().__init__(images, check_images)
        self.files = dict(files)

    def read(self) -> list[EvalSample]:
        out = []
        for split, path in self.files.items():
            for i, rec in enumerate(_jsonl(path, f"POPE {split}")):
                where = f"{path} line {i + 1}"
                label = str(_get(rec, "label", where)).strip().lower()
                if label not in ("yes", "no"):
                    raise BenchmarkFormatError(f"{where}: label must be yes or no, got {label!r}")
                out.append(
                    EvalSample(
                        id=f"{split}/{_get(rec, 'question_id', where)}",
                        question=_get(rec, "text", where),
                        image=self.image(_get(rec, "image", where), where),
                        label=label,
                        category=split,
                    )
                )
        return out


class VSR(Benchmark):
    """Visual Spatial Reasoning: ``label`` "true" when the caption holds for the image."""

    def __init__(self, file: str, images: str, check_images: bool = True) -> None:
        super().__init__(images, check_images)
        self.file = file

    def read(self) -> list[EvalSample]:
        out = []
        for i, rec in enumerate(_jsonl(self.file, "VSR")):
            where = f"{self.file} line {i + 1}"
            label = _get(rec, "label", where)
            if label not in (0, 1, True, False):
                raise BenchmarkFormatError(f"{where}: label must be 0 or 1, got {label!r}")
            out.append(
                EvalSample(
                    id=str(i),
                    question=_get(rec, "caption", where),
                    image=self.image(_get(rec, "image", where), where),
                    label="true" if label else "false",
                    category=rec.get("relation"),
                )
            )
        return out


class TallyQA(Benchmark):
    def __init__(self, file: str, images: str, check_images: bool = True) -> None:
        super().__init__(images, check_images)
        self.file = file

    def read(self) -> list[EvalSample]:
        out = []
        for i, rec in enumerate(_json(self.file, "TallyQA")):
            where = f"{self.file} record {i}"
            out.append(
                EvalSample(
                    id=str(rec.get("question_id", i)),
                    question=_get(rec, "question", where),
                    image=self.image(_get(rec, "image", where), where),
                    label=str(int(_get(rec, "answer", where))),
                    category="simple" if _get(rec, "issimple", where) else "complex",
                )
            )
        return out


def _choices(texts: list[str]) -> dict[str, str]:
    return {LETTERS[i]: str(t) for i, t in enumerate(texts)}


class AI2D(Benchmark):
    """Args: root (holds ``questions/`` and ``images/``); test_ids: a file of image ids (one per line or
    comma-separated) to keep, e.g. the release's ``ai2d_test_ids.csv``; label_splits: keep every
    question instead, ``category`` "test" for those ids and "val" for the rest (Prismatic's harness);
    annotations: the release's ``annotations/`` folder, whose text labels become ``ocr`` ("id: value",
    sorted by id, as Pythia-VL's loader writes them)."""

    def __init__(
        self,
        root: str,
        test_ids: str | None = None,
        annotations: str | None = None,
        check_images: bool = True,
        label_splits: bool = False,
    ) -> None:
        super().__init__(Path(root) / "images", check_images)
        self.root, self.test_ids, self.annotations, self.label_splits = (
            Path(root),
            test_ids,
            annotations,
            label_splits,
        )
        if label_splits and test_ids is None:
            raise BenchmarkFormatError("AI2D label_splits needs test_ids (the file of test image ids)")

    def _text_labels(self, name: str) -> list[str] | None:
        path = Path(self.annotations) / f"{name}.json"
        texts = _get(_json(path, "AI2D annotations"), "text", str(path))
        where = f"{path} text"
        labels = sorted(
            ((_get(t, "replacementText", where), _get(t, "value", where)) for t in texts.values()),
            key=lambda kv: kv[0],
        )
        return [f"{k}: {v}" for k, v in labels] or None

    def read(self) -> list[EvalSample]:
        qdir = _path(self.root / "questions", "AI2D questions")
        keep = None
        if self.test_ids is not None:
            text = _path(self.test_ids, "AI2D test ids").read_text()
            keep = {t.strip().split(".")[0] for t in text.replace(",", "\n").splitlines() if t.strip()}
        out = []
        for qfile in sorted(qdir.glob("*.json")):
            rec = _json(qfile, "AI2D questions")
            name = _get(rec, "imageName", str(qfile))
            in_test = keep is not None and name.split(".")[0] in keep
            if keep is not None and not in_test and not self.label_splits:
                continue
            ocr = self._text_labels(name) if self.annotations is not None else None
            for question, q in _get(rec, "questions", str(qfile)).items():
                where = f"{qfile} question {question!r}"
                choices = _choices(_get(q, "answerTexts", where))
                out.append(
                    EvalSample(
                        id=str(q.get("questionId", f"{name}/{question}")),
                        question=question,
                        image=self.image(name, where),
                        choices=choices,
                        label=LETTERS[int(_get(q, "correctAnswer", where))],
                        category=("test" if in_test else "val") if self.label_splits else None,
                        ocr=ocr,
                    )
                )
        return out


class ScienceQAImg(Benchmark):
    """ScienceQA, the questions that have an image (the IMG subset), of one split."""

    def __init__(
        self, problems: str, pid_splits: str, images: str, split: str = "test", check_images: bool = True
    ) -> None:
        super().__init__(images, check_images)
        self.problems, self.pid_splits, self.split = problems, pid_splits, split

    def read(self) -> list[EvalSample]:
        problems = _json(self.problems, "ScienceQA problems")
        pids = _get(_json(self.pid_splits, "ScienceQA splits"), self.split, str(self.pid_splits))
        out = []
        for pid in pids:
            where = f"{self.problems} problem {pid}"
            rec = _get(problems, pid, str(self.problems))
            if not rec.get("image"):
                continue
            out.append(
                EvalSample(
                    id=str(pid),
                    question=_get(rec, "question", where),
                    image=self.image(Path(self.split) / str(pid) / rec["image"], where),
                    choices=_choices(_get(rec, "choices", where)),
                    label=LETTERS[int(_get(rec, "answer", where))],
                    context=rec.get("hint") or None,
                    category=rec.get("subject"),
                )
            )
        return out


class MME(Benchmark):
    """Args: root: the ``MME_Benchmark_release_version`` folder (one folder per subtask);
    subtasks: which to read (all 14 by default; each must be there)."""

    IMAGE_SUFFIXES = (".jpg", ".png", ".jpeg")

    def __init__(self, root: str, subtasks: list[str] | None = None, check_images: bool = True) -> None:
        super().__init__(root, check_images)
        self.subtasks = list(subtasks or MME_PERCEPTION + MME_COGNITION)

    def read(self) -> list[EvalSample]:
        out = []
        for subtask in self.subtasks:
            folder = _path(self.images / subtask, f"MME subtask {subtask}")
            qa = folder / "questions_answers_YN"
            txt_dir, img_dir = (qa, folder / "images") if qa.is_dir() else (folder, folder)
            for txt in sorted(txt_dir.glob("*.txt")):
                image = next(
                    (
                        img_dir / (txt.stem + s)
                        for s in self.IMAGE_SUFFIXES
                        if (img_dir / (txt.stem + s)).is_file()
                    ),
                    None,
                )
                if image is None:
                    raise BenchmarkFormatError(f"MME {txt}: no image {txt.stem}.jpg/.png in {img_dir}")
                for j, line in enumerate(row for row in txt.read_text().splitlines() if row.strip()):
                    parts = line.split("\t")
                    if len(parts) != 2:
                        raise BenchmarkFormatError(f"MME {txt} line {j + 1}: expected 'question<TAB>answer'")
                    out.append(
                        EvalSample(
                            id=f"{subtask}/{image.name}/{j}",
                            question=parts[0].strip(),
                            image=image,
                            label=parts[1].strip().lower(),
                            category=subtask,
                            group=image.name,
                        )
                    )
        return out


# pandas.read_csv's default missing values: VLMEvalKit and LLaVA read the TSV with pandas, so an option
# or hint spelled like one of these is absent for them
_PANDAS_NA = {
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A",
    "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
}  # fmt: skip


def _present(value: str | None) -> bool:
    return value is not None and value not in _PANDAS_NA


class MMBench(Benchmark):
    """The MMBench TSV (dev: ``mmbench_dev_20230712.tsv``) as released, one sample per row. The file
    already holds CircularEval's copies: row ``index + k * 1e6`` is question ``index`` with its
    options rotated k times and its answer letter moved with them;
    :class:`~mmssm_lightning.eval.metrics.MMBenchCircular` groups them (VLMEvalKit's
    ``g_index = index % 1e6``). Options are the letters whose cell is not missing (VLMEvalKit's
    ``build_choices``), their text kept as written."""

    def __init__(self, tsv: str) -> None:
        super().__init__(None, False)
        self.tsv = tsv

    def read(self) -> list[EvalSample]:
        path = _path(self.tsv, "MMBench")
        csv.field_size_limit(sys.maxsize)  # base64 images exceed the default
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        out, seen = [], set()
        for i, row in enumerate(rows):
            where = f"{path} row {i + 1}"
            letters = [c for c in "ABCDEFGH" if _present(row.get(c))]
            if len(letters) < 2:
                raise BenchmarkFormatError(f"{where}: needs at least options A and B")
            answer = _get(row, "answer", where).strip()
            if answer not in letters:
                raise BenchmarkFormatError(f"{where}: answer {answer!r} is not one of the options {letters}")
            try:
                index = int(_get(row, "index", where))
            except ValueError:
                raise BenchmarkFormatError(f"{where}: index {row['index']!r} is not an integer") from None
            if index in seen:
                raise BenchmarkFormatError(f"{where}: index {index} appears twice")
            seen.add(index)
            hint = row.get("hint")
            image = _get(row, "image", where)
            out.append(
                EvalSample(
                    id=str(index),
                    question=_get(row, "question", where),
                    image_b64=image,
                    choices={c: row[c] for c in letters},
                    label=answer,
                    # LLaVA's is_none also drops a hint spelled "none" / "nan" in any case
                    context=hint if _present(hint) and hint.lower() not in ("none", "nan") else None,
                    category=row.get("category"),
                    index=index,
                )
            )
        # VLMEvalKit's TSVs may store a copy's image as the index of the row that holds it
        by_index = {s.index: s.image_b64 for s in out}
        for s in out:
            if len(s.image_b64) <= 64:
                ref = by_index.get(int(s.image_b64)) if s.image_b64.strip().isdigit() else None
                if ref is None or len(ref) <= 64:
                    raise BenchmarkFormatError(f"{path} index {s.index}: image {s.image_b64!r} is no image")
                s.image_b64 = ref
        return out


class RefCOCO(Benchmark):
    """RefCOCO / RefCOCO+ / RefCOCOg (``refs(unc).p`` or ``refs(umd).p`` of the refer toolkit): one sample
    per referring sentence, the target box normalised to the image (x0, y0, x1, y1)."""

    def __init__(
        self, refs: str, instances: str, images: str, split: str = "testA", check_images: bool = True
    ) -> None:
        super().__init__(images, check_images)
        self.refs, self.instances, self.split = refs, instances, split

    def read(self) -> list[EvalSample]:
        with _path(self.refs, "RefCOCO refs").open("rb") as f:
            # the refer toolkit's pickles were written by Python 2: its byte strings are read as latin-1
            refs = pickle.load(f, encoding="latin1")
        inst = _json(self.instances, "RefCOCO instances")
        images = {im["id"]: im for im in _get(inst, "images", str(self.instances))}
        boxes = {a["id"]: a["bbox"] for a in _get(inst, "annotations", str(self.instances))}
        out = []
        for ref in refs:
            if ref.get("split") != self.split:
                continue
            where = f"{self.refs} ref {ref.get('ref_id')}"
            im = images.get(_get(ref, "image_id", where))
            bbox = boxes.get(_get(ref, "ann_id", where))
            if im is None or bbox is None:
                raise BenchmarkFormatError(f"{where}: its image or annotation is not in {self.instances}")
            x, y, w, h = bbox
            box = (x / im["width"], y / im["height"], (x + w) / im["width"], (y + h) / im["height"])
            path = self.image(im["file_name"], where)
            for s in _get(ref, "sentences", where):
                out.append(
                    EvalSample(
                        id=f"{ref['ref_id']}/{s.get('sent_id')}",
                        question=_get(s, "sent", where),
                        image=path,
                        box=box,
                        image_size=(im["width"], im["height"]),
                        category=self.split,
                    )
                )
        return out


class COCOKarpathy(Benchmark):
    """COCO captions, Karpathy split (``dataset_coco.json``): references = the 5 raw sentences."""

    def __init__(self, dataset: str, images: str, split: str = "test", check_images: bool = True) -> None:
        super().__init__(images, check_images)
        self.dataset, self.split = dataset, split

    def read(self) -> list[EvalSample]:
        out = []
        for i, im in enumerate(_get(_json(self.dataset, "COCO Karpathy"), "images", str(self.dataset))):
            if im.get("split") != self.split:
                continue
            where = f"{self.dataset} image {i}"
            out.append(
                EvalSample(
                    id=str(im.get("cocoid", i)),
                    image=self.image(Path(im.get("filepath", "")) / _get(im, "filename", where), where),
                    answers=[_get(s, "raw", where) for s in _get(im, "sentences", where)],
                )
            )
        return out


class COCOCaptions(Benchmark):
    """A COCO-format caption file ({images: [{id, file_name}], annotations: [{image_id, caption}]}):
    COCO val2014, NoCaps val (``domain`` becomes the category)."""

    def __init__(self, annotations: str, images: str, check_images: bool = True) -> None:
        super().__init__(images, check_images)
        self.annotations = annotations

    def read(self) -> list[EvalSample]:
        data = _json(self.annotations, "captions")
        refs: dict[Any, list[str]] = defaultdict(list)
        for i, a in enumerate(_get(data, "annotations", str(self.annotations))):
            where = f"{self.annotations} annotation {i}"
            refs[_get(a, "image_id", where)].append(_get(a, "caption", where))
        out = []
        for i, im in enumerate(_get(data, "images", str(self.annotations))):
            where = f"{self.annotations} image {i}"
            image_id = _get(im, "id", where)
            if not refs.get(image_id):
                raise BenchmarkFormatError(f"{where}: image {image_id} has no caption")
            out.append(
                EvalSample(
                    id=str(image_id),
                    image=self.image(_get(im, "file_name", where), where),
                    answers=refs[image_id],
                    category=im.get("domain"),
                )
            )
        return out


class TextCaps(Benchmark):
    def __init__(self, annotations: str, images: str, check_images: bool = True) -> None:
        super().__init__(images, check_images)
        self.annotations = annotations

    def read(self) -> list[EvalSample]:
        out, seen = [], set()
        for i, rec in enumerate(_get(_json(self.annotations, "TextCaps"), "data", str(self.annotations))):
            where = f"{self.annotations} record {i}"
            image_id = _get(rec, "image_id", where)
            if image_id in seen:
                continue
            seen.add(image_id)
            out.append(
                EvalSample(
                    id=str(image_id),
                    image=self.image(f"{image_id}.jpg", where),
                    answers=list(_get(rec, "reference_strs", where)),
                )
            )
        return out
