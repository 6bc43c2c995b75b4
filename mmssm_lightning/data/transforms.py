"""Image preprocessing shared by all towers of a :class:`~mmssm_lightning.models.encoders.VisionTower`.

Pixels leave here as float tensors in [0, 1]; each tower applies its own mean/std, so DINOv2
(ImageNet statistics) and SigLIP (0.5/0.5) can share one resized image as in Cobra/Prismatic.
``naive`` squashes to a square (Prismatic's "resize-naive", Cobra's choice); ``letterbox`` pads to
a square with grey (127, 127, 127) first, keeping the aspect ratio (LLaVA's ``expand2square`` pads
with the image processor's mean colour: 127.5 for SigLIP's / CLIP-like 0.5 means).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from PIL import Image


class ImageTransform:
    def __init__(self, image_size: int, resize: Literal["naive", "letterbox"] = "naive") -> None:
        if resize not in ("naive", "letterbox"):
            raise ValueError(f"encoder.resize must be 'naive' or 'letterbox', got {resize!r}")
        self.image_size = image_size
        self.resize = resize

    def __call__(self, img: Image.Image) -> torch.Tensor:
        img = img.convert("RGB")
        if self.resize == "letterbox":
            w, h = img.size
            side = max(w, h)
            canvas = Image.new("RGB", (side, side), (127, 127, 127))
            canvas.paste(img, ((side - w) // 2, (side - h) // 2))
            img = canvas
        img = img.resize((self.image_size, self.image_size), Image.Resampling.BICUBIC)
        arr = np.asarray(img, dtype=np.float32) / 255.0
        return torch.from_numpy(arr).permute(2, 0, 1).contiguous()
