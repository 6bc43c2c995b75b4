"""A real-shaped job (random weights) through train -> consolidated model.ckpt -> mmssm-eval, as JSON.
python scripts/summarize_real_job.py RUN_DIR EVAL_DIR OUT.json
"""

import json
import sys
from pathlib import Path

import mmssm_lightning  # noqa: F401
from mmssm_lightning.bench.provenance import provenance
from mmssm_lightning.checkpoints import read_checkpoint


def main(run: str, evaluation: str, out: str) -> None:
    run_dir, eval_dir = Path(run), Path(evaluation)
    status = json.loads((run_dir / "status.json").read_text()) if (run_dir / "status.json").is_file() else {}
    weights = run_dir / "checkpoints" / "model.ckpt"
    info = {}
    if weights.is_file():
        ckpt = read_checkpoint(weights, "model.ckpt")
        state = ckpt["state_dict"]
        info = {
            "model_ckpt_bytes": weights.stat().st_size,
            "tensors": len(state),
            "parameters": sum(v.numel() for v in state.values()),
            "global_step": ckpt.get("global_step"),
            "all_full_shape": all(v.ndim >= 1 for v in state.values()),
        }
    results = eval_dir / "results.json"
    result = {
        **provenance(
            "experiment=benchmarks/cobra_throughput trainer.devices=2 (FSDP) -> model.ckpt -> mmssm-eval"
        ),
        "train_status": status.get("state"),
        "train_error": status.get("error"),
        "weights": info,
        "throughput": json.loads((run_dir.parent / "rj_tp.json").read_text())
        if (run_dir.parent / "rj_tp.json").is_file()
        else None,
        "eval": json.loads(results.read_text()) if results.is_file() else None,
    }
    Path(out).write_text(json.dumps(result, indent=2, default=str))
    print(
        "train:",
        result["train_status"],
        "| eval benchmarks:",
        list((result["eval"] or {}).get("benchmarks", {})),
    )


if __name__ == "__main__":
    main(*sys.argv[1:4])
