"""The contract every projector keeps.

A projector option of ``conf/projector/`` is a Hydra ``_partial_`` that
:class:`~mmssm_lightning.models.vlm.VisionLanguageModel` calls as
``projector(in_dim=<tower width>, out_dim=<LLM width>, layout=<the towers' VisualLayout>)``. The module
it returns maps the towers' features ``(B, layout.num_tokens, in_dim)``, laid out as ``layout``, to
visual tokens ``(B, out_layout.num_tokens, out_dim)`` laid out as its ``out_layout`` (the same grid
for the MLPs, a pooled grid for LDPv2, ``grid=None`` learnt queries for Q-Mamba), which the framing
and the splice read. ``tests/test_components.py`` checks every option against it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from torch import Tensor

from mmssm_lightning.models.layout import VisualLayout


@runtime_checkable
class Projector(Protocol):
    out_layout: VisualLayout

    def __call__(self, features: Tensor) -> Tensor: ...


ProjectorFactory = Callable[..., Projector]  # (in_dim: int, out_dim: int, layout: VisualLayout)


def check_projector(module: object, in_dim: int, out_dim: int) -> Projector:
    """``module`` if it keeps the contract, else an error naming what it lacks."""
    if not isinstance(module, Projector) or not isinstance(getattr(module, "out_layout", None), VisualLayout):
        raise ValueError(
            f"projector: {type(module).__name__} must set out_layout (a VisualLayout) and map "
            f"(B, N, {in_dim}) features to (B, out_layout.num_tokens, {out_dim}) tokens"
        )
    return module
