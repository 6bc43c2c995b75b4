"""Benchmarks: generation speed (`mmssm-bench`) and training throughput (a Lightning callback)."""
