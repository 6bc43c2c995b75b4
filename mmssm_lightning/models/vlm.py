"""VisionLanguageModel: image -> vision tower -> projector -> causal LM (Cobra Fig. 2, eq. 6).

Token ids carry one ``IMAGE_TOKEN_ID`` per image-bearing sample; :meth:`splice` replaces it with
the projected visual tokens, so every image position of :mod:`~mmssm_lightning.data.prompting`
(first, at ``<image>``, after the instruction) is served by the same code; ``splice(...,
padding_side="left")`` is what :class:`~mmssm_lightning.inference.engine.Engine` prefills from. An optional
:class:`~mmssm_lightning.models.framing.ImageFraming` wraps the visual tokens in text separators
(Pythia-VL's ``##`` / ``&&``). Without a vision tower the model is the bare LM (the synthetic
grounding task of Pythia-VL vs Mamba-VL §5.3.2).
"""

from __future__ import annotations

import torch
from torch import nn

from mmssm_lightning.constants import IGNORE_INDEX, IMAGE_TOKEN_ID
from mmssm_lightning.models.encoders import VisionTower
from mmssm_lightning.models.framing import ImageFraming
from mmssm_lightning.models.llm import CausalLM
from mmssm_lightning.models.loss import LossNormalization, selected_lm_loss, supervised_positions
from mmssm_lightning.models.projectors.base import ProjectorFactory, check_projector


class VisionLanguageModel(nn.Module):
    """Args:
    vision: the (possibly fused) vision tower, or None for a text-only LM.
    projector: a callable ``(in_dim, out_dim, layout) -> nn.Module`` (a Hydra ``_partial_`` config).
    llm: the language backbone.
    framing: text separators around / inside the image tokens.
    """

    def __init__(
        self,
        vision: VisionTower | None,
        projector: ProjectorFactory | None,
        llm: CausalLM,
        framing: ImageFraming | None = None,
    ) -> None:
        super().__init__()
        self.vision = vision
        self.llm = llm
        self.projector = None
        self.framing = framing
        self.num_image_tokens = 0
        if vision is not None:
            if projector is None:
                raise ValueError("a vision tower needs a projector (projector=...)")
            self.projector = check_projector(
                projector(in_dim=vision.embed_dim, out_dim=llm.hidden_size, layout=vision.layout),
                vision.embed_dim,
                llm.hidden_size,
            )
            layout = self.projector.out_layout
            self.num_image_tokens = layout.num_tokens
            if framing is not None:
                self._framing_ids = framing.token_ids(llm.tokenizer)
                self.num_image_tokens = framing.num_tokens(layout, self._framing_ids)

    @property
    def tokenizer(self):
        return self.llm.tokenizer

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, N_visual, D_llm)."""
        if self.vision is None:
            raise ValueError("this model has no vision tower (encoder=none) but the batch holds images")
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.vision.freeze):
            feats = self.vision(pixels)
        tokens = self.projector(feats)
        if self.framing is not None:
            tokens = self.framing.frame(tokens, self.projector.out_layout, self._framing_ids, self.llm.embed)
        return tokens

    def splice(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        image_embeds: torch.Tensor | None,
        labels: torch.Tensor | None = None,
        padding_side: str = "right",
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Embed text, put each sample's visual tokens at its ``IMAGE_TOKEN_ID`` and re-pad.

        Padding already in ``input_ids`` (either side) is dropped per sample via
        ``attention_mask``, then the batch is padded again on ``padding_side`` (right for
        training, left for generation). Samples with no marker get no image.
        """
        text_embeds = self.llm.embed(input_ids.clamp(min=0))
        rows_e, rows_l = [], []
        for b in range(input_ids.shape[0]):
            keep = attention_mask[b].bool()
            ids, emb = input_ids[b][keep], text_embeds[b][keep]
            lab = labels[b][keep] if labels is not None else None
            where = (ids == IMAGE_TOKEN_ID).nonzero().flatten()
            if len(where) > 1:
                raise ValueError(
                    f"sample {b} holds {len(where)} image markers; one image per sample is supported"
                )
            if len(where) == 1:
                if image_embeds is None:
                    raise ValueError(f"sample {b} has an image marker but no pixel_values were given")
                p = int(where[0])
                img = image_embeds[b].to(emb.dtype)
                emb = torch.cat([emb[:p], img, emb[p + 1 :]])
                if lab is not None:
                    fill = lab.new_full((img.shape[0],), IGNORE_INDEX)
                    lab = torch.cat([lab[:p], fill, lab[p + 1 :]])
            rows_e.append(emb)
            rows_l.append(lab)
        length = max(e.shape[0] for e in rows_e)
        B, D = len(rows_e), text_embeds.shape[-1]
        embeds = text_embeds.new_zeros(B, length, D)
        mask = attention_mask.new_zeros(B, length)
        out_labels = input_ids.new_full((B, length), IGNORE_INDEX) if labels is not None else None
        for b, (e, lab) in enumerate(zip(rows_e, rows_l)):
            n = e.shape[0]
            sl = slice(0, n) if padding_side == "right" else slice(length - n, length)
            embeds[b, sl] = e
            mask[b, sl] = 1
            if out_labels is not None:
                out_labels[b, sl] = lab
        return embeds, mask, out_labels

    def embed_inputs(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        padding_side: str = "right",
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Images encoded and spliced into the embedded text: ``(embeds, mask, labels)``."""
        image_embeds = self.encode_images(pixel_values) if pixel_values is not None else None
        return self.splice(input_ids, attention_mask, image_embeds, labels, padding_side)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns the LM logits over the spliced sequence and the labels aligned to them."""
        embeds, mask, labels = self.embed_inputs(input_ids, attention_mask, pixel_values, labels)
        return self.llm(embeds, mask), labels

    def loss(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor | None,
        labels: torch.Tensor,
        normalization: LossNormalization = "token",
    ) -> torch.Tensor:
        """Next-token loss of the answer tokens; the LM head runs only where a target follows."""
        embeds, mask, labels = self.embed_inputs(input_ids, attention_mask, pixel_values, labels)
        where, targets = supervised_positions(labels)
        return selected_lm_loss(self.llm(embeds, mask, where), targets, where, normalization)

    # Generation and likelihood scoring live in mmssm_lightning.inference.Engine: decoding keeps
    # per-batch state (static Mamba state, CUDA graphs, KV caches) that a module should not carry.
