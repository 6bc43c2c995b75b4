"""MLP projectors.

* ``num_layers=2``: LLaVA-1.5's Linear-GELU-Linear (VL-Mamba MLP, Pythia-VL vs Mamba-VL §3.2).
* ``num_layers=3, fused_expansion=4``: Cobra/Prismatic's "fused" projector for channel-fused
  DINOv2+SigLIP: Linear(D_v -> 4 D_v)-GELU-Linear(-> D)-GELU-Linear(D -> D) (Cobra §3.2 eq. 5).
* ``num_layers=1``: a linear map.
"""

from __future__ import annotations

from torch import Tensor, nn

from mmssm_lightning.models.layout import VisualLayout


class MLPProjector(nn.Module):
    """Token-wise MLP; keeps the visual layout.

    Args:
        in_dim / out_dim: vision and LLM widths (filled in by the VLM).
        layout: where the visual tokens sit (unchanged by a token-wise map).
        num_layers: linear layers, GELU between them.
        fused_expansion: width multiplier of the first hidden layer (Cobra's 3-layer projector).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        layout: VisualLayout | None = None,
        num_layers: int = 2,
        fused_expansion: int | None = None,
    ) -> None:
        super().__init__()
        self.out_layout = layout
        if num_layers < 1:
            raise ValueError(f"projector.num_layers must be >= 1, got {num_layers}")
        if fused_expansion is not None and num_layers < 2:
            raise ValueError("projector.fused_expansion needs num_layers >= 2")
        dims = [in_dim]
        if fused_expansion is not None:
            dims.append(fused_expansion * in_dim)
        dims += [out_dim] * (num_layers - len(dims) + 1)
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            if i:
                layers.append(nn.GELU())
            layers.append(nn.Linear(a, b))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
