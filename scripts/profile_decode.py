"""Where a Mamba-2.8B VLM's generation time goes, and the fused step's tile sweep (GPU).
usage: python3 scripts/profile_decode.py OUT_JSON [OUT_TXT]   (the Cobra-shaped model of conf/bench.yaml)

* ms per decode step, CUDA graph, op-by-op vs fused step at several tiles, x gemv, batch 1 and 8;
* the prefill split into image encoding + splice and the LLM's prompt pass, eager and graphed;
* kernel tables of both steps (10 un-graphed steps each) into OUT_TXT.
"""

import json
import statistics
import sys

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch.profiler import ProfilerActivity, profile

import mmssm_lightning  # noqa: F401
from mmssm_lightning.bench.cli import build
from mmssm_lightning.bench.generation import _timed, copy_bandwidth, llm_weight_bytes, prompt_inputs
from mmssm_lightning.build import random_weights
from mmssm_lightning.constants import CONF_DIR
from mmssm_lightning.inference.cuda_graph import CudaGraphed
from mmssm_lightning.inference.mamba_decode import MambaDecoder
from mmssm_lightning.inference.mamba_step_kernels import FusedMixerStep

with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
    cfg = compose("bench", overrides=["paths.root_dir=/tmp/mmssm", "paths.output_dir=/tmp"])
node = cfg.models.cobra
random_weights(node)
node.llm.dtype = "bfloat16"
dev = torch.device("cuda")
model = build(node, dev, torch.bfloat16)
lm = model.llm.model
embeds = torch.randn(1, 760, lm.config.hidden_size, device=dev, dtype=torch.bfloat16)
bw = copy_bandwidth(dev)
result = {
    "device": torch.cuda.get_device_name(),
    "copy_bandwidth_Bps": bw,
    "llm_weight_bytes": llm_weight_bytes(model),
    "roofline_ms_per_step": 1e3 * llm_weight_bytes(model) / bw,
    "steps": [],
}


def ms_per_step(dec: MambaDecoder, n: int = 200) -> float:
    dec.prefill(embeds)
    for _ in range(5):
        dec.step()
    times = [_timed(lambda: [dec.step() for _ in range(n)], dev) / n * 1e3 for _ in range(3)]
    return statistics.median(times)


variants = [("ops", "linear", None), ("ops", "mv", None)] + [
    ("fused", "linear", {"block_n": bn, "block_d": bd})
    for bn, bd in [(64, 32), (64, 64), (64, 16), (128, 32)]
]
for name, gemv, tiles in variants:
    dec = MambaDecoder(lm, 1, cuda_graph=True, fused_step=tiles is not None, gemv=gemv)
    if tiles is not None:
        dec.fused = FusedMixerStep(lm, 1, dec.conv_state, dec.ssm_state, linear=dec._linear, **tiles)
    try:
        ms = ms_per_step(dec)
    except Exception as e:  # a tile Triton cannot compile: recorded, not fatal
        ms = None
        tiles = {**(tiles or {}), "error": repr(e)[:300]}
    row = {
        "step": name,
        "gemv": gemv,
        "tiles": tiles,
        "ms_per_step": ms,
        "tokens_per_s": 1e3 / ms if ms else None,
    }
    result["steps"].append(row)
    print(json.dumps(row), flush=True)
    del dec
    torch.cuda.empty_cache()

# batched: the default fused step at batch 8 vs ops
for fused in (False, True):
    dec = MambaDecoder(lm, 8, cuda_graph=True, fused_step=fused)
    e8 = embeds.repeat(8, 1, 1)
    dec.prefill(e8)
    for _ in range(5):
        dec.step()
    ms = _timed(lambda dec=dec: [dec.step() for _ in range(100)], dev) / 100 * 1e3
    row = {"step": "fused" if dec.fused else "ops", "batch": 8, "ms_per_step": ms}
    result["steps"].append(row)
    print(json.dumps(row), flush=True)
    del dec

# prefill: vision + splice vs the LLM's pass over the prompt, eager and graphed
ids, mask, pixels = prompt_inputs(model, instantiate(cfg.prompt), 1, dev)
tables = []
with torch.no_grad():
    spliced = model.splice(ids, mask, model.encode_images(pixels), None, "left")[0]
    for graphed in (False, True):
        encode = CudaGraphed(model.encode_images) if graphed else model.encode_images
        dec = MambaDecoder(lm, 1, cuda_graph=True, graph_prefill=graphed)

        def enc(encode=encode):
            return model.splice(ids, mask, encode(pixels), None, "left")[0]

        for _ in range(2):
            enc(), dec.prefill(spliced)
        row = {
            "graphed": graphed,
            "prompt_tokens": spliced.shape[1],
            "encode_splice_ms": statistics.median(_timed(enc, dev) * 1e3 for _ in range(5)),
            "llm_prefill_ms": statistics.median(
                _timed(lambda dec=dec: dec.prefill(spliced), dev) * 1e3 for _ in range(5)
            ),
        }
        result.setdefault("prefill", []).append(row)
        print(json.dumps(row), flush=True)
    for fused in (False, True):
        dec = MambaDecoder(lm, 1, cuda_graph=False, fused_step=fused)
        dec.prefill(spliced)
        dec.step()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(10):
                dec.step()
            torch.cuda.synchronize()
        tables.append(
            f"10 un-graphed steps, fused_step={fused}\n"
            + prof.key_averages().table(sort_by="self_device_time_total", row_limit=16)
        )
table = "\n\n".join(tables)
json.dump(result, open(sys.argv[1], "w"), indent=2)
if len(sys.argv) > 2:
    open(sys.argv[2], "w").write(table)
print(table[:6000])
