"""Fixed-shape random training data for throughput runs: one random image and ``text_tokens``
random token ids per sample, every text token supervised. No disk, no tokenizer work: the numbers
measure the model step, not the input pipeline."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from mmssm_lightning.constants import IGNORE_INDEX, IMAGE_TOKEN_ID
from mmssm_lightning.data.datamodule import BaseDataModule


class RandomVLMDataset(Dataset):
    def __init__(self, n: int, text_tokens: int, vocab: int, image_size: int | None, seed: int = 0) -> None:
        self.n, self.text_tokens, self.vocab, self.image_size, self.seed = (
            n,
            text_tokens,
            vocab,
            image_size,
            seed,
        )

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        text = torch.randint(10, self.vocab, (self.text_tokens,), generator=g)
        image = self.image_size is not None
        ids = torch.cat([torch.tensor([IMAGE_TOKEN_ID]), text]) if image else text
        labels = torch.cat([torch.tensor([IGNORE_INDEX]), text]) if image else text
        pixels = torch.rand(3, self.image_size, self.image_size, generator=g) if image else None
        return {
            "input_ids": ids,
            "labels": labels,
            "prompt_ids": ids[:1],
            "pixel_values": pixels,
            "answer": "",
            "task": "default",
            "index": i,
        }


class RandomVLMDataModule(BaseDataModule):
    """Args:
    num_samples: training samples (the run stops at ``trainer.max_steps`` anyway).
    text_tokens: text tokens per sample (the image adds its visual tokens).
    seed: data seed. (the rest: see :class:`BaseDataModule`)
    """

    def __init__(
        self,
        tokenizer,
        prompt,
        transform,
        num_samples: int = 100_000,
        text_tokens: int = 256,
        seed: int = 0,
        global_batch_size: int = 128,
        per_device_batch_size: int = 16,
        num_workers: int = 2,
        shuffle_seed: int = 0,
    ) -> None:
        super().__init__(
            tokenizer,
            prompt,
            transform,
            global_batch_size,
            per_device_batch_size,
            per_device_batch_size,
            num_workers,
            None,
            ("default",),
            shuffle_seed,
        )
        self.num_samples, self.text_tokens, self.seed = num_samples, text_tokens, seed

    def has_split(self, split: str) -> bool:
        return split == "train"

    def make_dataset(self, split: str) -> RandomVLMDataset:
        size = self.transform.image_size if self.transform is not None else None
        return RandomVLMDataset(self.num_samples, self.text_tokens, len(self.tokenizer), size, self.seed)
