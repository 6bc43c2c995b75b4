"""One inference engine for a :class:`~mmssm_lightning.models.vlm.VisionLanguageModel`: greedy
generation with per-row stop at EOS and next-token log-probabilities (likelihood scoring), used by
``mmssm-eval``'s ``Evaluator``, validation / test generation in training and the benchmarks.

Paths (``backend``):

* ``mamba``: Mamba LLMs prefill the left-padded batch and decode through the static-state decoder
  (:class:`~mmssm_lightning.inference.mamba_decode.MambaDecoder`: ``mamba_ssm`` / ``causal_conv1d``
  kernels and one CUDA graph per step on a GPU, PyTorch on CPU, the same function either way).
* ``hf_static``: transformer LLMs through HF ``generate`` with a static KV cache (HF compiles the
  step on a GPU).
* ``hf``: HF ``generate`` with its dynamic cache and a plain forward for scores: the path before
  this engine, kept as the baseline and used where the weights are FSDP-sharded (the static
  decoder reads whole weight tensors).
* ``auto``: ``mamba`` for Mamba, ``hf_static`` on a GPU, ``hf`` on CPU.

On a GPU the image towers + projector replay from a CUDA graph per batch shape; smaller batches are
padded up to ``batch_size`` (rows repeated, their outputs dropped) and prompts left-padded to a
multiple of ``length_multiple`` so that shapes repeat. Padding never changes a row's answer
(batch invariance, tests/test_inference.py).

A batch ends when every row has produced EOS or after ``max_new_tokens``; a finished row's later
positions hold the pad token. Timing follows lmms-eval (docs/throughput_metrics.md at 2bb5e98):
time to first token (towers + prefill + first token, the batch's whole prompt work) and end to end,
from which time per output token = (e2e - ttft) / (tokens - 1).
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from mmssm_lightning.inference.clock import Clock
from mmssm_lightning.inference.cuda_graph import CudaGraphed
from mmssm_lightning.inference.hf_generate import hf_generate, hf_last_logits
from mmssm_lightning.inference.mamba_decode import MambaDecoder
from mmssm_lightning.models.vlm import VisionLanguageModel

Backend = Literal["auto", "mamba", "hf_static", "hf"]
BACKENDS = ("auto", "mamba", "hf_static", "hf")


@dataclass
class Generation:
    """tokens: (B, T) on the host, pad after each row's EOS; lengths: tokens per row, EOS included;
    ttft_s / e2e_s: batch start to its first token / to its last."""

    tokens: torch.Tensor
    lengths: list[int]
    texts: list[str]
    ttft_s: float
    e2e_s: float


@dataclass
class Scores:
    """logprobs: (B, V) float32 log-probabilities of the token after each prompt; the batch's seconds."""

    logprobs: torch.Tensor
    e2e_s: float


def _sharded(model: torch.nn.Module) -> bool:
    """Whether FSDP wraps any part of ``model`` (its parameters are then flat shards between forwards)."""
    kinds = []
    with contextlib.suppress(ImportError):
        from torch.distributed.fsdp import FullyShardedDataParallel

        kinds.append(FullyShardedDataParallel)
    with contextlib.suppress(ImportError):
        from torch.distributed.fsdp import FSDPModule

        kinds.append(FSDPModule)
    return bool(kinds) and any(isinstance(m, tuple(kinds)) for m in model.modules())


class Engine:
    """Args:
    model: the VLM (weights used in place; it may keep training between calls).
    backend: see the module docstring.
    batch_size: on a GPU with graphs, pad smaller batches up to this many rows (one graph per shape).
    cuda_graph: graph the towers and the Mamba decode step on a GPU.
    graph_prefill: graph the Mamba prompt pass per shape (None: at batch <= 4, where it is bound by
        kernel launches; a larger batch is bound by arithmetic and a graph per shape costs memory).
    length_multiple: left-pad prompts to a multiple of this (None: 16 on a GPU, 1 on CPU).
    autotune: let each graphed Mamba decoder time its step variants on first capture.
    """

    def __init__(
        self,
        model: VisionLanguageModel,
        backend: Backend = "auto",
        batch_size: int | None = None,
        cuda_graph: bool = True,
        graph_prefill: bool | None = None,
        length_multiple: int | None = None,
        autotune: bool = True,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"inference backend must be one of {BACKENDS}, got {backend!r}")
        self.model = model
        self.lm = model.llm.model
        self.device = next(model.parameters()).device
        self.is_mamba = self.lm.config.model_type == "mamba"
        cuda = self.device.type == "cuda"
        if backend == "auto":
            backend = "mamba" if self.is_mamba else ("hf_static" if cuda else "hf")
        if backend == "mamba" and not self.is_mamba:
            raise ValueError(f"inference backend 'mamba' needs a Mamba LLM, not {self.lm.config.model_type}")
        if backend == "hf_static" and self.is_mamba:
            raise ValueError(
                "inference backend 'hf_static' is for KV-cache LLMs; Mamba takes 'mamba' or 'hf'"
            )
        if _sharded(model):
            backend = "hf"
        self.backend = backend
        fast = backend != "hf"
        self.cuda_graph = cuda_graph and cuda and fast
        self.batch_size = batch_size if self.cuda_graph else None
        self.graph_prefill = graph_prefill
        self.length_multiple = length_multiple or (16 if cuda and fast else 1)
        self.autotune = autotune
        self.encode_images = model.encode_images
        if self.cuda_graph and model.vision is not None:
            self.encode_images = CudaGraphed(model.encode_images)
        self._decoders: OrderedDict[int, MambaDecoder] = OrderedDict()
        tok = model.tokenizer
        self.eos_token_id = tok.eos_token_id
        self.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    @property
    def name(self) -> str:
        if self.backend == "mamba":
            return "mamba_static_state" + ("_cuda_graph" if self.cuda_graph else "")
        return {"hf_static": "hf_generate_static_cache", "hf": "hf_generate (baseline)"}[self.backend]

    # -- inputs --------------------------------------------------------------------------------
    def _rows(self, input_ids, attention_mask, pixel_values):
        """Pad the batch up to ``batch_size`` rows by repeating its last row."""
        n = input_ids.shape[0]
        if self.batch_size is None or n >= self.batch_size:
            return input_ids, attention_mask, pixel_values, n
        idx = torch.cat([torch.arange(n), torch.full((self.batch_size - n,), n - 1)]).to(input_ids.device)
        pixels = pixel_values[idx.to(pixel_values.device)] if pixel_values is not None else None
        return input_ids[idx], attention_mask[idx], pixels, n

    def prompt_embeds(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pixel_values: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Towers + projector, visual tokens spliced in, left-padded to ``length_multiple``:
        embeddings (B, L, D) and mask (B, L)."""
        image_embeds = self.encode_images(pixel_values) if pixel_values is not None else None
        embeds, mask, _ = self.model.splice(input_ids, attention_mask, image_embeds, None, "left")
        extra = -embeds.shape[1] % self.length_multiple
        if extra:
            embeds, mask = F.pad(embeds, (0, 0, extra, 0)), F.pad(mask, (extra, 0))
        return embeds, mask

    def decoder(self, batch: int) -> MambaDecoder:
        dec = self._decoders.get(batch)
        if dec is None:
            graph_prefill = self.graph_prefill if self.graph_prefill is not None else batch <= 4
            dec = MambaDecoder(
                self.lm,
                batch,
                cuda_graph=self.cuda_graph,
                graph_prefill=graph_prefill and self.cuda_graph,
                autotune=self.autotune and self.cuda_graph,
            )
            self._decoders[batch] = dec
            while len(self._decoders) > 2:  # states and graphs of a batch size not seen lately
                self._decoders.popitem(last=False)
        self._decoders.move_to_end(batch)
        return dec

    def _no_autocast(self):
        # under Lightning's bf16-mixed the weights are float32: run them as they are (the static
        # decoder's state and kernels want one dtype)
        return torch.autocast(self.device.type, enabled=False)

    # -- generation ----------------------------------------------------------------------------
    @torch.no_grad()
    def generate_tokens(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        max_new_tokens: int = 32,
        stop_at_eos: bool = True,
    ) -> Generation:
        """Greedy answers for prompts of any padding side (``stop_at_eos=False``: exactly
        ``max_new_tokens`` per row, EOS not special)."""
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        clock = Clock(self.device)
        eos = self.eos_token_id if stop_at_eos else None
        with self._no_autocast():
            start = clock.mark()
            input_ids, attention_mask, pixel_values, n = self._rows(input_ids, attention_mask, pixel_values)
            embeds, mask = self.prompt_embeds(input_ids, attention_mask, pixel_values)
            if self.backend == "mamba":
                tokens, first = self._mamba_generate(embeds, mask, max_new_tokens, eos, clock)
            else:
                tokens, first = hf_generate(
                    self.lm,
                    embeds,
                    mask,
                    max_new_tokens,
                    eos,
                    self.pad_token_id,
                    clock,
                    self.backend == "hf_static",
                )
            end = clock.mark()
        tokens = tokens[:n].cpu()
        lengths = [_length(row, eos) for row in tokens]
        answers = [
            row[: k - 1] if eos is not None and row[k - 1] == eos else row[:k]
            for row, k in zip(tokens, lengths)
        ]
        texts = self.model.tokenizer.batch_decode(answers, skip_special_tokens=True)
        return Generation(
            tokens, lengths, texts, clock.seconds(start, first or end), clock.seconds(start, end)
        )

    def _mamba_generate(self, embeds, mask, max_new_tokens: int, eos: int | None, clock: Clock):
        batch = embeds.shape[0]
        dec = self.decoder(batch)
        dec.prefill(embeds, None if bool(mask.all()) else mask)
        first = clock.mark()
        out = torch.full((batch, max_new_tokens), self.pad_token_id, dtype=torch.long, device=self.device)
        finished = torch.zeros(batch, dtype=torch.bool, device=self.device)
        steps = max_new_tokens
        for t in range(max_new_tokens):
            token = dec.tokens if t == 0 else dec.step()
            out[:, t] = token.masked_fill(finished, self.pad_token_id)
            if eos is not None:
                finished |= token == eos
                if t + 1 < max_new_tokens and bool(finished.all()):  # one sync per step: ~10 us of ~3 ms
                    steps = t + 1
                    break
        return out[:, :steps], first

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        max_new_tokens: int = 32,
    ) -> list[str]:
        """Greedy answers as text, each stopped at its EOS."""
        return self.generate_tokens(input_ids, attention_mask, pixel_values, max_new_tokens).texts

    # -- likelihood ----------------------------------------------------------------------------
    @torch.no_grad()
    def score(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pixel_values: torch.Tensor | None = None
    ) -> Scores:
        """Log-probabilities of the next token after each prompt: one prefill, last position only."""
        clock = Clock(self.device)
        with self._no_autocast():
            start = clock.mark()
            input_ids, attention_mask, pixel_values, n = self._rows(input_ids, attention_mask, pixel_values)
            embeds, mask = self.prompt_embeds(input_ids, attention_mask, pixel_values)
            if self.backend == "mamba":
                dec = self.decoder(embeds.shape[0])
                dec.prefill(embeds, None if bool(mask.all()) else mask)
                logits = dec.logits
            else:
                logits = hf_last_logits(self.lm, embeds, mask)
            logprobs = torch.log_softmax(logits[:n].float(), dim=-1)
            end = clock.mark()
        return Scores(logprobs, clock.seconds(start, end))

    @torch.no_grad()
    def next_token_logprobs(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pixel_values: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, V) log-probabilities of the token after each prompt (likelihood scoring of answers)."""
        return self.score(input_ids, attention_mask, pixel_values).logprobs


def _length(row: torch.Tensor, eos: int | None) -> int:
    """Generated tokens of a row up to and including its first EOS (all of them without one)."""
    if eos is not None:
        hits = (row == eos).nonzero()
        if len(hits):
            return int(hits[0]) + 1
    return len(row)
