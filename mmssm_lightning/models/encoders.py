"""Vision towers: timm ViTs, optionally two of them fused.

Cobra §3.2 eq. 4 concatenates DINOv2 and SigLIP patch features on the channel axis (729 tokens,
1024+1152 = 2176 channels); MambaVLM §3.2 ("visual long sequence") concatenates them on the
sequence axis instead (2 x 729 = 1458 tokens). Following Prismatic/Cobra, features come from the
second-to-last block with the prefix (CLS / register) tokens dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import timm
import torch
import torch.nn.functional as F
from torch import nn

from mmssm_lightning.models.layout import VisualLayout

Fuse = Literal["channel", "sequence"]


class TimmEncoder(nn.Module):
    """One frozen-by-default timm ViT returning patch features of one block.

    Args:
        model_name: timm model name, e.g. ``vit_so400m_patch14_siglip_384``.
        pretrained: load the hub weights through timm (needs network or a warm HF cache).
        image_size: input resolution the tower is built for.
        feature_layer: block whose output is used; negative counts from the end (-1 = last,
            -2 = second-to-last as in Cobra/Prismatic).
        drop_prefix_tokens: drop CLS/register tokens and keep the patch grid only.
        final_norm: pass the chosen block's output through the tower's final norm, as timm's
            ``forward_features`` does. Pythia-VL's released code (gpantaz/vl_mamba@c788f5f,
            ``src/vl_mamba/models/modeling_vlmambaclip.py`` ``get_patch_embeddings``) takes EVA02's
            ``forward_features`` (last block + final LayerNorm), CLS dropped; the paper says only
            "we obtain visual features from the last layer of the EVA model" (App. B).
        model_kwargs: forwarded to ``timm.create_model`` (the tiny test towers set their shape here).
        checkpoint_path: a local timm checkpoint to load instead of the hub.
    """

    def __init__(
        self,
        model_name: str,
        pretrained: bool = False,
        image_size: int = 384,
        feature_layer: int = -2,
        drop_prefix_tokens: bool = True,
        final_norm: bool = False,
        model_kwargs: Mapping | None = None,
        checkpoint_path: str | None = None,
    ) -> None:
        super().__init__()
        kwargs = dict(model_kwargs or {})
        kwargs.setdefault("img_size", image_size)
        self.model = timm.create_model(
            model_name,
            pretrained=pretrained,
            num_classes=0,
            checkpoint_path=checkpoint_path,
            **kwargs,
        )
        depth = len(self.model.blocks)
        if not -depth <= feature_layer < depth:
            raise ValueError(
                f"encoder.feature_layer={feature_layer} is outside a {depth}-block tower '{model_name}'"
            )
        self.layer_index = feature_layer % depth
        # Blocks after the chosen one are never used: drop them (and the head) to save compute.
        self.model.prune_intermediate_layers([self.layer_index], prune_norm=not final_norm, prune_head=True)
        self.final_norm = final_norm
        self.drop_prefix_tokens = drop_prefix_tokens
        self.image_size = image_size
        cfg = self.model.pretrained_cfg
        self.register_buffer(
            "mean", torch.tensor(cfg.get("mean", (0.5, 0.5, 0.5))).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor(cfg.get("std", (0.5, 0.5, 0.5))).view(1, 3, 1, 1), persistent=False
        )
        grid = self.model.patch_embed.grid_size
        self.grid_size: tuple[int, int] = (int(grid[0]), int(grid[1]))
        prefix = 0 if drop_prefix_tokens else int(getattr(self.model, "num_prefix_tokens", 0))
        self.num_tokens = self.grid_size[0] * self.grid_size[1] + prefix
        self.embed_dim = int(self.model.embed_dim)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """``pixels``: (B, 3, H, W) in [0, 1]; returns (B, num_tokens, embed_dim)."""
        x = ((pixels - self.mean) / self.std).to(self.model.patch_embed.proj.weight.dtype)  # bf16 towers too
        feats = self.model.forward_intermediates(
            x,
            indices=[self.layer_index],
            return_prefix_tokens=not self.drop_prefix_tokens,
            norm=self.final_norm,
            output_fmt="NLC",
            intermediates_only=True,
        )[0]
        if not self.drop_prefix_tokens:
            patches, prefix = feats
            feats = torch.cat([prefix, patches], dim=1)
        return feats


class VisionTower(nn.Module):
    """One or more :class:`TimmEncoder` s run on the same image and fused.

    ``fuse="channel"`` (Cobra eq. 4) needs equal token counts; ``fuse="sequence"`` (MambaVLM
    "visual long sequence") zero-pads narrower towers to the widest one, since the paper's
    R_v in R^{2N x D} leaves the width mismatch (1024 vs 1152) unspecified and padding adds no
    parameters and loses nothing.

    Args:
        towers: name -> encoder; order is the fusion order.
        fuse: how several towers are combined.
        resize: image preprocessing, "naive" (squash to square) or "letterbox" (pad to square).
        freeze: keep the towers frozen and in eval mode (every paper does).
    """

    def __init__(
        self,
        towers: Mapping[str, TimmEncoder],
        fuse: Fuse = "channel",
        resize: Literal["naive", "letterbox"] = "naive",
        freeze: bool = True,
    ) -> None:
        super().__init__()
        if not towers:
            raise ValueError("encoder.towers is empty: name at least one tower")
        if fuse not in ("channel", "sequence"):
            raise ValueError(f"encoder.fuse must be 'channel' or 'sequence', got {fuse!r}")
        self.towers = nn.ModuleDict(dict(towers))
        sizes = {n: t.image_size for n, t in self.towers.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"encoder.towers must share one image_size to see the same image, got {sizes}")
        self.image_size = next(iter(sizes.values()))
        self.fuse = fuse
        self.resize = resize
        self.freeze = freeze
        tokens = {n: t.num_tokens for n, t in self.towers.items()}
        dims = [t.embed_dim for t in self.towers.values()]
        if fuse == "channel":
            if len(set(tokens.values())) != 1:
                raise ValueError(f"encoder.fuse=channel needs equal token counts per tower, got {tokens}")
            self.num_tokens = next(iter(tokens.values()))
            self.embed_dim = sum(dims)
        else:
            self.num_tokens = sum(tokens.values())
            self.embed_dim = max(dims)
        grids = {t.grid_size for t in self.towers.values()}
        patches_only = all(t.drop_prefix_tokens for t in self.towers.values())
        # Scans, pooling and row separators need one patch grid; a sequence-fused tower holds one
        # map of it per tower (MambaVLM eq. 5).
        self.layout = VisualLayout(
            num_tokens=self.num_tokens,
            grid=next(iter(grids)) if len(grids) == 1 and patches_only else None,
            num_maps=len(self.towers) if fuse == "sequence" else 1,
        )
        if freeze:
            self.requires_grad_(False)

    def train(self, mode: bool = True) -> VisionTower:
        # Frozen towers stay in eval mode (dropout / stochastic depth off) whatever the trainer says.
        return super().train(mode and not self.freeze)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        feats = [tower(pixels) for tower in self.towers.values()]
        if self.fuse == "channel":
            return torch.cat(feats, dim=-1)
        return torch.cat([F.pad(f, (0, self.embed_dim - f.shape[-1])) for f in feats], dim=1)
