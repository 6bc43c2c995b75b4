"""The synthetic shapes world written in benchmarks' official file formats, so that ``mmssm-eval``
and every reader run end to end on data the project makes itself (tests, the demo's evaluation).

``write_benchmarks(root, n, seed)`` writes under ``root``:

* ``vqav2/`` — VQAv2 questions + annotations (10 answers each, answer types) and
  ``COCO_val2014_*.jpg`` images;
* ``pope/`` — ``coco_pope_{random,popular,adversarial}.json`` (one json a line), images in ``coco/val2014``;
* ``mmbench/dev.tsv`` — colour questions with four options and base64 images, each also rotated
  (rows ``index + k * 1e6``, as the released TSV holds CircularEval's copies);
* ``MME/`` — the ``existence`` and ``color`` subtasks (image + question/answer txt, two questions an image);
* ``refcoco/`` — a refer-toolkit ``refs(unc).p`` + ``instances.json`` (``testA``);
* ``captions/`` — a COCO-format caption file.

Answers are determined by the pixels, as in :mod:`~mmssm_lightning.data.synthetic`.
"""

from __future__ import annotations

import base64
import io
import json
import pickle
import random
from pathlib import Path

from mmssm_lightning.data.synthetic import COLORS, SHAPES, _draw, _place


def _scenes(n: int, seed: int, size: int):
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        shapes = _place(rng, rng.randint(1, 3), size)
        if shapes is not None:
            out.append((shapes, _draw(shapes, size)))
    return rng, out


def write_benchmarks(root: str | Path, n: int = 24, seed: int = 0, size: int = 64) -> Path:
    root = Path(root)
    rng, scenes = _scenes(n, seed, size)
    coco = root / "coco" / "val2014"
    coco.mkdir(parents=True, exist_ok=True)
    for i, (_, img) in enumerate(scenes):
        img.save(coco / f"COCO_val2014_{i:012d}.jpg")

    # VQAv2: "how many shapes" (number) and "is there a <shape>" (yes/no), 10 answers each
    questions, annotations = [], []
    for i, (shapes, _) in enumerate(scenes):
        for j, (q, a, kind) in enumerate(
            [
                ("How many shapes are there?", str(len(shapes)), "number"),
                (f"Is there a {shapes[0].shape}?", "yes", "yes/no"),
            ]
        ):
            qid = i * 10 + j
            questions.append({"image_id": i, "question": q, "question_id": qid})
            answers = [a] * 9 + [rng.choice(["1", "2", "3", "no"])]  # one annotator disagrees
            annotations.append(
                {
                    "question_id": qid,
                    "image_id": i,
                    "answer_type": kind,
                    "multiple_choice_answer": a,
                    "answers": [
                        {"answer": x, "answer_confidence": "yes", "answer_id": k + 1}
                        for k, x in enumerate(answers)
                    ],
                }
            )
    (root / "vqav2").mkdir(parents=True, exist_ok=True)
    (root / "vqav2" / "questions.json").write_text(
        json.dumps({"data_subtype": "val2014", "questions": questions})
    )
    (root / "vqav2" / "annotations.json").write_text(json.dumps({"annotations": annotations}))

    # POPE: existence of a coloured shape, balanced yes / no, three "splits"
    (root / "pope").mkdir(exist_ok=True)
    for split in ("random", "popular", "adversarial"):
        lines = []
        for i, (shapes, _) in enumerate(scenes):
            present = {(s.color, s.shape) for s in shapes}
            if i % 2 == 0:
                c, s = next(iter(present))
                label = "yes"
            else:
                c, s = rng.choice([(c, s) for c in COLORS for s in SHAPES if (c, s) not in present])
                label = "no"
            lines.append(
                json.dumps(
                    {
                        "question_id": i,
                        "image": f"COCO_val2014_{i:012d}.jpg",
                        "text": f"Is there a {c} {s} in the image?",
                        "label": label,
                    }
                )
            )
        (root / "pope" / f"coco_pope_{split}.json").write_text("\n".join(lines) + "\n")

    # MMBench: colour of the first shape, four options; as in the released TSV, row i + k * 1e6 is
    # question i with its options rotated k times (CircularEval), the image stored in every row
    (root / "mmbench").mkdir(exist_ok=True)
    header = "index\tquestion\thint\tA\tB\tC\tD\tanswer\tcategory\timage\tl2-category\tsplit"
    rows = [header]
    for i, (shapes, img) in enumerate(scenes):
        options = [shapes[0].color] + [c for c in COLORS if c != shapes[0].color][:3]
        rng.shuffle(options)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        b64 = base64.b64encode(buf.getvalue()).decode()
        for k in range(len(options)):
            rotated = options[k:] + options[:k]
            rows.append(
                "\t".join(
                    [
                        str(i + k * 1_000_000),
                        f"What color is the {shapes[0].shape}?",
                        "nan",
                        *rotated,
                        "ABCD"[rotated.index(shapes[0].color)],
                        "color",
                        b64,
                        "perception",
                        "dev",
                    ]
                )
            )
    (root / "mmbench" / "dev.tsv").write_text("\n".join(rows) + "\n")

    # MME: existence (yes for a present shape, no for an absent one) and colour, per image
    for subtask in ("existence", "color"):
        folder = root / "MME" / subtask
        folder.mkdir(parents=True, exist_ok=True)
        for i, (shapes, img) in enumerate(scenes):
            img.save(folder / f"{i:04d}.png")
            present = {(s.color, s.shape) for s in shapes}
            if subtask == "existence":
                c, s = next(iter(present))
                c2, s2 = next((c, s) for c in COLORS for s in SHAPES if (c, s) not in present)
                qa = [
                    (f"Is there a {c} {s} in this image? Please answer yes or no.", "Yes"),
                    (f"Is there a {c2} {s2} in this image? Please answer yes or no.", "No"),
                ]
            else:
                other = next(c for c in COLORS if c != shapes[0].color)
                qa = [
                    (f"Is the {shapes[0].shape} {shapes[0].color}? Please answer yes or no.", "Yes"),
                    (f"Is the {shapes[0].shape} {other}? Please answer yes or no.", "No"),
                ]
            (folder / f"{i:04d}.txt").write_text("\n".join(f"{q}\t{a}" for q, a in qa) + "\n")

    # RefCOCO: the first shape of each image, by its name
    (root / "refcoco").mkdir(exist_ok=True)
    refs, images, anns = [], [], []
    for i, (shapes, _) in enumerate(scenes):
        s = shapes[0]
        x0, y0, x1, y1 = s.box
        images.append({"id": i, "file_name": f"COCO_val2014_{i:012d}.jpg", "width": size, "height": size})
        anns.append({"id": 1000 + i, "image_id": i, "bbox": [x0, y0, x1 - x0, y1 - y0]})
        refs.append(
            {
                "ref_id": i,
                "ann_id": 1000 + i,
                "image_id": i,
                "split": "testA",
                "sentences": [{"sent_id": 0, "sent": f"the {s.color} {s.shape}"}],
            }
        )
    with (root / "refcoco" / "refs(unc).p").open("wb") as f:
        pickle.dump(refs, f)
    (root / "refcoco" / "instances.json").write_text(json.dumps({"images": images, "annotations": anns}))

    # Captions, COCO format
    (root / "captions").mkdir(exist_ok=True)
    caps = []
    for i, (shapes, _) in enumerate(scenes):
        names = " and ".join(f"a {s.color} {s.shape}" for s in shapes)
        caps += [
            {"image_id": i, "caption": f"{names[0].upper()}{names[1:]}."},
            {"image_id": i, "caption": f"There is {names} on a white background."},
        ]
    (root / "captions" / "captions.json").write_text(json.dumps({"images": images, "annotations": caps}))
    return root
