"""The input pipeline of ``mmssm-eval``: prompts tokenized up front (their lengths order the batches),
images decoded and transformed in DataLoader workers while the model runs, batches of similar
prompt length (little left padding), answers put back in the benchmark's order afterwards."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from mmssm_lightning.data.collate import pad_sequences
from mmssm_lightning.eval.sample import EvalSample


class PromptImages(Dataset):
    """Item i: (i, prompt ids, pixels or None); the image is read and transformed here (in a worker).

    Args:
        samples: the benchmark's samples.
        prompts: token ids of each sample's prompt (``IMAGE_TOKEN_ID`` where its image goes).
        transform: PIL image -> (3, H, W) in [0, 1]; None for a model without a vision tower.
    """

    def __init__(
        self,
        samples: Sequence[EvalSample],
        prompts: Sequence[torch.Tensor],
        transform: Callable | None,
    ) -> None:
        self.samples, self.prompts, self.transform = samples, prompts, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor, torch.Tensor | None]:
        pixels = None
        if self.transform is not None:
            image = self.samples[i].load_image()
            pixels = self.transform(image) if image is not None else None
        return i, self.prompts[i], pixels


class LeftPadCollate:
    """Left-padded ids and mask, stacked pixels (a zero image for text-only rows of a mixed batch:
    no image marker refers to it), and the sample indices."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, items: list[tuple[int, torch.Tensor, torch.Tensor | None]]) -> dict:
        index = [i for i, _, _ in items]
        input_ids, mask = pad_sequences([ids for _, ids, _ in items], self.pad_token_id, "left")
        present = [p for _, _, p in items if p is not None]
        pixels = None
        if present:
            blank = torch.zeros_like(present[0])
            pixels = torch.stack([p if p is not None else blank for _, _, p in items])
        return {"index": index, "input_ids": input_ids, "attention_mask": mask, "pixel_values": pixels}


def length_sorted(lengths: Sequence[int], with_image: Sequence[bool]) -> list[int]:
    """Sample indices ordered by (has an image, longest prompt first, index): neighbours pad little.
    Longest first: a static KV cache sized by the first batch serves every later one (HF keeps the
    largest length it has allocated, so its compiled step is not recompiled), and a batch that does
    not fit in memory fails at the start."""
    return sorted(range(len(lengths)), key=lambda i: (not with_image[i], -lengths[i], i))


def batches(indices: Sequence[int], batch_size: int) -> list[list[int]]:
    return [list(indices[i : i + batch_size]) for i in range(0, len(indices), batch_size)]


def loader(
    dataset: PromptImages,
    batch_indices: list[list[int]],
    pad_token_id: int,
    num_workers: int,
    prefetch_factor: int,
    pin_memory: bool,
) -> DataLoader:
    return DataLoader(
        dataset,
        batch_sampler=batch_indices,
        collate_fn=LeftPadCollate(pad_token_id),
        num_workers=num_workers,
        prefetch_factor=prefetch_factor if num_workers > 0 else None,
        pin_memory=pin_memory,
    )
