"""The synthetic in-context grounding task of Pythia-VL vs Mamba-VL (§5.3.2, Fig. 5, App. C.4).

Visual grounding cast as in-context multimodal retrieval: the context is a sequence of unique
special tokens (new embeddings, standing in for patch embeddings), then ``<out>`` and a query
special token taken from the context; the model must answer with the ordinary vocabulary token
assigned to the query's *position* (two hops: find the token, map its position into the text
embedding space)::

    <s42><s17><s14> ... <out><s14>   ->   "z"   (the token of position 3)

Targets are spread evenly over positions (example i asks for position i mod L), each example is a
pure function of (seed, split, index), and records are made on demand, so a million-example split
costs no disk. ``query_first`` puts ``<out><query>`` before the context (App. C.4.1, the prefix
variant). Records are text-only LLaVA conversations with ``task = "pos{p:03d}"``, so the usual
metric reports accuracy per target position (the paper's Fig. 7).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase

from mmssm_lightning.data.answers import AnswerMetric, normalize_answer
from mmssm_lightning.data.datamodule import BaseDataModule
from mmssm_lightning.data.llava import LlavaDataset
from mmssm_lightning.data.prompting import PromptFormat

QUERY = "<out>"


def special_token(i: int) -> str:
    return f"<s{i}>"


def position_answers(tokenizer: PreTrainedTokenizerBase, n: int) -> list[str]:
    """``n`` answer strings, one per position: ordinary vocabulary tokens that encode back to
    exactly themselves and whose normalised text no other vocabulary token shares (so a greedy
    one-token answer is right only if it is the very token). Lowest ids first: deterministic."""
    special = set(tokenizer.all_special_ids) | set(tokenizer.get_added_vocab().values())
    texts = {i: tokenizer.decode([i]) for i in range(len(tokenizer)) if i not in special}
    keys = {i: normalize_answer(t) for i, t in texts.items()}
    shared = Counter(keys.values())
    chosen = []
    for i, text in texts.items():
        if (
            keys[i]
            and shared[keys[i]] == 1
            and text.isprintable()
            and tokenizer(text, add_special_tokens=False)["input_ids"] == [i]
        ):
            chosen.append(text)
            if len(chosen) == n:
                return chosen
    raise ValueError(
        f"data.seq_len={n}: the tokenizer has only {len(chosen)} unambiguous single-token answers"
    )


class GroundingRecords(Sequence):
    """The records of one split, made on demand."""

    def __init__(
        self,
        n: int,
        seq_len: int,
        num_special_tokens: int,
        seed: int,
        split: str,
        answers: Sequence[str],
        query_first: bool,
    ) -> None:
        self.n, self.seq_len, self.pool = n, seq_len, num_special_tokens
        self.seed, self.split, self.answers, self.query_first = seed, split, list(answers), query_first

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < self.n:
            raise IndexError(i)
        rng = random.Random(f"{self.seed}-{self.split}-{i}")
        position = i % self.seq_len
        context = rng.sample(range(self.pool), self.seq_len)
        ctx = "".join(special_token(t) for t in context)
        query = QUERY + special_token(context[position])
        return {
            "id": f"{self.split}-{i}",
            "task": f"pos{position + 1:03d}",
            "conversations": [
                {"from": "human", "value": query + ctx if self.query_first else ctx + query},
                {"from": "gpt", "value": self.answers[position]},
            ],
        }


class GroundingSyntheticDataModule(BaseDataModule):
    """Args:
    seq_len: context length L (50 / 100 / 200 in the paper).
    num_special_tokens: size of the pool the L unique context tokens are drawn from.
    splits: examples per split (1M train / 100k held-out in the paper).
    seed: data seed. query_first: the prefix variant.
    embedding_init_seed: which random initialisation the new token embeddings get.
    (the rest: see :class:`BaseDataModule`; ``tasks`` are the positions)
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        prompt: PromptFormat,
        transform: object | None = None,
        seq_len: int = 50,
        num_special_tokens: int = 256,
        splits: dict[str, int] | None = None,
        seed: int = 0,
        query_first: bool = False,
        embedding_init_seed: int = 0,
        global_batch_size: int = 64,
        per_device_batch_size: int = 64,
        eval_batch_size: int = 250,
        num_workers: int = 0,
        max_length: int | None = None,
        shuffle_seed: int = 0,
    ) -> None:
        if not 1 <= seq_len <= num_special_tokens:
            raise ValueError(
                f"data.seq_len={seq_len} needs 1 <= seq_len <= data.num_special_tokens={num_special_tokens}"
            )
        tasks = [f"pos{p:03d}" for p in range(1, seq_len + 1)]
        super().__init__(
            tokenizer,
            prompt,
            None,
            global_batch_size,
            per_device_batch_size,
            eval_batch_size,
            num_workers,
            max_length,
            tasks,
            shuffle_seed,
        )
        self.seq_len, self.num_special_tokens, self.seed, self.query_first = (
            seq_len,
            num_special_tokens,
            seed,
            query_first,
        )
        self.splits = dict(splits or {"train": 1_000_000, "val": 2_000, "test": 2_000})
        self.new_tokens = [special_token(i) for i in range(num_special_tokens)] + [QUERY]
        self.new_token_init_seed = embedding_init_seed
        self._answers: list[str] | None = None

    def has_split(self, split: str) -> bool:
        return split in self.splits

    def make_dataset(self, split: str) -> LlavaDataset:
        if split not in self.splits:
            raise ValueError(f"data.splits has no '{split}' split")
        missing = [t for t in (QUERY, special_token(0)) if t not in self.tokenizer.get_vocab()]
        if missing:
            raise ValueError(
                f"the tokenizer lacks {missing}: build this data module through build_datamodule()"
            )
        if self._answers is None:
            self._answers = position_answers(self.tokenizer, self.seq_len)
        records = GroundingRecords(
            self.splits[split],
            self.seq_len,
            self.num_special_tokens,
            self.seed,
            split,
            self._answers,
            self.query_first,
        )
        return LlavaDataset(records, self.builder, None, source=f"grounding_synthetic/{split}")

    def baseline(self, metric: AnswerMetric, split: str = "test") -> dict[str, float]:
        """Chance: one of L positions. (A per-position majority answer would be the answer itself.)"""
        return dict.fromkeys(self.task_counts(split), 1.0 / self.seq_len) | {"mean": 1.0 / self.seq_len}
