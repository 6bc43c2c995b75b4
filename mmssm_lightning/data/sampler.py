"""Training order that a resumed run replays exactly, on one process or many.

The order of an epoch is a pure function of ``(seed, epoch)``: one permutation of the whole split
(torch's ``DistributedSampler`` recipe: ``randperm`` under ``seed + epoch``), cut into one shard per
rank by striding. Rank r's k-th batch is shard_r[k*B:(k+1)*B], so the k-th global batch is the
contiguous chunk perm[k*B*R:(k+1)*B*R] of that permutation whatever the world size R.

:class:`ResumableLoader` counts the batches the training loop has taken in the current epoch and
hands ``{epoch, batches}`` to Lightning as its ``state_dict`` (Lightning stores it in the checkpoint
under ``loops.fit_loop.state_dict.combined_loader`` and gives it back on ``ckpt_path=`` resume).
The first epoch after a resume then skips that many batches of its shard before loading anything.
Every rank holds the same count (DDP ranks step together), so rank 0's state is every rank's.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterator
from typing import Any

from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import DataLoader, Dataset, DistributedSampler


class ResumableSampler(DistributedSampler):
    """This rank's indices of epoch ``epoch``, from ``start`` on.

    A ``DistributedSampler`` subclass on purpose: Lightning leaves those in place under DDP (it only
    swaps in its own sampler for other kinds), so sharding stays ours with or without
    ``Trainer(use_distributed_sampler=...)``.
    """

    def __init__(
        self,
        dataset: Dataset,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = True,
    ) -> None:
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last
        )
        self.start = 0  # samples of this rank's shard to skip in the current epoch

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(super().__iter__(), self.start, None)


class ResumableLoader(DataLoader):
    """A training ``DataLoader`` over a :class:`ResumableSampler` with Lightning's stateful-loader
    interface (``state_dict`` / ``load_state_dict``). Worker processes are fine: the count is kept
    where batches leave the loader, not where the sampler hands out indices."""

    sampler: ResumableSampler

    def __init__(self, dataset: Dataset, sampler: ResumableSampler, batch_size: int, **kwargs: Any) -> None:
        super().__init__(dataset, batch_size=batch_size, sampler=sampler, drop_last=True, **kwargs)
        self._batches = 0  # batches of the current epoch handed to the training loop
        self._resume: tuple[int, int] | None = None  # (epoch, batches) to skip, once

    def __iter__(self) -> Iterator[Any]:
        # A generator: nothing is read before the first batch is asked for, by which time Lightning
        # has called sampler.set_epoch for the epoch being run (it creates the iterator earlier).
        epoch = self.sampler.epoch
        skip = self._resume[1] if self._resume is not None and self._resume[0] == epoch else 0
        self._resume = None
        self.sampler.start = skip * self.batch_size
        self._batches = skip
        for batch in super().__iter__():
            self._batches += 1
            yield batch

    def _shape(self) -> dict[str, int]:
        s = self.sampler
        return {
            "num_samples": len(self.dataset),
            "num_replicas": s.num_replicas,
            "batch_size": self.batch_size,
        }

    def state_dict(self) -> dict[str, Any]:
        epoch, batches = self.sampler.epoch, self._batches
        if batches >= len(self):  # saved at the end of an epoch: resume at the next one's start
            epoch, batches = epoch + 1, 0
        return {"epoch": epoch, "batches": batches, "seed": self.sampler.seed, **self._shape()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        epoch, batches = int(state["epoch"]), int(state["batches"])
        if state.get("seed", self.sampler.seed) != self.sampler.seed:
            warn_line(
                f"data.shuffle_seed changed since the checkpoint ({state['seed']} -> {self.sampler.seed}): "
                "the resumed epoch does not continue the saved one's order"
            )
        saved = {k: int(state[k]) for k in self._shape() if k in state}
        if saved and saved != self._shape():
            # The global order is the same permutation; what was consumed is a prefix of it in samples.
            samples = batches * saved["batch_size"] * saved["num_replicas"]
            per_batch = self.batch_size * self.sampler.num_replicas
            batches = samples // per_batch
            warn_line(
                f"resuming with {self._shape()} where the checkpoint had {saved}: skipping {batches} "
                f"batch(es) of epoch {epoch} ({batches * per_batch} of the {samples} samples consumed); "
                "the data order is not an exact replay"
            )
        self._resume = (epoch, batches)
        self.sampler.set_epoch(epoch)


@rank_zero_only
def warn_line(message: str) -> None:
    """A one-line warning on stderr, from rank 0 only (every rank computes the same thing)."""
    print(f"warning: {message}", file=sys.stderr)
