"""Tokenizers: the real hub tokenizer, or a byte-level BPE trained here for the tiny models.

The synthetic tokenizer is the same class as GPT-NeoX's (``PreTrainedTokenizerFast`` over a
byte-level BPE, ``<|endoftext|>`` as EOS, ``<|padding|>`` as pad), so every code path that sees a
real Mamba/Pythia tokenizer sees the same API here. Byte-level means any text encodes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

EOS = "<|endoftext|>"
PAD = "<|padding|>"
# Chat markers of the templates get their own ids so that a tiny model sees them as one token.
CHAT_MARKERS = ("<|user|>", "<|assistant|>", "<|system|>")


# The chat templates' own words: every synthetic tokenizer learns them, whatever its corpus.
TEMPLATE_LINES = (
    "<|user|>\n<|assistant|>\n",
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives "
    "helpful, detailed, and polite answers to the user's questions. USER: ASSISTANT:",
    "In: Out:",
    "## && ##",
)


def synthetic_bpe_tokenizer(
    vocab_size: int = 1024, cache_dir: str | None = None, corpus: Sequence[str] = ()
) -> PreTrainedTokenizerFast:
    """Train (or load from ``cache_dir``) a byte-level BPE on ``corpus`` (the synthetic data's
    text: ``llm.tokenizer.corpus`` in the configs) plus the chat templates' words."""
    lines = [*corpus, *TEMPLATE_LINES]
    digest = hashlib.sha1("\n".join(lines).encode()).hexdigest()[:10]
    cache = Path(cache_dir) / f"synthetic_bpe_{vocab_size}_{digest}.json" if cache_dir else None
    if cache is not None and cache.exists():
        tok = Tokenizer.from_file(str(cache))
    else:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[EOS, PAD, *CHAT_MARKERS],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(lines, trainer=trainer)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tok.save(str(cache))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD, unk_token=None)


def load_tokenizer(
    name_or_path: str,
    pretrained: bool = True,
    synthetic_vocab_size: int = 1024,
    cache_dir: str | None = None,
    corpus: Sequence[str] = (),
) -> PreTrainedTokenizerBase:
    """The hub tokenizer ``name_or_path`` when ``pretrained``; else the synthetic BPE.

    ``pretrained: false`` is how a real-shaped model is built with random weights on a machine
    that cannot reach the hub (benchmarks, tests): the tokenizer must not download either.
    """
    if not pretrained:
        return synthetic_bpe_tokenizer(synthetic_vocab_size, cache_dir, corpus)
    tok = AutoTokenizer.from_pretrained(name_or_path)
    if tok.pad_token is None:
        # GPT-NeoX and Llama tokenizers ship without a pad token; padded positions never reach
        # the loss (labels are -100 there), so EOS is a safe stand-in.
        tok.pad_token = tok.eos_token
    return tok
