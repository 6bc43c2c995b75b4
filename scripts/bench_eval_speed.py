"""Evaluation speed of a Cobra-shaped VLM on one GPU, our inference engine against the path before
it, and batch invariance at scale (mmssm_lightning/bench/eval_speed.py has the protocol).

    python scripts/bench_eval_speed.py            # GPU: experiments/benchmarks/results/eval_speed_h200.json
    python scripts/bench_eval_speed.py --tiny     # CPU dry run: logs/bench/eval_speed_tiny.json
"""

from mmssm_lightning.bench.eval_speed import main

if __name__ == "__main__":
    main()
