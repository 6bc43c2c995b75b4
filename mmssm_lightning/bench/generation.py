"""Generation speed of VLMs, the protocol of Cobra §4.3 / Table 3 and MambaVLM §4.5 / Table 4:
one image and "Describe the image specifically", exactly 256 new tokens (EOS ignored), the clock
running from image encoding to the last token, ``tokens/s = 256 / total``.

Prefill (image encoding + splice + the prompt's forward, up to the first token) and decode (the
other 255 tokens) are timed apart with CUDA events after warm-up, median of ``repeats`` runs, at
batch 1 and batched (the same image and prompt in every row). Decoding takes the fastest path the
stack has: for Mamba a static-state step captured as one CUDA graph, its variant (op kernels or
the fused Triton step, cuBLAS or Triton GEMVs) autotuned on the GPU at hand
(:class:`~mmssm_lightning.inference.mamba_decode.MambaDecoder`); for Transformers Hugging Face
``generate`` with a static KV cache, which compiles the decode step. With ``cuda_graph`` the
image towers + projector, and the Mamba prompt pass, replay from CUDA graphs too (the protocol
repeats one shape; eager, they are bound by kernel launches); HF's own prefill stays eager.

The batch-1 ceiling is the weight-bandwidth roofline: every step reads every LLM weight once, so
tokens/s <= measured copy bandwidth / LLM weight bytes (input-embedding rows are gathered, not read
whole, and are left out; a KV cache adds reads on top).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from mmssm_lightning.data.prompting import PromptFormat, SequenceBuilder
from mmssm_lightning.inference.cuda_graph import CudaGraphed
from mmssm_lightning.inference.mamba_decode import MambaDecoder
from mmssm_lightning.models.vlm import VisionLanguageModel

PROMPT = "<image>\nDescribe the image specifically."


def copy_bandwidth(device: torch.device, gib: float = 4.0, repeats: int = 10) -> float:
    """Device-to-device copy bandwidth in bytes/s, counting bytes read plus bytes written."""
    n = int(gib * 2**30) // 2
    src = torch.empty(n, dtype=torch.bfloat16, device=device).normal_()
    dst = torch.empty_like(src)
    times = []
    for _ in range(repeats + 2):
        times.append(_timed(lambda: dst.copy_(src), device))
    return 2 * src.numel() * src.element_size() / statistics.median(times[2:])


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds of ``fn`` on ``device`` (CUDA events on a GPU)."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def llm_weight_bytes(model: VisionLanguageModel) -> int:
    """Bytes of LLM weights one decode step reads: all of them, less an untied input embedding."""
    lm = model.llm.model
    params = {id(p): p for p in lm.parameters()}
    emb, head = lm.get_input_embeddings().weight, lm.get_output_embeddings().weight
    if emb.data_ptr() != head.data_ptr():
        params.pop(id(emb), None)
    return sum(p.numel() * p.element_size() for p in params.values())


def prompt_inputs(model: VisionLanguageModel, prompt: PromptFormat, batch: int, device: torch.device):
    """Token ids (with the image marker), mask and one random image, repeated ``batch`` times."""
    ids = SequenceBuilder(model.tokenizer, prompt).encode_prompt(
        [{"from": "human", "value": PROMPT}], has_image=True
    )
    ids = ids[None].repeat(batch, 1).to(device)
    size = model.vision.image_size
    g = torch.Generator(device="cpu").manual_seed(0)
    pixels = torch.rand(1, 3, size, size, generator=g).repeat(batch, 1, 1, 1).to(device)
    return ids, torch.ones_like(ids), pixels


def _image_encoder(model: VisionLanguageModel, cuda_graph: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """Towers + projector, replayed from a CUDA graph when asked (on a GPU): eager, two ViTs at
    batch 1 are bound by kernel launches, not arithmetic."""
    if cuda_graph and next(model.parameters()).device.type == "cuda":
        return CudaGraphed(model.encode_images)
    return model.encode_images


class _MambaRun:
    """Prefill (graphed) + 255 graph-replayed steps through :class:`MambaDecoder`."""

    def __init__(self, model: VisionLanguageModel, batch: int, cuda_graph: bool) -> None:
        self.model = model
        self.encode = _image_encoder(model, cuda_graph)
        self.decoder = MambaDecoder(
            model.llm.model, batch, cuda_graph=cuda_graph, graph_prefill=cuda_graph, autotune=cuda_graph
        )

    @property
    def name(self) -> str:  # known once the first step has picked its variant
        d = self.decoder
        return (
            "mamba_static_state"
            + ("_cuda_graph" if d.use_graph else "")
            + ("_fused_step" if d.fused is not None else "_op_kernels")
            + f"_{d.gemv}"
        )

    def prefill(self, ids, mask, pixels) -> None:
        embeds, _, _ = self.model.splice(ids, mask, self.encode(pixels), None, "left")
        self.decoder.prefill(embeds)

    def decode(self, n: int) -> torch.Tensor:
        return self.decoder.decode(n)


class _HFRun:
    """Hugging Face ``generate`` with a static KV cache (compiled decode step on a GPU)."""

    name = "hf_generate_static_cache"

    def __init__(self, model: VisionLanguageModel, batch: int, cuda_graph: bool) -> None:
        self.model = model
        self.encode_images = _image_encoder(model, cuda_graph)
        self.embeds = self.mask = None

    def encode(self, ids, mask, pixels) -> None:
        self.embeds, self.mask, _ = self.model.splice(ids, mask, self.encode_images(pixels), None, "left")

    def llm_prefill(self) -> None:
        self.model.llm.model(
            inputs_embeds=self.embeds, attention_mask=self.mask, use_cache=False, logits_to_keep=1
        )

    def generate(self, n: int) -> torch.Tensor:
        tok = self.model.tokenizer
        return self.model.llm.model.generate(
            inputs_embeds=self.embeds,
            attention_mask=self.mask,
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            cache_implementation="static",
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )


def time_generation(
    model: VisionLanguageModel,
    prompt: PromptFormat,
    batch: int,
    new_tokens: int = 256,
    repeats: int = 3,
    warmup: int = 1,
    cuda_graph: bool = True,
) -> dict:
    """Median prefill / decode / total seconds of ``new_tokens`` greedy tokens at ``batch``."""
    device = next(model.parameters()).device
    ids, mask, pixels = prompt_inputs(model, prompt, batch, device)
    is_mamba = model.llm.model.config.model_type == "mamba"
    runner = (_MambaRun if is_mamba else _HFRun)(model, batch, cuda_graph)
    rows = []
    for i in range(warmup + repeats):
        if is_mamba:
            prefill_s = _timed(lambda: runner.prefill(ids, mask, pixels), device)
            decode_s = _timed(lambda: runner.decode(new_tokens - 1), device)
            total_s = prefill_s + decode_s
        else:
            # generate() runs the LLM prefill itself: time it alone too, and take the difference.
            encode_s = _timed(lambda: runner.encode(ids, mask, pixels), device)
            llm_prefill_s = _timed(runner.llm_prefill, device)
            generate_s = _timed(lambda: runner.generate(new_tokens), device)
            prefill_s, decode_s, total_s = (
                encode_s + llm_prefill_s,
                generate_s - llm_prefill_s,
                encode_s + generate_s,
            )
        if i >= warmup:
            rows.append((prefill_s, decode_s, total_s))
    prefill_s, decode_s, total_s = (statistics.median(col) for col in zip(*rows))
    return {
        "batch": batch,
        "prompt_tokens": int(ids.shape[1]) - 1 + model.num_image_tokens,
        "visual_tokens": model.num_image_tokens,
        "new_tokens": new_tokens,
        "decode_path": runner.name,
        "decode_variants_ms_per_step": getattr(getattr(runner, "decoder", None), "tuning", None),
        "prefill_s": prefill_s,
        "decode_s": decode_s,
        "total_s": total_s,
        "tokens_per_s": new_tokens / total_s,  # per sequence, the papers' number
        "decode_tokens_per_s": (new_tokens - 1) / decode_s,
        "aggregate_tokens_per_s": batch * new_tokens / total_s,
        "runs": [dict(zip(("prefill_s", "decode_s", "total_s"), r)) for r in rows],
    }


def describe(model: VisionLanguageModel) -> dict:
    llm = model.llm.model
    return {
        "llm": llm.config.model_type,
        "llm_params": sum(p.numel() for p in {id(p): p for p in llm.parameters()}.values()),
        "llm_weight_bytes": llm_weight_bytes(model),
        "vision_params": sum(p.numel() for p in model.vision.parameters()),
        "projector": type(model.projector).__name__,
        "projector_params": sum(p.numel() for p in model.projector.parameters()),
        "visual_tokens": model.num_image_tokens,
        "dtype": str(next(llm.parameters()).dtype),
    }
