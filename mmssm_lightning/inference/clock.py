"""Marks on the device's timeline: CUDA events on a GPU (read after the work they bracket has run,
without a synchronisation of their own), ``time.perf_counter`` on CPU."""

from __future__ import annotations

import time

import torch


class Clock:
    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def mark(self) -> torch.cuda.Event | float:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def seconds(self, start: torch.cuda.Event | float, end: torch.cuda.Event | float) -> float:
        """Seconds from ``start`` to ``end`` (waits for ``end`` on a GPU)."""
        if self.cuda:
            end.synchronize()
            return start.elapsed_time(end) / 1e3
        return end - start
