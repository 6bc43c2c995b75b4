"""``mmssm-bench``: time generation of every model in ``run`` and write one json (conf/bench.yaml)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

import mmssm_lightning  # noqa: F401  (torchvision compatibility shim before timm/transformers)
from mmssm_lightning.bench.generation import copy_bandwidth, describe, time_generation
from mmssm_lightning.bench.provenance import PACKAGES, package_version
from mmssm_lightning.build import build_model, random_weights
from mmssm_lightning.constants import CONF_DIR
from mmssm_lightning.models.ssm import kernels
from mmssm_lightning.models.vlm import VisionLanguageModel
from mmssm_lightning.utils import git_state


def build(node: DictConfig, device: torch.device, dtype: torch.dtype) -> VisionLanguageModel:
    """``build_model`` on ``node`` (encoder / projector / llm), parameters made on ``device``."""
    with torch.device(device):
        model = build_model(node)
    return model.to(dtype).eval()


def run_generation(cfg: DictConfig) -> dict:
    device = torch.device(cfg.device)
    dtype = getattr(torch, cfg.dtype)
    bandwidth = copy_bandwidth(device) if device.type == "cuda" else None
    report = {
        "benchmark": "generation",
        "protocol": f"1 image + 'Describe the image specifically.', exactly {cfg.new_tokens} new tokens "
        "(EOS ignored), "
        f"greedy; median of {cfg.repeats} runs after {cfg.warmup} warm-up; prefill = image encoding + prompt",
        "command": " ".join(["mmssm-bench", *sys.argv[1:]]),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "versions": {p: package_version(p) for p in PACKAGES},
        "git": git_state(),
        "ssm_kernels": kernels() is not None,
        "copy_bandwidth_GBps": bandwidth / 1e9 if bandwidth else None,
        "models": {},
    }
    for name in cfg.run:
        node = cfg.models[name]
        if cfg.random_weights:
            random_weights(node)
        node.llm.dtype = cfg.dtype
        entry: dict = {}
        try:
            torch.manual_seed(0)
            model = build(node, device, dtype)
            entry.update(describe(model))
            if bandwidth:
                entry["roofline_tokens_per_s_batch1"] = bandwidth / entry["llm_weight_bytes"]
            for b in cfg.batch_sizes:
                entry[f"batch_{b}"] = time_generation(
                    model, instantiate(cfg.prompt), b, cfg.new_tokens, cfg.repeats, cfg.warmup, cfg.cuda_graph
                )
            del model
        except Exception as e:  # one model's failure must not lose the others' numbers
            entry["error"] = f"{type(e).__name__}: {e}"
        if device.type == "cuda":
            torch.cuda.empty_cache()
        report["models"][name] = entry
        _print_row(name, entry, cfg.batch_sizes)
    out = Path(cfg.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"results: {out}")
    return report


def _print_row(name: str, entry: dict, batch_sizes) -> None:
    if "error" in entry:
        print(f"{name:10s} ERROR {entry['error']}", flush=True)
        return
    cols = [f"{name:10s} {entry['visual_tokens']:5d} tok"]
    for b in batch_sizes:
        r = entry[f"batch_{b}"]
        cols.append(
            f"b{b}: {r['tokens_per_s']:7.1f} tok/s (prefill {1e3 * r['prefill_s']:6.1f} ms, "
            f"decode {r['decode_tokens_per_s']:7.1f} tok/s)"
        )
    if "roofline_tokens_per_s_batch1" in entry:
        cols.append(f"roofline b1 {entry['roofline_tokens_per_s_batch1']:.0f}")
    print(" | ".join(cols), flush=True)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="bench")
def main(cfg: DictConfig) -> None:
    run_generation(cfg)


if __name__ == "__main__":
    main()
