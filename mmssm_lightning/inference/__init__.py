"""Inference: one engine (:class:`~mmssm_lightning.inference.engine.Engine`) for generation and
likelihood scoring, and the pieces under it: the static-state Mamba decoder, its Triton step
kernels, CUDA-graph replay and the Hugging Face path; ``speed`` turns batch timings into lmms-eval's
throughput numbers and suite estimates. Imports ``models`` and the floor only."""

from mmssm_lightning.inference.engine import Engine, Generation, Scores

__all__ = ["Engine", "Generation", "Scores"]
