"""Where the visual tokens sit: the patch grid, how many feature maps, how many tokens.

Scans (VL-Mamba BSM/CSM, MambaVLM cross-stitch), pooling (LDPv2) and row separators (Pythia-VL's
``&&``) all need to know which token is which patch; towers and projectors describe their output
with a :class:`VisualLayout`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VisualLayout:
    """``num_tokens`` tokens; when ``grid`` is set they are ``num_maps`` row-major (rows, cols)
    maps one after the other (MambaVLM's visual long sequence has two). ``grid=None``: no spatial
    order (learnt queries)."""

    num_tokens: int
    grid: tuple[int, int] | None = None
    num_maps: int = 1

    def __post_init__(self) -> None:
        if self.grid is not None and self.grid[0] * self.grid[1] * self.num_maps != self.num_tokens:
            raise ValueError(
                f"{self.num_maps} map(s) of {self.grid} patches cannot hold {self.num_tokens} tokens"
            )

    def require_grid(self, who: str) -> tuple[int, int]:
        """The grid, or an error saying why ``who`` needs it."""
        if self.grid is None:
            raise ValueError(
                f"{who} needs the visual tokens on a patch grid, but they have none here "
                "(set encoder towers' drop_prefix_tokens: true, give every tower the same grid, "
                "or put a grid-keeping projector first)"
            )
        return self.grid
