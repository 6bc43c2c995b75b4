"""Released checkpoints -> checkpoints of ours that ``mmssm-eval`` and ``init_from`` load."""
