"""The LightningDataModule over LLaVA-format splits, with optional synthetic generation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from mmssm_lightning.data.collate import Collator
from mmssm_lightning.data.llava import LlavaDataset
from mmssm_lightning.data.prompting import PromptFormat, SequenceBuilder
from mmssm_lightning.data.synthetic import SyntheticShapesSpec, generate
from mmssm_lightning.data.transforms import ImageTransform


def accumulation_steps(global_batch_size: int, per_device_batch_size: int, world_size: int) -> int:
    """Global batch = per-device batch x accumulation x world size, exactly, or a clear error."""
    per_step = per_device_batch_size * world_size
    if global_batch_size < 1 or per_device_batch_size < 1:
        raise ValueError("data.global_batch_size and data.per_device_batch_size must be >= 1")
    if global_batch_size % per_step:
        raise ValueError(
            f"data.global_batch_size={global_batch_size} is not a multiple of data.per_device_batch_size="
            f"{per_device_batch_size} x {world_size} device(s) = {per_step}"
        )
    return global_batch_size // per_step


class VLMDataModule(L.LightningDataModule):
    """Args:
    root: folder the split files and ``image_folder`` are relative to.
    train / val / test: split files (LLaVA json or jsonl); ``test`` may be None.
    image_folder: images folder, relative to ``root`` unless absolute.
    synthetic: when set, the synthetic shapes data is generated into ``root`` first.
    global_batch_size / per_device_batch_size: the optimisation batch and what one device holds.
    eval_batch_size: batch size of validation/test generation.
    max_length: text tokens kept per sequence (the image adds its visual tokens on top).
    tokenizer / prompt / transform: supplied by the entry point from the model.
    tasks: the task names records carry (``task`` key; "default" when absent), for the metrics.
    """

    def __init__(
        self,
        root: str,
        train: str,
        val: str,
        tokenizer: PreTrainedTokenizerBase,
        prompt: PromptFormat,
        transform: ImageTransform,
        test: str | None = None,
        image_folder: str | None = ".",
        synthetic: SyntheticShapesSpec | None = None,
        global_batch_size: int = 8,
        per_device_batch_size: int = 8,
        eval_batch_size: int = 32,
        num_workers: int = 0,
        max_length: int | None = 2048,
        check_images: bool = True,
        tasks: Sequence[str] = ("default",),
    ) -> None:
        super().__init__()
        self.root = Path(root)
        self.files = {"train": train, "val": val, "test": test}
        self.image_folder = None if image_folder is None else self.root / image_folder
        self.synthetic = synthetic
        self.global_batch_size = global_batch_size
        self.per_device_batch_size = per_device_batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.check_images = check_images
        self.tasks = list(tasks)
        self.builder = SequenceBuilder(tokenizer, prompt, max_length)
        self.transform = transform
        self.collate = Collator(tokenizer.pad_token_id)
        self.datasets: dict[str, LlavaDataset] = {}

    def prepare_data(self) -> None:
        if self.synthetic is not None:
            generate(self.root, self.synthetic)

    def dataset(self, split: str) -> LlavaDataset:
        if split not in self.datasets:
            name = self.files.get(split)
            if name is None:
                raise ValueError(f"data.{split} is not set")
            self.datasets[split] = LlavaDataset(
                self.root / name, self.image_folder, self.builder, self.transform, self.check_images
            )
        return self.datasets[split]

    def setup(self, stage: str | None = None) -> None:
        if self.synthetic is not None:
            generate(self.root, self.synthetic)  # no-op when prepare_data already did it
        if stage in (None, "fit"):
            self.dataset("train")
            self.dataset("val")
        if stage in ("validate",):
            self.dataset("val")
        if stage in (None, "test") and self.files["test"] is not None:
            self.dataset("test")

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.dataset(split),
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            collate_fn=self.collate,
            persistent_workers=self.num_workers > 0,
            drop_last=shuffle,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.per_device_batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, shuffle=False)
