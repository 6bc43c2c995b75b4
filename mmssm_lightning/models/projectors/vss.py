"""VL-Mamba's MultiModal Connectors with a Vision Selective Scan module (Qiao et al. 2024, §3.2.3).

VSS = a 2-D scan of the patch grid into K sequences (BSM: forward + backward; CSM: four cross
directions; any :class:`~mmssm_lightning.models.scans.Scan` works) + one Mamba layer shared by the
K sequences, whose outputs are put back in patch order and merged.

* ``variant="mlp"`` (VSS-MLP, eq. 5): V_scan = VSS(V_img); V_out = MLP(Norm(V_scan + V_img)).
* ``variant="l2"``  (VSS-L2, eq. 6):  V' = Linear(V_img); V_scan = VSS(GELU(V'));
  V_out = Linear(Norm(V_scan + V')).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from mmssm_lightning.models.layout import VisualLayout
from mmssm_lightning.models.scans import Scan
from mmssm_lightning.models.ssm import Backend, MambaMixer


class VisionSelectiveScan(nn.Module):
    """Scan -> one Mamba layer over each direction -> restore order -> merge. (B, N, d) -> (B, N, d)."""

    def __init__(
        self,
        dim: int,
        layout: VisualLayout,
        scan: Scan,
        d_state: int = 16,
        expand: int = 2,
        d_conv: int = 4,
        backend: Backend = "auto",
    ) -> None:
        super().__init__()
        self.grid = layout.require_grid(f"scan={scan.name}")
        self.num_maps = layout.num_maps
        scan.permutations(self.grid, self.num_maps)  # fail at build time on a scan/layout mismatch
        self.scan = scan
        self.mamba = MambaMixer(dim, d_state=d_state, d_conv=d_conv, expand=expand, backend=backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seqs = self.scan.scan(x, self.grid, self.num_maps)  # (B, K, N, d)
        b, k, n, d = seqs.shape
        out = self.mamba(seqs.reshape(b * k, n, d)).view(b, k, n, d)
        return self.scan.merge(out, self.grid, self.num_maps)


class VSSProjector(nn.Module):
    """Args:
    in_dim / out_dim / layout: filled in by the VLM.
    scan: the scan order (the top-level ``scan`` group; VL-Mamba uses ``bidirectional``).
    variant: ``mlp`` (VSS-MLP) | ``l2`` (VSS-L2).
    d_state / expand / d_conv / backend: the Mamba layer.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        layout: VisualLayout,
        scan: Scan,
        variant: Literal["mlp", "l2"] = "l2",
        d_state: int = 16,
        expand: int = 2,
        d_conv: int = 4,
        backend: Backend = "auto",
    ) -> None:
        super().__init__()
        if variant not in ("mlp", "l2"):
            raise ValueError(f"projector.variant must be 'mlp' (VSS-MLP) or 'l2' (VSS-L2), got {variant!r}")
        self.variant = variant
        width = in_dim if variant == "mlp" else out_dim
        self.linear_in = nn.Linear(in_dim, out_dim) if variant == "l2" else None
        self.vss = VisionSelectiveScan(width, layout, scan, d_state, expand, d_conv, backend)
        self.norm = nn.LayerNorm(width)
        if variant == "mlp":
            self.head = nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))
        else:
            self.head = nn.Linear(out_dim, out_dim)
        self.out_layout = layout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.linear_in is None:  # eq. 5
            return self.head(self.norm(self.vss(x) + x))
        x = self.linear_in(x)  # eq. 6
        return self.head(self.norm(self.vss(F.gelu(x)) + x))
