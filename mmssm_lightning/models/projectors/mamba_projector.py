"""MambaVLM's Mamba projector (§3.2 "Mamba projector", eqs. 6-8, Fig. 2 and Fig. 3).

    H_v = DWConv(W1 R_v)                       (6)   depthwise 2-D conv on each feature map
    H_v1..H_v4 = CrossStitch(H_v)              (6)   or cross-cat, or any other scan
    H_vi = SSM(H_vi), i = 1..4                 (7)   then each put back in patch order
    H_v = W3 (Norm(Merge(H_v1..4)) * SiLU(W2 R_v))   (8)

The paper prints eq. 8 only as "merged" with "W1, W2, W3 three independent linear layers, we omit
layer norm for brevity"; the gate W2 and output W3 follow VMamba's SS2D block, which this
projector otherwise reproduces (SiLU after the conv, one SSM parameter set per direction,
LayerNorm on the merged output). The input is layer-normed first, as the towers' features are
taken before their final norm. See NOTES.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmssm_lightning.models.layout import VisualLayout
from mmssm_lightning.models.scans import Scan
from mmssm_lightning.models.ssm import Backend, SelectiveSSM


class MambaProjector(nn.Module):
    """Args:
    in_dim / out_dim / layout: filled in by the VLM (``layout.num_maps`` = 2 for the visual long sequence).
    scan: ``cross_stitch`` (MambaVLM) or ``cross_cat`` (its Table 3 ablation), or any other order.
    hidden_dim: width of W1/W2 and the SSM (default: the LLM width).
    d_state / dt_rank: the SSM. conv_size: DWConv kernel side.
    shared_directions: one SSM parameter set for all directions instead of one each.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        layout: VisualLayout,
        scan: Scan,
        hidden_dim: int | None = None,
        d_state: int = 16,
        dt_rank: int | str = "auto",
        conv_size: int = 3,
        shared_directions: bool = False,
        backend: Backend = "auto",
    ) -> None:
        super().__init__()
        self.grid = layout.require_grid(f"projector=mamba_projector with scan={scan.name}")
        self.num_maps = layout.num_maps
        scan.permutations(self.grid, self.num_maps)  # a scan that cannot read this layout fails now
        self.scan = scan
        hidden = hidden_dim or out_dim
        self.norm_in = nn.LayerNorm(in_dim)
        self.w1 = nn.Linear(in_dim, hidden)
        self.w2 = nn.Linear(in_dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, conv_size, padding=conv_size // 2, groups=hidden)
        self.ssm = SelectiveSSM(
            hidden, scan.num_directions, d_state, dt_rank, shared_directions, backend=backend
        )
        self.norm_out = nn.LayerNorm(hidden)
        self.w3 = nn.Linear(hidden, out_dim)
        self.out_layout = layout

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        b, n, _ = r.shape
        h_, w_ = self.grid
        r = self.norm_in(r)
        x = self.w1(r).reshape(b * self.num_maps, h_, w_, -1).permute(0, 3, 1, 2)
        x = F.silu(self.dwconv(x)).permute(0, 2, 3, 1).reshape(b, n, -1)
        y = self.ssm(self.scan.scan(x, self.grid, self.num_maps))
        y = self.scan.merge(y, self.grid, self.num_maps)
        return self.w3(self.norm_out(y) * F.silu(self.w2(r)))
