"""mmssm-eval on one process vs under torchrun: the same metrics, number for number.
python scripts/compare_eval_results.py ONE/results.json MANY/results.json OUT.json
"""

import json
import sys
from pathlib import Path

import mmssm_lightning  # noqa: F401
from mmssm_lightning.bench.provenance import provenance


def main(one: str, many: str, out: str) -> None:
    a, b = (json.loads(Path(p).read_text()) for p in (one, many))
    metrics = {
        name: {"one_process": a["benchmarks"][name]["metrics"], "torchrun": b["benchmarks"][name]["metrics"]}
        for name in a["benchmarks"]
    }
    equal = all(m["one_process"] == m["torchrun"] for m in metrics.values())
    speed = {
        name: {"one": a["benchmarks"][name].get("speed"), "torchrun": b["benchmarks"][name].get("speed")}
        for name in a["benchmarks"]
    }
    result = {
        **provenance("mmssm-eval vs torchrun --nproc-per-node 2 -m mmssm_lightning.eval.evaluate"),
        "identical_metrics": equal,
        "metrics": metrics,
        "speed": speed,
    }
    Path(out).write_text(json.dumps(result, indent=2))
    print("identical metrics:", equal)


if __name__ == "__main__":
    main(*sys.argv[1:4])
