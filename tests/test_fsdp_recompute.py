"""Memory-aware recomputation (trainer.strategy.recompute: auto): the decision from given numbers,
the per-micro-batch plan, and blocks that recompute giving the same gradients."""

import pytest
import torch
from torch import nn

from mmssm_lightning.fsdp import RecomputeBudget, blocks_to_recompute, budget_recompute

GIB = 2**30


def test_blocks_to_recompute():
    # the Cobra recipe (Mamba-2.8B, 64 blocks, 16 x 985 tokens): 0.77 GiB of activations per block,
    # 0.15 GiB kept per recomputed block; 46 GiB of weights, grads, Adam and towers already allocated
    block, kept = 0.77 * GIB, 0.15 * GIB
    assert blocks_to_recompute(64, block, kept, 0.92 * 141e9 - 46 * GIB - 3 * block) == 0  # H200: none
    k = blocks_to_recompute(64, block, kept, 0.92 * 80e9 - 46 * GIB - 3 * block)  # 80 GB: some
    assert k == 47  # ceil((64 x 0.77 GiB - 20.2 GiB free) / 0.62 GiB saved per recomputed block)
    assert blocks_to_recompute(64, block, kept, 0.0) == 64
    assert blocks_to_recompute(4, 10.0, 2.0, 40.0) == 0 and blocks_to_recompute(4, 10.0, 2.0, 39.0) == 1


def test_budget_plans_each_micro_batch_from_measured_memory():
    allocated = [500]
    budget = RecomputeBudget(
        4, memory_fraction=1.0, reserve_blocks=0.0, total_bytes=1000, allocated=lambda: allocated[0]
    )
    x = torch.zeros(1, 10, 2)  # 10 tokens, 80 bytes of input
    budget.begin(x)
    assert budget.recompute == 3  # nothing measured yet: all but the last block recompute
    budget.measure(x, 1000)  # 100 bytes per token -> 1000 per block
    budget.begin(x)  # 500 free: 4 x 1000 need (4000 - 500) / (1000 - 80) -> 4
    assert budget.recompute == 4
    allocated[0] = -3000  # (more free memory than the device has: a test number)
    budget.begin(x)  # 4000 free: all fit
    assert budget.recompute == 0 and budget.history == [3, 4, 0]
    with pytest.raises(ValueError, match="recompute_memory_fraction"):
        RecomputeBudget(4, memory_fraction=1.5)


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 8)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x + torch.tanh(self.lin(x))


def test_recomputed_blocks_give_the_same_gradients():
    torch.manual_seed(0)
    model = nn.Sequential(*[_Block() for _ in range(5)]).train()
    x = torch.randn(2, 3, 8)
    plain = torch.autograd.grad(model(x).square().sum(), list(model.parameters()))
    budget = budget_recompute(model, {_Block}, total_bytes=10_000, allocated=lambda: 0, reserve_blocks=0.0)
    assert budget is not None and set(dict(model.named_parameters())) == {
        f"{i}.lin.{p}" for i in range(5) for p in ("weight", "bias")
    }
    budget.bytes_per_token = 10_000 / 6 / 3.5  # each block holds 1/3.5 of the memory: 2 must recompute
    for block in model:
        block.calls = 0
    grads = torch.autograd.grad(model(x).square().sum(), list(model.parameters()))
    assert budget.recompute == 2
    assert [block.calls for block in model] == [2, 2, 1, 1, 1]  # recomputed in backward
    for a, b in zip(grads, plain):
        assert torch.allclose(a, b)
    with torch.no_grad():
        model(x)  # evaluation does not plan
    assert len(budget.history) == 1
    assert budget_recompute(model, {_Block}) is budget  # a second setup keeps the blocks as they are
