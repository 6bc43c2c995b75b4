"""Where a Mamba decode step's time goes: kernel table of un-graphed steps, and graph vs no graph.
usage: python3 scripts/profile_decode.py OUT_TXT   (GPU; builds the Cobra-shaped model of conf/bench.yaml)"""

import sys

import mmssm_lightning  # noqa: F401
import torch
from hydra import compose, initialize_config_dir
from torch.profiler import ProfilerActivity, profile

from mmssm_lightning.bench.cli import build
from mmssm_lightning.build import random_weights
from mmssm_lightning.models.mamba_decode import MambaDecoder
from mmssm_lightning.train import CONF_DIR

with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
    cfg = compose("bench", overrides=["paths.root_dir=/tmp/mmssm", "paths.output_dir=/tmp"])
node = cfg.models.cobra
random_weights(node)
node.llm.dtype = "bfloat16"
model = build(node, torch.device("cuda"), torch.bfloat16)
lm = model.llm.model
embeds = torch.randn(1, 760, 2560, device="cuda", dtype=torch.bfloat16)
lines = []
for graph in (False, True):
    dec = MambaDecoder(lm, 1, cuda_graph=graph)
    dec.prefill(embeds)
    for _ in range(5):
        dec.step()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(100):
        dec.step()
    end.record()
    end.synchronize()
    lines.append(f"cuda_graph={graph}: {start.elapsed_time(end) / 100:.3f} ms per step")
    if not graph:
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(10):
                dec.step()
            torch.cuda.synchronize()
        lines.append(prof.key_averages().table(sort_by="self_device_time_total", row_limit=25))
text = "\n".join(lines)
open(sys.argv[1], "w").write(text)
print("\n".join(lines[:1] + lines[-1:]))
