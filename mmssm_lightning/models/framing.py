"""Text tokens around and inside the image embeddings (Pythia-VL vs Mamba-VL §3.2, Fig. 1, App. A.2).

Mamba has no positional encoding, so, after Fuyu, the image is wrapped in a separator ``##`` at
its beginning and end, and an image-newline ``&&`` closes every row of patches but the last:

    ## p11 ... p1W && p21 ... p2W && ... && pH1 ... pHW ##

The separators are ordinary text, embedded by the LLM's own embedding table (and trained with it).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers import PreTrainedTokenizerBase

from mmssm_lightning.models.layout import VisualLayout


class ImageFraming:
    """Args:
    begin / end: text before and after the image (None: nothing).
    row_sep: text after every row of patches but the last (None: none). Rows are the rows of the
        projector's output grid; several maps are read one after the other.
    """

    def __init__(self, begin: str | None = "##", end: str | None = "##", row_sep: str | None = "&&") -> None:
        self.begin, self.end, self.row_sep = begin, end, row_sep

    def token_ids(self, tokenizer: PreTrainedTokenizerBase) -> dict[str, list[int]]:
        return {
            name: tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
            for name, text in (("begin", self.begin), ("end", self.end), ("row_sep", self.row_sep))
        }

    def num_tokens(self, layout: VisualLayout, ids: dict[str, list[int]]) -> int:
        rows = self._rows(layout)
        return layout.num_tokens + len(ids["begin"]) + len(ids["end"]) + (rows - 1) * len(ids["row_sep"])

    def _rows(self, layout: VisualLayout) -> int:
        if not self.row_sep:
            return 1
        return layout.require_grid("framing.row_sep (image-newline tokens)")[0] * layout.num_maps

    def frame(
        self,
        image_embeds: torch.Tensor,
        layout: VisualLayout,
        ids: dict[str, list[int]],
        embed: Callable[[torch.Tensor], torch.Tensor],
    ) -> torch.Tensor:
        """(B, N, D) projected image tokens -> (B, N', D) with the separators spliced in."""
        b, n, d = image_embeds.shape
        if n != layout.num_tokens:
            raise ValueError(f"framing expects {layout.num_tokens} image tokens from the projector, got {n}")

        def text(name: str) -> torch.Tensor:
            t = torch.tensor(ids[name], dtype=torch.long, device=image_embeds.device)
            return embed(t).to(image_embeds.dtype).expand(b, -1, -1)

        rows = self._rows(layout)
        pieces = [text("begin")]
        for r, row in enumerate(image_embeds.chunk(rows, dim=1)):
            if r:
                pieces.append(text("row_sep"))
            pieces.append(row)
        pieces.append(text("end"))
        return torch.cat(pieces, dim=1)
