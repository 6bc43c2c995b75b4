"""A deterministic synthetic shapes dataset in LLaVA format: the demo's data and every test's fixture.

Each image holds 1-3 coloured shapes on a plain background. One question per record, from five
tasks whose answers are fully determined by the pixels:

* ``color``    "What color is the circle?"                        -> "red"
* ``count``    "How many shapes are there?"                       -> "2"
* ``position`` "Is the red circle left or right of the blue square?" -> "left"
* ``exists``   "Is there a green triangle?"                       -> "yes" / "no" (balanced)
* ``box``      "Where is the red circle? Answer with a box."      -> "[0.12, 0.30, 0.41, 0.62]"

Records are LLaVA conversations plus ``task`` (and ``box`` for grounding), written as
``{split}.json`` beside an ``images/`` folder of PNGs. The same ``seed`` gives byte-identical files.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 70, 220),
    "yellow": (230, 210, 40),
}
SHAPES = ("circle", "square", "triangle")
TASKS = ("color", "count", "position", "exists", "box")
COUNT_WORDS = {1: "1", 2: "2", 3: "3"}


@dataclass(frozen=True)
class Shape:
    color: str
    shape: str
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, inclusive-exclusive

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"

    @property
    def cx(self) -> float:
        return (self.box[0] + self.box[2]) / 2


def _draw(shapes: Sequence[Shape], size: int) -> Image.Image:
    img = Image.new("RGB", (size, size), (245, 245, 240))
    d = ImageDraw.Draw(img)
    for s in shapes:
        x0, y0, x1, y1 = s.box
        fill = COLORS[s.color]
        if s.shape == "circle":
            d.ellipse((x0, y0, x1 - 1, y1 - 1), fill=fill)
        elif s.shape == "square":
            d.rectangle((x0, y0, x1 - 1, y1 - 1), fill=fill)
        else:
            d.polygon([((x0 + x1) / 2, y0), (x0, y1 - 1), (x1 - 1, y1 - 1)], fill=fill)
    return img


def _place(rng: random.Random, n: int, size: int) -> list[Shape] | None:
    kinds = rng.sample([(c, s) for c in COLORS for s in SHAPES], n)
    placed: list[Shape] = []
    for color, shape in kinds:
        for _ in range(50):
            side = rng.randint(size // 5, size // 3)
            x0, y0 = rng.randint(0, size - side), rng.randint(0, size - side)
            box = (x0, y0, x0 + side, y0 + side)
            if all(
                box[2] <= o.box[0] or o.box[2] <= box[0] or box[3] <= o.box[1] or o.box[3] <= box[1]
                for o in placed
            ):
                placed.append(Shape(color, shape, box))
                break
        else:
            return None
    return placed


def _fmt_box(box: Sequence[float], size: int) -> str:
    return "[" + ", ".join(f"{v / size:.2f}" for v in box) + "]"


def _question(rng: random.Random, task: str, shapes: list[Shape], size: int) -> tuple[str, str, dict] | None:
    if task == "color":
        unique = [s for s in shapes if sum(o.shape == s.shape for o in shapes) == 1]
        if not unique:
            return None
        s = rng.choice(unique)
        return f"What color is the {s.shape}?", s.color, {}
    if task == "count":
        return "How many shapes are there?", COUNT_WORDS[len(shapes)], {}
    if task == "position":
        pairs = [(a, b) for a in shapes for b in shapes if a is not b and abs(a.cx - b.cx) >= size / 8]
        if not pairs:
            return None
        a, b = rng.choice(pairs)
        return f"Is the {a.name} left or right of the {b.name}?", "left" if a.cx < b.cx else "right", {}
    if task == "exists":
        if rng.random() < 0.5:
            s = rng.choice(shapes)
            return f"Is there a {s.name}?", "yes", {}
        present = {(s.color, s.shape) for s in shapes}
        absent = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in present]
        c, s = rng.choice(absent)
        return f"Is there a {c} {s}?", "no", {}
    if task == "box":
        s = rng.choice(shapes)
        return (
            f"Where is the {s.name}? Answer with a box.",
            _fmt_box(s.box, size),
            {"box": [v / size for v in s.box]},
        )
    raise ValueError(f"data.synthetic.tasks: unknown task {task!r}; choose from {TASKS}")


@dataclass
class SyntheticShapesSpec:
    """What to generate. ``splits`` maps split name -> number of records."""

    splits: dict[str, int] = field(default_factory=lambda: {"train": 2000, "val": 200, "test": 400})
    image_size: int = 64
    tasks: Sequence[str] = TASKS
    seed: int = 0

    def generate(self, root: str | Path) -> Path:
        return generate(root, self)


def generate(root: str | Path, spec: SyntheticShapesSpec) -> Path:
    """Write ``root/{split}.json`` and ``root/images/*.png``; a finished root is reused as is."""
    root = Path(root)
    stamp = root / "spec.json"
    want = json.dumps(asdict(spec) | {"tasks": list(spec.tasks)}, sort_keys=True)
    if stamp.exists() and stamp.read_text() == want:
        return root
    for t in spec.tasks:
        if t not in TASKS:
            raise ValueError(f"data.synthetic.tasks: unknown task {t!r}; choose from {TASKS}")
    (root / "images").mkdir(parents=True, exist_ok=True)
    for split, n in sorted(spec.splits.items()):
        rng = random.Random(f"{spec.seed}-{split}")
        records = []
        while len(records) < n:
            shapes = _place(rng, rng.randint(1, 3), spec.image_size)
            if shapes is None:
                continue
            task = spec.tasks[len(records) % len(spec.tasks)]
            qa = _question(rng, task, shapes, spec.image_size)
            if qa is None:
                continue
            question, answer, extra = qa
            name = f"{split}_{len(records):06d}.png"
            _draw(shapes, spec.image_size).save(root / "images" / name)
            records.append(
                {
                    "id": f"{split}-{len(records)}",
                    "image": f"images/{name}",
                    "task": task,
                    "conversations": [
                        {"from": "human", "value": f"<image>\n{question}"},
                        {"from": "gpt", "value": answer},
                    ],
                    **extra,
                }
            )
        (root / f"{split}.json").write_text(json.dumps(records, indent=1))
    stamp.write_text(want)
    return root


def corpus() -> list[str]:
    """Every question/answer string the generator can emit: the training text of the synthetic
    BPE tokenizer (``llm.tokenizer.corpus``)."""
    lines = ["How many shapes are there?", "Describe the image specifically.", "Answer with a box."]
    lines += [f"What color is the {s}?" for s in SHAPES]
    names = [f"{c} {s}" for c in COLORS for s in SHAPES]
    lines += [f"Is there a {n}?" for n in names] + [f"Where is the {n}? Answer with a box." for n in names]
    lines += [f"Is the {a} left or right of the {b}?" for a in names for b in names if a != b]
    lines += list(COLORS) + list(COUNT_WORDS.values()) + ["left", "right", "yes", "no"]
    lines += [
        f"[{a / 100:.2f}, {b / 100:.2f}, {a / 100:.2f}, {b / 100:.2f}]"
        for a in range(101)
        for b in range(0, 101, 7)
    ]
    return lines
