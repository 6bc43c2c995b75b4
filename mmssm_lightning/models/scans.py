"""Scan orders over visual tokens as index permutations with exact inverses.

Tokens of one H x W feature map are numbered row-major (``r * W + c``); with two maps (MambaVLM's
visual long sequence) the second map's tokens follow the first's (``H*W + r * W + c``).

* ``forward`` / ``backward``: the flat sequence and its reverse.
* ``bidirectional``: both (VL-Mamba's Bidirectional Scan Mechanism, BSM, §3.3).
* ``cross``: four directions per map — row-major, column-major and both reversed (VL-Mamba's
  Cross Scan Mechanism, CSM, after VMamba's cross-scan).
* ``cross_cat``: the four cross orders applied to each map, the maps then concatenated
  (MambaVLM Fig. 3, the "cross-cat" ablation of Table 3).
* ``cross_stitch``: the four cross orders applied to each map, the maps then interleaved token by
  token, a0 b0 a1 b1 ... (MambaVLM Fig. 3 / eq. 7, the proposed cross-stitch scan).

``scan`` gathers a (B, N, D) sequence into (B, K, N, D), one row per direction; ``merge`` undoes
each permutation and averages the K directions, so ``merge(scan(x)) == x`` exactly.
"""

from __future__ import annotations

from typing import Literal

import torch

ScanName = Literal["forward", "backward", "bidirectional", "cross", "cross_cat", "cross_stitch"]
_NAMES = ("forward", "backward", "bidirectional", "cross", "cross_cat", "cross_stitch")


def _cross_orders(h: int, w: int) -> torch.Tensor:
    """(4, H*W): row-major, column-major, reversed row-major, reversed column-major."""
    grid = torch.arange(h * w).view(h, w)
    row, col = grid.flatten(), grid.t().flatten()
    return torch.stack([row, col, row.flip(0), col.flip(0)])


class Scan:
    """A scan order. ``num_directions`` is K, the sequences an SSM runs over.

    Args:
        name: one of forward, backward, bidirectional, cross, cross_cat, cross_stitch.
    """

    def __init__(self, name: ScanName = "forward") -> None:
        if name not in _NAMES:
            raise ValueError(f"scan.name must be one of {_NAMES}, got {name!r}")
        self.name = name
        self._on_device: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def _indices(
        self, grid: tuple[int, int], num_maps: int, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(permutations, their inverses) on ``device``, built once per shape: no host-to-device
        copy per call (which also keeps the projector capturable in a CUDA graph)."""
        key = (tuple(grid), num_maps, device)
        if key not in self._on_device:
            perm = self.permutations(grid, num_maps).to(device)
            self._on_device[key] = (perm, torch.argsort(perm, dim=1))
        return self._on_device[key]

    @property
    def num_directions(self) -> int:
        return {"forward": 1, "backward": 1, "bidirectional": 2}.get(self.name, 4)

    def permutations(self, grid: tuple[int, int], num_maps: int = 1) -> torch.Tensor:
        """(K, N) long tensor; row k lists which input token is read at each step of direction k."""
        h, w = grid
        n = h * w * num_maps
        flat = torch.arange(n)
        if self.name == "forward":
            return flat[None]
        if self.name == "backward":
            return flat.flip(0)[None]
        if self.name == "bidirectional":
            return torch.stack([flat, flat.flip(0)])
        per_map = [_cross_orders(h, w) + m * h * w for m in range(num_maps)]  # each (4, HW)
        if self.name == "cross_stitch":
            if num_maps < 2:
                raise ValueError("scan=cross_stitch interleaves two or more maps (encoder.fuse=sequence)")
            return torch.stack(per_map, dim=-1).reshape(4, n)
        return torch.cat(per_map, dim=1)  # cross / cross_cat: maps one after the other

    def scan(self, x: torch.Tensor, grid: tuple[int, int], num_maps: int = 1) -> torch.Tensor:
        """(B, N, D) -> (B, K, N, D)."""
        perm, _ = self._indices(grid, num_maps, x.device)
        if perm.shape[1] != x.shape[1]:
            raise ValueError(
                f"scan over a {grid} grid x {num_maps} map(s) needs {perm.shape[1]} tokens, got {x.shape[1]}"
            )
        return x[:, perm]

    def merge(self, y: torch.Tensor, grid: tuple[int, int], num_maps: int = 1) -> torch.Tensor:
        """(B, K, N, D) -> (B, N, D): put every direction back in token order and average."""
        perm, inverse = self._indices(grid, num_maps, y.device)
        restored = torch.stack([y[:, k, inverse[k]] for k in range(perm.shape[0])], dim=1)
        return restored.mean(dim=1)

    def __repr__(self) -> str:
        return f"Scan({self.name!r})"
