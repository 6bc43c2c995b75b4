"""Batch collation: pad the training sequences right and the generation prompts left."""

from __future__ import annotations

import torch

from mmssm_lightning.constants import IGNORE_INDEX


def pad_sequences(
    seqs: list[torch.Tensor], value: int, side: str = "right"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack 1-D tensors into (B, L_max) and return the attention mask alongside."""
    length = max(len(s) for s in seqs)
    out = torch.full((len(seqs), length), value, dtype=seqs[0].dtype)
    mask = torch.zeros(len(seqs), length, dtype=torch.long)
    for i, s in enumerate(seqs):
        sl = slice(0, len(s)) if side == "right" else slice(length - len(s), length)
        out[i, sl] = s
        mask[i, sl] = 1
    return out, mask


class Collator:
    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, items: list[dict]) -> dict:
        input_ids, attention_mask = pad_sequences([it["input_ids"] for it in items], self.pad_token_id)
        labels, _ = pad_sequences([it["labels"] for it in items], IGNORE_INDEX)
        prompt_ids, prompt_mask = pad_sequences([it["prompt_ids"] for it in items], self.pad_token_id, "left")
        pixels = [it["pixel_values"] for it in items]
        present = [p for p in pixels if p is not None]
        if present:
            # Text-only samples get a zero image that no IMAGE marker ever refers to.
            blank = torch.zeros_like(present[0])
            pixel_values = torch.stack([p if p is not None else blank for p in pixels])
        else:
            pixel_values = None
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "prompt_ids": prompt_ids,
            "prompt_mask": prompt_mask,
            "pixel_values": pixel_values,
            "answers": [it["answer"] for it in items],
            "tasks": [it["task"] for it in items],
            "indices": torch.tensor([it["index"] for it in items]),
        }
