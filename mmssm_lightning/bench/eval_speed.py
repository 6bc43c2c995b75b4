"""Evaluation speed, ours against the path before the inference engine, on one GPU:
``python scripts/bench_eval_speed.py`` (``--tiny``: a CPU dry run with tiny towers and LLM).

The model is Cobra-shaped (conf/bench.yaml's ``cobra``: DINOv2 + SigLIP channel fusion, 729 visual
tokens, the fused MLP projector, Mamba-2.8B), random weights of the real shapes, bf16. Prompts are
short VQA questions of mixed lengths in Cobra's template ("<question>\\nAnswer the question using a
single word or phrase."), one random image each, already on the device (the model's time, not the
input pipeline's). Measured, each as samples/s over ``batches`` timed batches after warm-up:

* ``likelihood_b16``: next-token log-probabilities at batch 16 (POPE / VSR scoring: one prefill);
* ``generate16_b16`` / ``generate16_b1``: 16 new tokens, EOS ignored, at batch 16 and 1;

for ``ours`` (:class:`~mmssm_lightning.inference.engine.Engine`, ``backend=auto``: graphed towers,
static-state Mamba prefill + CUDA-graph decode) and ``baseline`` (``backend=hf``: eager towers, HF
``generate`` / a plain forward, what ``Evaluator`` ran before). Plus where ours spends a batch of 16
(towers, splice, LLM prefill, one decode step) and lmms-eval's TTFT / TPOT of each mode.

Batch invariance at scale: the LLM is re-initialised as ``mamba_ssm`` initialises it (HF's random
init is chaotic at 64 layers: :mod:`~mmssm_lightning.bench.init`, whose ``perturbation_gain`` is
reported for both inits), then each of ``invariance_prompts`` mixed-length prompts is answered alone
and inside one batch: max |delta log-probability| of the next token (all of the vocabulary, and the
batch-1 top 10) and agreement of the 16 greedy tokens, for both paths.

Finally each paper protocol's whole suite is estimated (conf/split_sizes x per-sample seconds
modelled from the measured TTFT / TPOT at batch 16, generated answers counted at the protocol's
``max_new_tokens``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

import mmssm_lightning  # noqa: F401  (torchvision compatibility shim before timm/transformers)
from mmssm_lightning.bench.cli import build
from mmssm_lightning.bench.generation import describe
from mmssm_lightning.bench.init import mamba_ssm_init, perturbation_gain
from mmssm_lightning.bench.provenance import PACKAGES, package_version
from mmssm_lightning.build import random_weights
from mmssm_lightning.constants import CONF_DIR
from mmssm_lightning.data.collate import pad_sequences
from mmssm_lightning.data.prompting import SequenceBuilder
from mmssm_lightning.inference import Engine
from mmssm_lightning.inference.speed import modelled_seconds, suite_estimate
from mmssm_lightning.models.ssm import kernels
from mmssm_lightning.utils import git_state

QUESTIONS = (
    "What color is the bus?",
    "How many people are in the picture?",
    "Is there a dog?",
    "What is the man on the left holding in his right hand?",
    "Which room of the house is shown in this photograph?",
    "What sport is being played?",
    "Are the lights on in the building across the street from the parking lot?",
    "What is written on the sign?",
    "Why is the woman wearing a helmet while riding through the park on a sunny afternoon?",
    "Is it raining?",
    "What kind of animal is lying on the couch next to the window?",
    "How many windows does the red house have?",
    "What time of day is it?",
    "Is the plate on the table empty or does it still hold some food?",
    "Where is the cat?",
    "What brand is the laptop on the desk?",
)
SUFFIX = "\nAnswer the question using a single word or phrase."
TARGETS = {
    "likelihood_b16_samples_per_s": 80.0,
    "generate16_b16_samples_per_s": 60.0,
    "generate16_b1_samples_per_s": 20.0,
}
PROTOCOLS = ("cobra", "llava", "q_mamba", "pythia_vl")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_cobra(tiny: bool, device: torch.device, dtype: torch.dtype):
    """The Cobra-shaped VLM of conf/bench.yaml at random (tiny: tiny towers and Mamba) and its prompt."""
    overrides = ["paths.root_dir=/tmp/mmssm-bench", "paths.output_dir=/tmp/mmssm-bench"]
    if tiny:
        overrides += ["encoder@models.cobra.encoder=tiny_dual_channel", "llm@models.cobra.llm=tiny_mamba"]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("bench", overrides=overrides)
    node = cfg.models.cobra
    random_weights(node)
    node.llm.dtype = str(dtype).removeprefix("torch.")
    torch.manual_seed(0)
    return build(node, device, dtype), instantiate(cfg.prompt)


def vqa_prompts(model, prompt, device: torch.device, seed: int = 0):
    """Token ids of the 16 questions in the chat template (image first) and one random image each."""
    builder = SequenceBuilder(model.tokenizer, prompt)
    rows = [
        builder.encode_prompt([{"from": "human", "value": f"<image>\n{q}{SUFFIX}"}], has_image=True)
        for q in QUESTIONS
    ]
    size = model.vision.image_size
    g = torch.Generator().manual_seed(seed)
    pixels = torch.rand(len(rows), 3, size, size, generator=g).to(device, next(model.parameters()).dtype)
    return rows, pixels


def _batch(rows, pixels, idx, pad_id, device):
    ids, mask = pad_sequences([rows[i] for i in idx], pad_id, "left")
    return ids.to(device), mask.to(device), pixels[list(idx)]


def _mode(engine: Engine, mode: str, ids, mask, pixels):
    if mode == "likelihood":
        s = engine.score(ids, mask, pixels)
        return s.e2e_s, s.e2e_s, 0
    g = engine.generate_tokens(ids, mask, pixels, 16, stop_at_eos=False)
    return g.ttft_s, g.e2e_s, g.tokens.shape[1]


def time_mode(engine, mode, rows, pixels, batch, batches, warmup, pad_id, device) -> dict:
    """Samples/s of ``mode`` at ``batch`` over ``batches`` batches (prompts taken in turn) after
    ``warmup``; wall-clock per batch (host work included), and the engine's own TTFT / E2E."""
    walls, ttfts, e2es = [], [], []
    for k in range(warmup + batches):
        idx = [(k * batch + j) % len(rows) for j in range(batch)]
        inputs = _batch(rows, pixels, idx, pad_id, device)
        _sync(device)
        start = time.perf_counter()
        ttft, e2e, tokens = _mode(engine, mode, *inputs)
        _sync(device)
        if k >= warmup:
            walls.append(time.perf_counter() - start)
            ttfts.append(ttft)
            e2es.append(e2e)
    out = {
        "batch": batch,
        "batches": batches,
        "samples_per_s": batch * batches / sum(walls),
        "s_per_batch_median": statistics.median(walls),
        "ttft_s": statistics.fmean(ttfts),
        "e2e_s": statistics.fmean(e2es),
    }
    if tokens > 1:
        out["tpot_s"] = statistics.fmean((e - t) / (tokens - 1) for t, e in zip(ttfts, e2es))
    return out


def breakdown(engine: Engine, rows, pixels, batch, pad_id, device, repeats: int = 3) -> dict:
    """Milliseconds of one batch's parts on our path: towers + projector, splice, LLM prefill, one
    decode step (medians; CUDA-synchronised wall clock)."""

    def ms(fn) -> float:
        times = []
        for _ in range(repeats + 1):
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times.append(1e3 * (time.perf_counter() - start))
        return statistics.median(times[1:])

    ids, mask, px = _batch(rows, pixels, list(range(batch)), pad_id, device)
    out = {"towers": ms(lambda: engine.encode_images(px))}
    out["splice"] = ms(lambda: engine.prompt_embeds(ids, mask, px)) - out["towers"]
    if engine.backend == "mamba":
        embeds, emask = engine.prompt_embeds(ids, mask, px)
        dec = engine.decoder(batch)
        out["llm_prefill"] = ms(lambda: dec.prefill(embeds, emask))
        out["decode_step"] = ms(lambda: [dec.step() for _ in range(10)]) / 10
        out["prompt_tokens"] = int(embeds.shape[1])
    return out


def invariance(engine_one: Engine, engine_many: Engine, rows, pixels, pad_id, device) -> dict:
    """Each prompt alone vs all of them in one left-padded batch."""
    idx = list(range(len(rows)))
    many = _batch(rows, pixels, idx, pad_id, device)
    logp_many = engine_many.next_token_logprobs(*many).float().cpu()
    gen_many = engine_many.generate_tokens(*many, 16, stop_at_eos=False).tokens
    d_all, d_top, same_seq, same_tok, same_first = [], [], 0, 0, 0
    for i in idx:
        one = _batch(rows, pixels, [i], pad_id, device)
        logp = engine_one.next_token_logprobs(*one).float().cpu()[0]
        gen = engine_one.generate_tokens(*one, 16, stop_at_eos=False).tokens[0]
        d = (logp - logp_many[i]).abs()
        d_all.append(float(d.max()))
        d_top.append(float(d[logp.topk(10).indices].max()))
        same_seq += int(torch.equal(gen, gen_many[i]))
        same_tok += int((gen == gen_many[i]).sum())
        same_first += int(gen[0] == gen_many[i, 0])
    return {
        "prompts": len(idx),
        "batch": len(idx),
        "max_abs_dlogprob": max(d_all),
        "max_abs_dlogprob_top10": max(d_top),
        "greedy_sequences_equal": same_seq / len(idx),
        "greedy_tokens_equal": same_tok / (16 * len(idx)),
        "first_token_equal": same_first / len(idx),
    }


def _guarded(fn, *args):
    """One measurement's failure is recorded, not fatal: the others' numbers still get written."""
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001
        return {"error": f"{type(e).__name__}: {e}"}


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device or ("cpu" if args.tiny else "cuda"))
    dtype = torch.float32 if args.tiny else torch.bfloat16
    model, prompt = build_cobra(args.tiny, device, dtype)
    pad_id = model.tokenizer.pad_token_id
    rows, pixels = vqa_prompts(model, prompt, device)
    report: dict = {
        "benchmark": "eval_speed",
        "model": {"shape": "cobra" + ("_tiny" if args.tiny else ""), **describe(model)},
        "protocol": "16 VQA questions of mixed lengths, Cobra's template, one random image each (on the "
        f"device); samples/s over {args.batches} batches of 16 after {args.warmup} warm-up, batch 1 over "
        f"{args.b1_batches} prompts after one pass of warm-up; generate16 = 16 new tokens, EOS ignored; "
        "likelihood = next-token log-probabilities",
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": str(dtype),
        "versions": {p: package_version(p) for p in PACKAGES},
        "git": git_state(),
        "ssm_kernels": kernels() is not None,
        "targets": TARGETS,
    }
    paths = {"ours": {"auto": Engine(model, batch_size=16), "one": Engine(model)}}
    if not args.skip_baseline:
        paths["baseline"] = {"auto": Engine(model, backend="hf"), "one": Engine(model, backend="hf")}
    measured = {}
    for name, engines in paths.items():
        entry = {"engine": engines["auto"].name}
        for key, mode, batch, engine in (
            ("likelihood_b16", "likelihood", 16, engines["auto"]),
            ("generate16_b16", "generate", 16, engines["auto"]),
            ("generate16_b1", "generate", 1, engines["one"]),
        ):
            # batch 16 repeats one batch of all prompts; batch 1 takes the prompts in turn, warming up
            # on one pass of them (its step autotunes, each prompt-length bucket captures a prefill graph)
            n, warmup = (args.batches, args.warmup) if batch > 1 else (args.b1_batches, args.b1_batches)
            if not args.warmup:
                warmup = 0
            r = _guarded(time_mode, engine, mode, rows, pixels, batch, n, warmup, pad_id, device)
            entry[key] = r
            entry[f"{key}_samples_per_s"] = r.get("samples_per_s")
            print(f"{name:8s} {key:15s} {r.get('samples_per_s') or r.get('error')}", flush=True)
        entry["breakdown_b16_ms"] = _guarded(breakdown, engines["auto"], rows, pixels, 16, pad_id, device)
        measured[name] = entry
    ours = measured["ours"]
    report.update({k: ours[f"{k}"] for k in TARGETS})
    report["ours"] = ours
    report["targets_met"] = {k: (ours[k] or 0) >= t for k, t in TARGETS.items()}
    if "baseline" in measured:
        report["baseline"] = measured["baseline"]
        report["speedup"] = {
            k: ours[k] / measured["baseline"][k] if ours[k] and measured["baseline"][k] else None
            for k in TARGETS
        }
    report["suite_estimates"] = _suites(measured)
    report["batch_invariance"] = _guarded(
        _invariance_at_scale, model, paths, rows, pixels, pad_id, device, args
    )
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"results: {out}")
    return report


def _suites(measured: dict) -> dict:
    sizes = OmegaConf.to_container(OmegaConf.load(Path(CONF_DIR) / "split_sizes" / "default.yaml"))
    out = {}
    for proto in PROTOCOLS:
        benchmarks = OmegaConf.to_container(OmegaConf.load(Path(CONF_DIR) / "protocol" / f"{proto}.yaml"))[
            "benchmarks"
        ]
        out[proto] = {}
        for name, entry in measured.items():
            lik, gen = entry.get("likelihood_b16", {}), entry.get("generate16_b16", {})
            rates = {}
            if "e2e_s" in lik:
                rates["likelihood"] = {"e2e_s": lik["s_per_batch_median"], "batch": lik["batch"]}
            if "tpot_s" in gen:
                # wall-clock per batch = the engine's ttft + steps x tpot + host work: the host share
                # goes with the prompt (ttft)
                host = gen["s_per_batch_median"] - gen["e2e_s"]
                rates["generate"] = {
                    "ttft_s": gen["ttft_s"] + host,
                    "tpot_s": gen["tpot_s"],
                    "batch": gen["batch"],
                }
            out[proto][name] = suite_estimate(benchmarks, sizes, modelled_seconds(benchmarks, rates))
    return out


def _invariance_at_scale(model, paths, rows, pixels, pad_id, device, args) -> dict:
    n = args.invariance_prompts
    rows, pixels = rows[:n], pixels[:n]
    lm = model.llm.model
    gain_hf = perturbation_gain(lm)
    mamba_ssm_init(lm, seed=0)
    out = {
        "init": "mamba_ssm (bench/init.py): PyTorch-default Linear init, out_proj / sqrt(n_layer)",
        "perturbation_gain": {"hf_init": gain_hf, "mamba_ssm_init": perturbation_gain(lm), "input_rel": 1e-3},
        "prompt_tokens": [len(r) - 1 + model.num_image_tokens for r in rows],
    }
    for name, engines in paths.items():
        many = Engine(model, backend=engines["auto"].backend, batch_size=len(rows))
        out[name] = _guarded(invariance, engines["one"], many, rows, pixels, pad_id, device)
        print(f"{name:8s} invariance {out[name]}", flush=True)
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="CPU dry run: tiny towers and Mamba, float32")
    parser.add_argument("--output", default=None, help="json to write")
    parser.add_argument("--device", default=None, help="default: cuda (cpu with --tiny)")
    parser.add_argument("--batches", type=int, default=None, help="timed batches per mode (5; 2 with --tiny)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed batches first (2; 1 with --tiny)")
    parser.add_argument(
        "--b1-batches", type=int, default=16, help="timed batch-1 generations (16: each prompt)"
    )
    parser.add_argument("--invariance-prompts", type=int, default=16, help="prompts of the invariance check")
    parser.add_argument("--skip-baseline", action="store_true", help="time our path only")
    args = parser.parse_args(argv)
    if args.output is None:
        args.output = (
            "logs/bench/eval_speed_tiny.json"
            if args.tiny
            else "experiments/benchmarks/results/eval_speed_h200.json"
        )
    args.batches = args.batches or (2 if args.tiny else 5)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.tiny else 2)
    return run(args)
