"""One evaluation item, whatever the benchmark: what the readers produce and the metrics score."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image


@dataclass
class EvalSample:
    """Args:
    id: the benchmark's own question / sample id (kept in predictions files).
    question: the text of the question, statement, referring expression (empty for captioning).
    image: path of the image file; ``image_b64`` instead for TSV benchmarks (MMBench).
    answers: reference answers (VQA's ten, GQA's one, the caption references).
    label: the single target (yes / no, option letter, count, true / false).
    choices: option letter -> option text (multiple choice).
    context: extra text the prompt may show (ScienceQA hint, MMBench hint, TextVQA OCR tokens).
    category: what results are broken down by (answer type, POPE split, MME subtask, TallyQA simple/complex).
    group: items scored together (MME: the image of a question pair).
    index: MMBench row index (rotation k of question q is q + k * 1e6).
    box: target box, normalised (x0, y0, x1, y1).
    image_size: (width, height) of the image in pixels, where a scorer works in pixels (RefCOCO).
    ocr: text found in the image, where a prompt may show it: TextVQA's Rosetta tokens, AI2D's text
        labels as "id: value" (None: not read, or nothing found).
    """

    id: str
    question: str = ""
    image: Path | None = None
    image_b64: str | None = None
    answers: list[str] = field(default_factory=list)
    label: str | None = None
    choices: dict[str, str] | None = None
    context: str | None = None
    category: str | None = None
    group: str | None = None
    index: int | None = None
    box: tuple[float, float, float, float] | None = None
    image_size: tuple[int, int] | None = None
    ocr: list[str] | None = None

    def load_image(self) -> Image.Image | None:
        if self.image_b64 is not None:
            return Image.open(io.BytesIO(base64.b64decode(self.image_b64))).convert("RGB")
        if self.image is None:
            return None
        with Image.open(self.image) as img:
            return img.convert("RGB")
