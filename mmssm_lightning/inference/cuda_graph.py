"""Replay a fixed-shape inference function from CUDA graphs, one per input shape.

A batch-1 VLM prefill (two ViT towers + a 64-layer Mamba over ~740 tokens) launches a few thousand
small kernels: eager, it is bound by the host's launch rate (tens of ms on an H200, varying with the
CPU), while its arithmetic takes a few ms. A graph replays all of them with one launch. Only for
repeated shapes (a benchmark, a fixed prompt template): each new shape captures a new graph and
keeps its memory pool.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")


class CudaGraphed:
    """``fn(*tensors) -> tensor or tuple of tensors``, captured on the first call of each input shape.

    The returned tensors are the graph's static outputs: read or copy them before the next call.
    Args:
        fn: the function; it must not synchronise with the host (no ``.item()``, no data-dependent shapes).
        max_graphs: graphs kept (least recently used dropped first).
    """

    def __init__(
        self, fn: Callable[..., torch.Tensor | tuple[torch.Tensor, ...]], max_graphs: int = 4
    ) -> None:
        self.fn = fn
        self.max_graphs = max_graphs
        self.graphs: OrderedDict[tuple, tuple[torch.cuda.CUDAGraph, tuple[torch.Tensor, ...], object]] = (
            OrderedDict()
        )

    @torch.no_grad()
    def __call__(self, *args: torch.Tensor):
        key = tuple((a.shape, a.dtype, a.device) for a in args)
        if key not in self.graphs:
            self.graphs[key] = self._capture(args)
            while len(self.graphs) > self.max_graphs:
                self.graphs.popitem(last=False)
        self.graphs.move_to_end(key)
        graph, inputs, out = self.graphs[key]
        for dst, src in zip(inputs, args):
            dst.copy_(src)
        graph.replay()
        return out

    def _capture(self, args: tuple[torch.Tensor, ...]):
        inputs = tuple(a.clone() for a in args)
        graph, out = capture(lambda: self.fn(*inputs))
        return graph, inputs, out


def capture(fn: Callable[[], T], warmup: int = 2) -> tuple[torch.cuda.CUDAGraph, T]:
    """Run ``fn`` ``warmup`` times on a side stream (allocator, cuBLAS handles, Triton compilation
    stay out of the graph), then capture one call; returns the graph and that call's output.
    The warm-up runs for real: a caller whose ``fn`` updates state restores it after."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return graph, out
