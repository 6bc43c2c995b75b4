"""Training throughput as a Lightning callback: samples/s, tokens/s and model FLOPs utilisation.

Model FLOPs per sample count every matrix product once forward (2 FLOPs per weight per token) and
once or twice backward: the input gradient (2) wherever something upstream still learns, the
weight gradient (2) where the weights learn. So with frozen towers (forward only), a trainable
projector and LLM, the LLM costs 6 N per token and the towers 2 N per patch. Attention adds
4 L h T per token forward (the usual non-causal convention); Mamba's scan and convolutions are a
rounding error and are left out. Activation recomputation is not counted (it is not model work),
which is what makes this *model* FLOPs utilisation:

    MFU = model FLOPs per second / (devices x peak dense bf16 FLOP/s)
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only

from mmssm_lightning.constants import IMAGE_TOKEN_ID
from mmssm_lightning.models.vlm import VisionLanguageModel


def _params(module: torch.nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in {id(p): p for p in module.parameters()}.values())


def flop_counts(model: VisionLanguageModel) -> dict:
    """Static counts for :func:`training_flops`, taken before any sharding."""
    lm = model.llm.model
    cfg = lm.config
    emb = lm.get_input_embeddings().weight
    head = lm.get_output_embeddings()
    matmul = _params(lm) - emb.numel()
    if head is not None and head.weight.data_ptr() == emb.data_ptr():
        matmul += emb.numel()  # a tied head is a full matrix product all the same
    towers = {}
    if model.vision is not None:
        towers = {n: (_params(t), t.num_tokens) for n, t in model.vision.towers.items()}
    return {
        "llm_matmul_params": matmul,
        "llm_layers": getattr(cfg, "num_hidden_layers", 0),
        "llm_hidden": getattr(cfg, "hidden_size", 0),
        "llm_attention": hasattr(cfg, "num_attention_heads"),
        "projector_params": _params(model.projector),
        "image_tokens": model.num_image_tokens,
        "towers": towers,
    }


def training_flops(counts: dict, seq_lens: list[int], images: int, trainable: set[str]) -> float:
    """Model FLOPs of one forward + backward over sequences of ``seq_lens`` LLM tokens (image
    tokens included) holding ``images`` images, with the parts in ``trainable`` learning."""

    def passes(part: str, upstream_learns: bool) -> int:
        """Matrix-product passes: forward, input gradient if needed, weight gradient if learning."""
        return 1 + int(upstream_learns) + int(part in trainable)

    vision_learns = "vision" in trainable
    llm = 0.0
    for t in seq_lens:
        per_token = 2 * counts["llm_matmul_params"]
        if counts["llm_attention"]:
            per_token += 4 * counts["llm_layers"] * counts["llm_hidden"] * t
        llm += per_token * t
    flops = passes("llm", vision_learns or "projector" in trainable) * llm
    flops += (
        passes("projector", vision_learns) * 2 * counts["projector_params"] * counts["image_tokens"] * images
    )
    for params, tokens in counts["towers"].values():
        flops += passes("vision", False) * 2 * params * tokens * images
    return flops


class ThroughputMonitor(Callback):
    """Times training micro-batches after ``warmup_batches`` (CUDA-synchronised), logs
    ``perf/samples_per_s``, ``perf/tokens_per_s``, ``perf/mfu`` and writes a json on rank 0.

    Args:
        warmup_batches: micro-batches left out (compilation, allocator, autotuning).
        peak_tflops: dense bf16 peak of one device (H100/H200 SXM: 989).
        output: json path for the summary (None: log only).
    """

    def __init__(
        self, warmup_batches: int = 5, peak_tflops: float = 989.0, output: str | None = None
    ) -> None:
        self.warmup_batches = warmup_batches
        self.peak = peak_tflops * 1e12
        self.output = output
        self.times: list[float] = []
        self.samples: list[int] = []
        self.tokens: list[int] = []
        self.flops: list[float] = []
        self._t0 = 0.0
        self.counts: dict = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Lightning calls this before the strategy wraps (and shards) the model: full counts.
        self.counts = flop_counts(pl_module.model)

    def _sync(self, trainer: L.Trainer) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize(trainer.strategy.root_device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._sync(trainer)
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._sync(trainer)
        if batch_idx < self.warmup_batches:
            return
        has_image = (batch["input_ids"] == IMAGE_TOKEN_ID).any(1)
        seq_lens = (batch["attention_mask"].sum(1) + has_image * (self.counts["image_tokens"] - 1)).tolist()
        world = trainer.world_size  # every rank runs a batch of the same shape
        self.times.append(time.perf_counter() - self._t0)
        self.samples.append(len(seq_lens) * world)
        self.tokens.append(sum(seq_lens) * world)
        flops = training_flops(self.counts, seq_lens, int(has_image.sum()), set(pl_module.stage.trainable))
        self.flops.append(flops * world)
        dt = self.times[-1]
        pl_module.log_dict(
            {
                "perf/samples_per_s": self.samples[-1] / dt,
                "perf/tokens_per_s": self.tokens[-1] / dt,
                "perf/mfu": self.flops[-1] / dt / (world * self.peak),
            },
            rank_zero_only=True,
        )

    def summary(self, trainer: L.Trainer) -> dict:
        total = sum(self.times)
        world = trainer.world_size
        return {
            "command": " ".join(["mmssm-train", *sys.argv[1:]]),
            "versions": {
                m: getattr(__import__(m), "__version__", None) for m in ("torch", "lightning", "transformers")
            },
            "devices": world,
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
            "strategy": type(trainer.strategy).__name__,
            "precision": trainer.precision,
            "measured_micro_batches": len(self.times),
            "micro_batch_s": total / max(1, len(self.times)),
            "samples_per_s": sum(self.samples) / total if total else 0.0,
            "tokens_per_s": sum(self.tokens) / total if total else 0.0,
            "model_tflops_per_s_per_device": sum(self.flops) / total / world / 1e12 if total else 0.0,
            "mfu": sum(self.flops) / total / (world * self.peak) if total else 0.0,
            "peak_tflops_per_device": self.peak / 1e12,
            "max_memory_allocated_GiB": torch.cuda.max_memory_allocated() / 2**30
            if torch.cuda.is_available()
            else None,
            "flop_counts": {k: v for k, v in self.counts.items() if k != "towers"}
            | {"towers": dict(self.counts["towers"])},
        }

    def on_train_end(self, trainer, pl_module) -> None:
        self._write(self.summary(trainer))

    @rank_zero_only
    def _write(self, summary: dict) -> None:
        print(
            "throughput: " + json.dumps({k: v for k, v in summary.items() if k != "flop_counts"}), flush=True
        )
        if self.output:
            Path(self.output).parent.mkdir(parents=True, exist_ok=True)
            Path(self.output).write_text(json.dumps(summary, indent=2))


class ProfileWindow(Callback):
    """Profile training micro-batches ``start`` .. ``start + count - 1`` with ``torch.profiler`` and
    write the kernel table (sorted by device time) to ``output`` on rank 0: where a step's time goes.

    Args:
        start / count: which micro-batches. output: text file for the table. rows: table length.
    """

    def __init__(self, start: int = 5, count: int = 2, output: str = "profile.txt", rows: int = 40) -> None:
        self.start, self.count, self.output, self.rows = start, count, output, rows
        self.prof = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.start:
            from torch.profiler import ProfilerActivity, profile

            self.prof = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA])
            self.prof.__enter__()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.prof is not None and batch_idx == self.start + self.count - 1:
            torch.cuda.synchronize()
            self.prof.__exit__(None, None, None)
            if trainer.global_rank == 0:
                table = self.prof.key_averages().table(sort_by="self_device_time_total", row_limit=self.rows)
                Path(self.output).parent.mkdir(parents=True, exist_ok=True)
                Path(self.output).write_text(table)
            self.prof = None
