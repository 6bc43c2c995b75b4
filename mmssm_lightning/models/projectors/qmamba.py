"""Q-Mamba, the query-based cross-modal Mamba projector ("Query-based Cross-Modal Projector
Bolstering Mamba Multimodal LLM", §3.2, Fig. 2-3, §4.1 "Models").

    visual features -> bidirectional Mamba connector (VL-Mamba's MMC, §4.1)
    N learnable queries -> [Mamba over the queries (causal, sequence mixer)
                            -> cross-attention to the connector output (local or global mask)
                            -> FFN (channel mixer)] x depth -> norm -> Linear(width -> LLM width)

Local attention (Fig. 3): query i of N sees only its own chunk of the K keys,
[floor(i K / N), floor((i + 1) K / N)): the chunks partition the keys in order (each key in exactly
one chunk, sizes floor(K / N) or ceil(K / N)), so no key is unseen and none is shared. Global
attention lets every query see every key (Table 2 ablation).

The paper's projector is 24 blocks of width 768 "to copy the pre-trained weights of Mamba with the
size of 130M": each block's Mamba layer and pre-norm carry the names of a Hugging Face Mamba layer,
and ``pretrained_mamba`` copies ``backbone.layers.i.{norm,mixer}`` and ``backbone.norm_f`` in.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from mmssm_lightning.checkpoints import checkpoint_state
from mmssm_lightning.models.layout import VisualLayout
from mmssm_lightning.models.projectors.vss import VSSProjector
from mmssm_lightning.models.scans import Scan
from mmssm_lightning.models.ssm import Backend, MambaMixer

Attention = Literal["local", "global"]


def local_attention_mask(num_queries: int, num_keys: int) -> torch.Tensor:
    """(N, K) bool, True where query i may attend key j.

    Q-Mamba Fig. 3: "Each query attends exclusively to K/Q keys, enabling the focused extraction of
    information from distinct visual components": query i reads keys [floor(iK/N), floor((i+1)K/N)),
    a contiguous, ordered partition of the keys. With more queries than keys some query would read
    nothing (and attention over no key is undefined), so N > K is refused.
    """
    if not 1 <= num_queries <= num_keys:
        raise ValueError(
            f"projector.num_queries={num_queries} with local attention needs 1 <= num_queries <= "
            f"{num_keys} (the visual tokens it partitions); use projector.attention=global for more"
        )
    i = torch.arange(num_queries + 1)
    bounds = torch.div(i * num_keys, num_queries, rounding_mode="floor")
    j = torch.arange(num_keys)
    return (j[None] >= bounds[:-1, None]) & (j[None] < bounds[1:, None])


class CrossAttention(nn.Module):
    def __init__(self, width: int, kv_dim: int, num_heads: int) -> None:
        super().__init__()
        if width % num_heads:
            raise ValueError(f"projector.width={width} is not divisible by projector.num_heads={num_heads}")
        self.num_heads = num_heads
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(kv_dim, width)
        self.v_proj = nn.Linear(kv_dim, width)
        self.o_proj = nn.Linear(width, width)

    def forward(self, q: torch.Tensor, kv: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, n, w = q.shape

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(b, x.shape[1], self.num_heads, -1).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            heads(self.q_proj(q)), heads(self.k_proj(kv)), heads(self.v_proj(kv)), attn_mask=mask
        )
        return self.o_proj(out.transpose(1, 2).reshape(b, n, w))


class QMambaBlock(nn.Module):
    """Mamba over the queries, cross-attention to the image, FFN; each pre-normed with a residual."""

    def __init__(
        self, width: int, kv_dim: int, num_heads: int, ffn: bool, d_state: int, backend: Backend
    ) -> None:
        super().__init__()
        self.norm = nn.RMSNorm(width, eps=1e-5)  # name and eps of a HF Mamba layer's pre-norm
        self.mixer = MambaMixer(width, d_state=d_state, backend=backend)
        self.norm_cross = nn.LayerNorm(width)
        self.cross = CrossAttention(width, kv_dim, num_heads)
        self.norm_ffn = nn.LayerNorm(width) if ffn else None
        self.ffn = (
            nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
            if ffn
            else None
        )

    def forward(self, q: torch.Tensor, kv: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        q = q + self.mixer(self.norm(q))
        q = q + self.cross(self.norm_cross(q), kv, mask)
        if self.ffn is not None:
            q = q + self.ffn(self.norm_ffn(q))
        return q


class QMambaProjector(nn.Module):
    """Args:
    in_dim / out_dim / layout: filled in by the VLM.
    scan: scan order of the bidirectional Mamba connector (``bidirectional``; ``forward`` for Table 4).
    num_queries: N (128 / 256 / 512 / 729 in Table 1).
    width / depth / num_heads / d_state: the query stack (768 / 24 / 12 / 16 = mamba-130m shapes).
    attention: ``local`` | ``global`` (Table 2).
    ffn: include the channel-mixing FFN in each block.
    connector: put VL-Mamba's VSS connector between the tower and the queries.
    connector_variant / connector_dim: that connector's MMC variant and output width (default: LLM width).
    connector_ckpt: a VL-Mamba checkpoint of ours whose projector initialises the connector
        (Table 3 "From Trained").
    pretrained_mamba: hub id or folder of a HF Mamba LM whose layers initialise the blocks (mamba-130m).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        layout: VisualLayout,
        scan: Scan,
        num_queries: int = 256,
        width: int = 768,
        depth: int = 24,
        num_heads: int = 12,
        d_state: int = 16,
        attention: Attention = "local",
        ffn: bool = True,
        connector: bool = True,
        connector_variant: Literal["mlp", "l2"] = "l2",
        connector_dim: int | None = None,
        connector_ckpt: str | None = None,
        pretrained_mamba: str | None = None,
        backend: Backend = "auto",
    ) -> None:
        super().__init__()
        if attention not in ("local", "global"):
            raise ValueError(f"projector.attention must be 'local' or 'global', got {attention!r}")
        if num_queries < 1 or depth < 1:
            raise ValueError("projector.num_queries and projector.depth must be >= 1")
        kv_dim = in_dim
        self.connector = None
        if connector:
            kv_dim = connector_dim or out_dim
            self.connector = VSSProjector(
                in_dim, kv_dim, layout, scan, variant=connector_variant, d_state=d_state, backend=backend
            )
        self.queries = nn.Parameter(torch.randn(num_queries, width) * width**-0.5)
        self.blocks = nn.ModuleList(
            QMambaBlock(width, kv_dim, num_heads, ffn, d_state, backend) for _ in range(depth)
        )
        self.norm_f = nn.RMSNorm(width, eps=1e-5)
        self.head = nn.Linear(width, out_dim)
        mask = local_attention_mask(num_queries, layout.num_tokens) if attention == "local" else None
        self.register_buffer("mask", mask, persistent=False)
        self.attention = attention
        self.out_layout = VisualLayout(num_queries)
        if connector_ckpt:
            self.load_connector(connector_ckpt)
        if pretrained_mamba:
            self.load_mamba(pretrained_mamba)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kv = self.connector(x) if self.connector is not None else x
        q = self.queries.to(kv.dtype).expand(x.shape[0], -1, -1)
        for block in self.blocks:
            q = block(q, kv, self.mask)
        return self.head(self.norm_f(q))

    @torch.no_grad()
    def load_mamba_state_dict(self, state: dict[str, torch.Tensor]) -> int:
        """Copy HF ``MambaForCausalLM`` layers 0..depth-1 (and ``norm_f``) in; returns tensors copied."""
        prefix = "backbone." if any(k.startswith("backbone.") for k in state) else ""
        layers = {int(k[len(prefix) + 7 :].split(".")[0]) for k in state if k.startswith(prefix + "layers.")}
        if len(layers) < len(self.blocks):
            raise ValueError(
                f"projector.pretrained_mamba has {len(layers)} layers, "
                f"projector.depth={len(self.blocks)} needs as many"
            )
        copied = 0
        targets = {"norm_f.weight": f"{prefix}norm_f.weight"}
        for i in range(len(self.blocks)):
            for name, _ in self.blocks[i].named_parameters():
                if name.startswith(("norm.", "mixer.")):
                    targets[f"blocks.{i}.{name}"] = f"{prefix}layers.{i}.{name}"
        own = dict(self.named_parameters())
        for dst, src in targets.items():
            if src not in state:
                raise ValueError(f"projector.pretrained_mamba lacks {src}")
            if state[src].shape != own[dst].shape:
                raise ValueError(
                    f"projector.pretrained_mamba: {src} is {tuple(state[src].shape)} "
                    f"but {dst} is {tuple(own[dst].shape)} "
                    "(match projector.width / d_state to the Mamba checkpoint)"
                )
            own[dst].copy_(state[src])
            copied += 1
        return copied

    def load_mamba(self, name_or_path: str) -> None:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=torch.float32)
        self.load_mamba_state_dict(model.state_dict())

    @torch.no_grad()
    def load_connector(self, ckpt_path: str) -> None:
        """Initialise the connector from a VL-Mamba run of ours (its ``model.projector``)."""
        if self.connector is None:
            raise ValueError("projector.connector_ckpt is set but projector.connector is false")
        path = ckpt_path
        sub = checkpoint_state(ckpt_path, "projector.connector_ckpt", prefix="model.projector.")
        try:
            missing, unexpected = self.connector.load_state_dict(sub, strict=False)
        except RuntimeError as e:  # same names, other shapes
            missing, unexpected = [str(e).strip().splitlines()[-1].strip()], []
        if missing or unexpected:
            raise ValueError(
                f"projector.connector_ckpt {path}: its projector is not a matching VL-Mamba connector "
                f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
