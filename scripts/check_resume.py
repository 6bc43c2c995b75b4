"""Check a 2-GPU FSDP sharded save + resume (scripts/device_bench.sh resume); accumulate a json.

  check_resume.py saved   CKPT_DIR OUT_JSON          after run a (2 steps, a sharded checkpoint at step 2)
  check_resume.py resumed CKPT_DIR OUT_JSON LOG_B    after run b (resumed from it, to step 4)
A sharded checkpoint is a folder: one .distcp shard per rank, .metadata, and Lightning's meta.pt.
"""

import json
import sys
from pathlib import Path

import torch

phase, ckpt_dir, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
result = json.loads(out.read_text()) if out.exists() else {}


def describe(path: Path) -> dict:
    m = torch.load(path / "meta.pt", map_location="cpu", weights_only=False)
    files = sorted(f.name for f in path.iterdir())
    return {
        "path": path.name,
        "files": files,
        "shards": sum(f.endswith(".distcp") for f in files),
        "global_step": m.get("global_step"),
        "stage": m.get("stage"),
        "has_run_config": "mmssm_config" in m,
        "GB": round(sum(f.stat().st_size for f in path.iterdir()) / 1e9, 2),
    }


ckpts = sorted(p for p in ckpt_dir.iterdir() if p.is_dir())
result[phase] = [describe(p) for p in ckpts]
if phase == "resumed":
    log = Path(sys.argv[4]).read_text()
    result["resumed_from_checkpoint"] = "Restored all states from the checkpoint" in log
    saved, resumed = result.get("saved", [{}])[0], result["resumed"][-1]
    result["ok"] = bool(
        result["resumed_from_checkpoint"]
        and saved.get("global_step") == 2
        and saved.get("shards") == 2
        and resumed["global_step"] == 4
        and resumed["shards"] == 2
    )
out.write_text(json.dumps(result, indent=2))
print(json.dumps(result)[:1500])
