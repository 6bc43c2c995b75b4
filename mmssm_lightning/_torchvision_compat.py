"""Make ``import torchvision`` survive on a CPU-only torch.

timm and transformers import torchvision at module import. PyPI only ships CUDA builds of
torchvision; on a CPU build of torch its ``_C`` extension cannot load (it links against
``libtorch_cuda.so``), and torchvision 0.28 then dies registering fake kernels for ``nms`` /
``qnms`` — the two registrations it does not guard with ``_has_ops()``. Declaring those two
schemas lets the pure-Python parts (transforms, ``FrozenBatchNorm2d``) import; calling the
detection ops then raises torch's own "no kernel" error, which nothing in this project does.
Where ``_C`` loads (any CUDA machine), this module does nothing.
"""

from __future__ import annotations

import ctypes
import importlib.util
import sys
from pathlib import Path


def ensure_importable() -> None:
    if "torchvision" in sys.modules:
        return
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return
    import torch

    lib_path = next(Path(spec.origin).parent.glob("_C*.so"), None)
    if lib_path is None:
        return
    try:
        ctypes.CDLL(str(lib_path))
        return
    except OSError:
        pass
    try:
        lib = torch.library.Library("torchvision", "DEF")
    except RuntimeError:  # already declared by an earlier call
        return
    for op in ("nms", "qnms"):
        lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    # Keep the Library object alive: dropping it would unregister the schemas.
    ensure_importable._lib = lib  # type: ignore[attr-defined]
