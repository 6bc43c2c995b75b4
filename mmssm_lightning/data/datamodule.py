"""Lightning data modules: LLaVA-format splits on disk (optionally generated first) and the
base class that owns batching, the global-batch arithmetic and the results' baseline."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import lightning as L
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from mmssm_lightning.data.answers import AnswerMetric, majority_baseline
from mmssm_lightning.data.collate import Collator
from mmssm_lightning.data.errors import NoTrainingBatchesError
from mmssm_lightning.data.llava import LlavaDataset, supervised_records
from mmssm_lightning.data.packing import PackCaps
from mmssm_lightning.data.prompting import PromptFormat, SequenceBuilder
from mmssm_lightning.data.sampler import ResumableLoader, ResumableSampler, warn_line
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


class DatasetGenerator(Protocol):
    """A synthetic dataset spec: writes ``{split}.json`` (+ images) under ``root``."""

    def generate(self, root: str | Path) -> Path: ...


class BaseDataModule(L.LightningDataModule):
    """Batching shared by every data source. Subclasses build :meth:`make_dataset`.

    Args:
        tokenizer / prompt / transform: supplied by the entry point from the model.
        global_batch_size / per_device_batch_size: the optimisation batch and what one device holds.
        eval_batch_size: batch size of validation/test generation.
        max_length: text tokens kept per sequence (the image adds its visual tokens on top).
        tasks: the task names records carry (``task`` key; "default" when absent), for the metrics.
        shuffle_seed: the training order of epoch e is a permutation under ``shuffle_seed + e``
            (see :mod:`mmssm_lightning.data.sampler`: a resumed run replays it exactly).
    """

    #: tokens the LLM must gain before training (the grounding task's special tokens)
    new_tokens: list[str] = []
    new_token_init_seed: int = 0

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        prompt: PromptFormat,
        transform: ImageTransform | None,
        global_batch_size: int = 8,
        per_device_batch_size: int = 8,
        eval_batch_size: int = 32,
        num_workers: int = 0,
        max_length: int | None = 2048,
        tasks: Sequence[str] = ("default",),
        shuffle_seed: int = 0,
    ) -> None:
        super().__init__()
        self.shuffle_seed = shuffle_seed
        self.global_batch_size = global_batch_size
        self.per_device_batch_size = per_device_batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.tasks = list(tasks)
        self.tokenizer = tokenizer
        self.prompt = prompt
        self.max_length = max_length
        self.transform = transform
        self.collate = Collator(tokenizer.pad_token_id)
        self.datasets: dict[str, LlavaDataset] = {}

    @property
    def builder(self) -> SequenceBuilder:
        # Built on use: tokens added to the tokenizer after construction must be seen.
        return SequenceBuilder(self.tokenizer, self.prompt, self.max_length)

    def make_dataset(self, split: str) -> LlavaDataset:
        raise NotImplementedError

    def has_split(self, split: str) -> bool:
        return True

    def dataset(self, split: str) -> LlavaDataset:
        if split not in self.datasets:
            self.datasets[split] = self.make_dataset(split)
        return self.datasets[split]

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):
            self.dataset("train")
        if stage in (None, "fit", "validate") and self.has_split("val"):
            self.dataset("val")
        if stage in (None, "test") and self.has_split("test"):
            self.dataset("test")

    def baseline(self, metric: AnswerMetric, split: str = "test") -> dict[str, float]:
        """The score a model must beat: always giving each task's most frequent training answer."""
        return majority_baseline(self.dataset("train").records, self.dataset(split).records, metric)

    def task_counts(self, split: str = "test") -> dict[str, int]:
        return dict(Counter(r.get("task", "default") for r in self.dataset(split).records))

    def _loader(self, split: str, batch_size: int) -> DataLoader:
        return DataLoader(
            self.dataset(split),
            batch_size=batch_size,
            num_workers=self.num_workers,
            collate_fn=self.collate,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled, one shard per rank, incomplete batches dropped, resumable mid-epoch."""
        trainer = self.trainer
        dataset = self.dataset("train")
        if trainer is not None and trainer.overfit_batches > 0:
            # Lightning would replace a shuffling sampler (and rebuild the loader) anyway.
            return self._loader("train", self.per_device_batch_size)
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        sampler = ResumableSampler(dataset, world, rank, shuffle=True, seed=self.shuffle_seed)
        loader = ResumableLoader(
            dataset,
            sampler,
            self.per_device_batch_size,
            num_workers=self.num_workers,
            collate_fn=self.collate,
            persistent_workers=self.num_workers > 0,
        )
        if len(loader) == 0:
            raise NoTrainingBatchesError(
                f"No training batches: the train split ({getattr(dataset, 'source', 'train')}) has "
                f"{len(dataset)} record(s), fewer than one batch of data.per_device_batch_size="
                f"{self.per_device_batch_size} on each of {world} device(s) (incomplete batches are dropped)"
            )
        return loader

    def val_dataloader(self) -> DataLoader | list:
        # No val split: an empty list, which Lightning reads as "no validation".
        return self._loader("val", self.eval_batch_size) if self.has_split("val") else []

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size)


class VLMDataModule(BaseDataModule):
    """LLaVA-format splits (json or jsonl) + an image folder, optionally generated first.

    Args:
        root: folder the split files and ``image_folder`` are relative to.
        train / val / test: split files (a list concatenates several); ``val`` and ``test`` may be None.
        image_folder: images folder, relative to ``root`` unless absolute.
        synthetic: a generator spec (e.g. the shapes data) run into ``root`` before loading.
        pack_max_pairs: pack QA pairs of one image, source and task into one training sequence
            (Pythia-VL vs Mamba-VL App. A.3): a mapping ``source -> max pairs`` (null: no cap;
            unlisted sources are not packed) or one cap for every source; captions are never
            packed; None keeps one record per sequence (see packing.py).
        check_images: before training, open and decode every image the splits refer to (in
            parallel; what passed is cached under ``cache_dir`` by path, size and mtime). False
            checks nothing up front: a missing or corrupt image then stops the run when a batch
            reaches it, naming the file and record.
        cache_dir: where the image-check cache lives (``paths.cache_dir``); None: no cache.
        (the rest: see :class:`BaseDataModule`)
    """

    def __init__(
        self,
        root: str,
        train: str | list[str],
        val: str | list[str] | None,
        tokenizer: PreTrainedTokenizerBase,
        prompt: PromptFormat,
        transform: ImageTransform | None,
        test: str | list[str] | None = None,
        image_folder: str | None = ".",
        synthetic: DatasetGenerator | None = None,
        pack_max_pairs: PackCaps | None = None,
        check_images: bool = True,
        cache_dir: str | None = None,
        **batching,
    ) -> None:
        super().__init__(tokenizer, prompt, transform, **batching)
        self.root = Path(root)
        self.files = {"train": train, "val": val, "test": test}
        self.image_folder = None if image_folder is None else self.root / image_folder
        self.synthetic = synthetic
        self.pack_max_pairs = pack_max_pairs
        self.check_images = check_images
        self.cache_dir = cache_dir

    def _generate(self) -> None:
        if self.synthetic is not None:
            self.synthetic.generate(self.root)  # no-op when done before (the spec is stamped)

    def prepare_data(self) -> None:
        self._generate()
        if self.check_images:
            # Lightning runs this on one process per node before the others set up: the images of
            # every split are decoded once there, and the other ranks find them in the cache.
            for split in ("train", "val", "test"):
                if self.has_split(split):
                    self.dataset(split)

    def setup(self, stage: str | None = None) -> None:
        self._generate()
        super().setup(stage)

    def has_split(self, split: str) -> bool:
        return self.files.get(split) is not None

    def make_dataset(self, split: str) -> LlavaDataset:
        name = self.files.get(split)
        if name is None:
            raise ValueError(f"data.{split} is not set")
        names = [name] if isinstance(name, str) else list(name)
        if not names:
            raise ValueError(f"data.{split} is an empty list: name at least one file")
        dataset = LlavaDataset.from_file(
            [self.root / n for n in names],
            self.image_folder,
            self.builder,
            self.transform,
            self.check_images,
            pack_max_pairs=self.pack_max_pairs if split == "train" else None,
            cache_dir=self.cache_dir,
        )
        if split == "train":
            kept = supervised_records(dataset.records, self.builder, dataset.source)
            if len(kept) < len(dataset.records):
                warn_line(
                    f"data.max_length={self.max_length} truncates every answer of "
                    f"{len(dataset.records) - len(kept)} of {len(dataset.records)} records of "
                    f"{dataset.source}; they are left out of training"
                )
                dataset.records = kept
        return dataset
