"""Inference: one engine (:class:`~mmssm_lightning.inference.engine.Engine`) for generation and
likelihood scoring, and the pieces under it: the static-state Mamba decoder, its Triton step
kernels, CUDA-graph replay and the Hugging Face path. Imports ``models`` and the floor only."""

from mmssm_lightning.inference.engine import Engine, Generation, Scores

__all__ = ["Engine", "Generation", "Scores"]
