"""Check a 2-GPU FSDP sharded save + resume (scripts/device_bench.sh resume) and write a json.

Run a trains 2 steps and saves sharded checkpoints (a folder per checkpoint: one shard per rank +
Lightning's meta.pt); run b resumes from a's last.ckpt and trains to step 4.
usage: check_resume.py CKPT_DIR RUN_B_LOG OUT_JSON
"""

import json
import sys
from pathlib import Path

import torch

ckpt_dir, log, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])


def meta(path: Path) -> dict:
    m = torch.load(path / "meta.pt", map_location="cpu", weights_only=False)
    return {"global_step": m.get("global_step"), "epoch": m.get("epoch"), "stage": m.get("stage"),
            "has_run_config": "mmssm_config" in m}


found = {p.name: sorted(f.name for f in p.iterdir()) for p in sorted(ckpt_dir.iterdir()) if p.is_dir()}
step2 = next(p for p in ckpt_dir.iterdir() if p.name.endswith("step=2.ckpt"))
result = {
    "checkpoints": found,
    "sharded": all(any(f.endswith(".distcp") for f in files) for files in found.values()),
    "step2": meta(step2),
    "last_after_resume": meta(ckpt_dir / "last.ckpt"),
    "resumed_from_checkpoint": "Restored all states from the checkpoint" in log.read_text(),
}
result["ok"] = (result["sharded"] and result["resumed_from_checkpoint"] and result["step2"]["global_step"] == 2
                and result["last_after_resume"]["global_step"] == 4)
out.write_text(json.dumps(result, indent=2))
print(json.dumps(result, indent=2))
