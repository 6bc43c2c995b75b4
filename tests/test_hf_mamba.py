"""HF's MambaBlock with our mixer forward (llm.mixer: fused) against HF's own block: same parameters,
same values and gradients (HF's PyTorch path on CPU), padded batches included."""

import pytest
import torch
from transformers import MambaConfig, MambaModel

from mmssm_lightning.models.hf_mamba import FusedMambaMixer, use_fused_mixers
from tests.conftest import needs_triton


def _blocks(scan_backend: str):
    torch.manual_seed(0)
    cfg = MambaConfig(
        hidden_size=32,
        state_size=8,
        expand=2,
        conv_kernel=4,
        num_hidden_layers=1,
        vocab_size=16,
        use_mambapy=True,
    )
    hf = MambaModel(cfg).layers[0].train()  # a bare MambaBlock(cfg) leaves weights uninitialised (HF 5)
    ours = MambaModel(cfg).layers[0].train()
    ours.load_state_dict(hf.state_dict())
    assert use_fused_mixers(ours, scan_backend) == 1
    assert isinstance(ours.mixer, FusedMambaMixer) and set(ours.state_dict()) == set(hf.state_dict())
    return hf, ours


def _check(scan_backend: str, length: int, device: str = "cpu", tol: float = 1e-5):
    """HF's block is the oracle: its PyTorch path on CPU, mamba_inner_fn on a GPU with mamba_ssm."""
    hf, ours = (block.to(device) for block in _blocks(scan_backend))
    x = torch.randn(2, length, 32, device=device)
    mask = torch.ones(2, length, dtype=torch.long, device=device)
    mask[1, :3] = 0  # a left-padded row
    outs, grads = [], []
    for block in (hf, ours):
        xi = x.clone().requires_grad_()
        y = block(xi, attention_mask=mask)
        y = y[0] if isinstance(y, tuple) else y
        outs.append(y)
        grads.append(torch.autograd.grad(y.square().sum(), [xi, *block.parameters()]))
    assert (outs[1] - outs[0]).abs().max() < tol
    names = ["input"] + [n for n, _ in hf.named_parameters()]
    for name, a, b in zip(names, grads[1], grads[0]):
        assert (a - b).abs().max() < 10 * tol * max(1.0, b.abs().max().item()), name


def test_fused_block_matches_huggingface_block():
    # Where mamba_ssm / causal_conv1d import, HF's block runs their CUDA kernels whatever the
    # tensors' device: the comparison then belongs on the GPU (as in tests/test_ssm.py).
    from mmssm_lightning.models.ssm import kernels

    if kernels() is None:
        _check("torch", length=19)
    elif torch.cuda.is_available():
        _check("torch", length=19, device="cuda", tol=1e-4)
    else:
        pytest.skip("mamba_ssm is installed but there is no GPU for HF's kernel path")


@pytest.mark.slow
def test_fused_block_on_the_triton_scan_matches_huggingface_block():
    needs_triton()
    if torch.cuda.is_available():
        _check("triton", length=300, device="cuda", tol=1e-4)
    else:
        _check("triton", length=9)


def test_llm_mixer_switch(cfg_factory):
    """llm.mixer=fused turns every block's mixer into ours with the weights in place; a model without
    Mamba blocks is an error naming the key."""
    import hydra

    cfg = cfg_factory(["llm=tiny_mamba", "llm.mixer=fused", "llm.scan_backend=torch"])
    llm = hydra.utils.instantiate(cfg.llm)
    mixers = [layer.mixer for layer in llm.model.backbone.layers]
    assert mixers and all(type(m) is FusedMambaMixer and m.scan_backend == "torch" for m in mixers)
    cfg_hf = cfg_factory(["llm=tiny_mamba"])
    assert set(hydra.utils.instantiate(cfg_hf.llm).model.state_dict()) == set(llm.model.state_dict())
    with pytest.raises(Exception, match="llm.mixer: fused needs a Mamba model"):  # hydra wraps the ValueError
        hydra.utils.instantiate(cfg_factory(["llm=tiny_pythia", "+llm.mixer=fused"]).llm)
