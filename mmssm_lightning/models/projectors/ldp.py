"""LDPv2, MobileVLM V2's lightweight downsample projector (Chu et al. 2024, §3.3), the projector
of Cobra's ablation (Cobra §4.3 Table 3 and Fig. 3, "Cobra-LDPv2 (14 x 14)").

Three parts: feature transformation (two point-wise layers with GELU, vision width -> LLM width),
token reduction (2-D adaptive average pooling of each feature map to ``pool_size`` x ``pool_size``)
and positional enhancement (PEG: a 3 x 3 depthwise convolution added back as a skip connection).

Cobra's released LDPv2 (h-zhao1997/cobra@4b81082, ``cobra/util/nn_utils.py`` ``FusedLDPProjector``,
``arch_specifier="no-align+fused-ldpnet"``) widens the first point-wise layer four-fold for the
channel-fused DINOv2 + SigLIP features, as its fused MLP projector does: Linear(2176 -> 8704)-GELU-
Linear(8704 -> 2560); ``fused_expansion=4`` builds that (``projector=ldpv2_released``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmssm_lightning.models.layout import VisualLayout


class LDPv2Projector(nn.Module):
    """Args:
    in_dim / out_dim / layout: filled in by the VLM.
    pool_size: side of the pooled grid (12 in MobileVLM V2: 144 tokens; 14 in Cobra's ablation).
    fused_expansion: width of the first point-wise layer as a multiple of ``in_dim`` (None: the LLM
        width, MobileVLM V2; 4: Cobra's released code).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        layout: VisualLayout,
        pool_size: int = 12,
        fused_expansion: int | None = None,
    ) -> None:
        super().__init__()
        self.grid = layout.require_grid("projector=ldpv2")
        self.num_maps = layout.num_maps
        if pool_size < 1 or pool_size > min(self.grid):
            raise ValueError(
                f"projector.pool_size must be in 1..{min(self.grid)} for a {self.grid} grid, got {pool_size}"
            )
        self.pool_size = pool_size
        if fused_expansion is not None and fused_expansion < 1:
            raise ValueError(f"projector.fused_expansion must be >= 1 (or null), got {fused_expansion}")
        hidden = out_dim if fused_expansion is None else fused_expansion * in_dim
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))
        self.peg = nn.Conv2d(out_dim, out_dim, 3, padding=1, groups=out_dim)
        self.out_layout = VisualLayout(
            self.num_maps * pool_size * pool_size, (pool_size, pool_size), self.num_maps
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, d = x.shape
        h, w = self.grid
        x = self.mlp(x).reshape(b * self.num_maps, h, w, -1).permute(0, 3, 1, 2)
        x = F.adaptive_avg_pool2d(x, self.pool_size)
        x = x + self.peg(x)
        return x.flatten(2).transpose(1, 2).reshape(b, -1, x.shape[1])
