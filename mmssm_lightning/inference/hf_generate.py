"""The Hugging Face path: ``generate`` (greedy, left-padded ``inputs_embeds``) and a last-position
forward. Transformer LLMs (GPT-NeoX / Pythia, Llama) take it with a static KV cache on a GPU, where
HF compiles the decode step itself (``torch.compile``, CUDA graphs); every LLM takes it with the
dynamic cache as the baseline (what ``VisionLanguageModel.generate`` ran before the engine).

Left padding is invariant here without position ids: GPT-NeoX and Llama rotate queries and keys
(RoPE), so a shift of every position by the pad count leaves q . k unchanged, and the pads are
masked out of attention; HF's Mamba masks its mixer at pad positions (see
:mod:`~mmssm_lightning.inference.mamba_decode`). tests/test_inference.py checks batch 1 against
batch N for both families.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel
from transformers.generation.streamers import BaseStreamer

from mmssm_lightning.inference.clock import Clock


class _FirstToken(BaseStreamer):
    """Marks the clock when ``generate`` hands over its first new tokens. HF calls ``put`` with the
    prompt's ids first (empty for ``inputs_embeds``), then with each step's tokens after moving
    them to the host, i.e. after they exist."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.calls = 0
        self.first = None

    def put(self, value: torch.Tensor) -> None:
        self.calls += 1
        if self.calls == 2:
            self.first = self.clock.mark()

    def end(self) -> None:
        pass


@torch.no_grad()
def hf_generate(
    model: PreTrainedModel,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    max_new_tokens: int,
    eos_token_id: int | None,
    pad_token_id: int,
    clock: Clock,
    static_cache: bool,
):
    """Greedy tokens (b, T <= max_new_tokens), rows padded with ``pad_token_id`` after their EOS, the
    batch stopping when every row has ended (``eos_token_id=None``: never); and the first-token mark."""
    streamer = _FirstToken(clock)
    out = model.generate(
        inputs_embeds=inputs_embeds,
        attention_mask=attention_mask,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        eos_token_id=eos_token_id,  # None switches HF's EOS stop off (not the config's default)
        pad_token_id=pad_token_id,
        streamer=streamer,
        **({"cache_implementation": "static"} if static_cache else {}),
    )
    return out, streamer.first


@torch.no_grad()
def hf_last_logits(
    model: PreTrainedModel, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """Float32 logits (b, V) at the last position of left-padded inputs (no (b, L, V) tensor)."""
    out = model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=False, logits_to_keep=1)
    return out.logits[:, -1].float()
