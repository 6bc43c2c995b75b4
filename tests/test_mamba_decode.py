"""The static-state Mamba decoder computes what the Hugging Face model computes."""

import pytest
import torch
from transformers import MambaConfig, MambaForCausalLM

from mmssm_lightning.models.mamba_decode import MambaDecoder
from mmssm_lightning.models.ssm import kernels

# Where mamba_ssm is installed, HF's Mamba runs its kernels, which need the GPU.
DEVICE = "cuda" if kernels() is not None and torch.cuda.is_available() else "cpu"


def _greedy_by_full_recompute(model, embeds, n):
    """The obvious greedy loop: re-run the whole sequence for every token (no cache)."""
    tokens = []
    for _ in range(n):
        seq = embeds if not tokens else torch.cat([embeds, model.get_input_embeddings()(torch.stack(tokens, 1))], 1)
        tokens.append(model(inputs_embeds=seq, use_cache=False).logits[:, -1].argmax(-1))
    return torch.stack(tokens, 1)


@pytest.mark.parametrize("residual_in_fp32", [True, False])
def test_decoder_matches_full_recompute_greedy(residual_in_fp32):
    torch.manual_seed(0)
    cfg = MambaConfig(hidden_size=32, num_hidden_layers=3, state_size=8, expand=2, conv_kernel=4, vocab_size=97,
                      residual_in_fp32=residual_in_fp32, use_mambapy=False)
    model = MambaForCausalLM(cfg).eval().to(DEVICE)
    embeds = torch.randn(3, 11, 32, device=DEVICE)  # e.g. image tokens + prompt, as a VLM hands them over
    with torch.no_grad():
        want = _greedy_by_full_recompute(model, embeds, 9)
        dec = MambaDecoder(model, batch_size=3, cuda_graph=False, backend="torch")
        got = dec.generate(embeds, 9)
        assert torch.equal(got, want)
        # the state is reset by every prefill: a second generation gives the same tokens
        assert torch.equal(dec.generate(embeds, 9), want)
    with pytest.raises(ValueError, match="batch 3"):
        dec.prefill(embeds[:2])


def test_decoder_prefill_state_equals_stepping_the_prompt():
    """Prefill's conv window and SSM state equal those reached by feeding the prompt step by step."""
    torch.manual_seed(1)
    model = MambaForCausalLM(MambaConfig(hidden_size=16, num_hidden_layers=2, state_size=4, vocab_size=50)).eval()
    ids = torch.randint(0, 50, (2, 7))  # the decoder's own paths only: no HF forward, CPU everywhere
    a = MambaDecoder(model, 2, backend="torch")
    a.prefill(model.get_input_embeddings()(ids))
    b = MambaDecoder(model, 2, backend="torch")
    b.prefill(model.get_input_embeddings()(ids[:, :1]))
    for t in range(1, 7):
        b.tokens.copy_(ids[:, t])
        b.step()
    assert torch.allclose(a.conv_state, b.conv_state, atol=1e-5)
    assert torch.allclose(a.ssm_state, b.ssm_state, atol=1e-5)
    assert torch.equal(a.tokens, b.tokens)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_decoder_on_gpu_kernels_and_cuda_graph_match_full_recompute():
    from mmssm_lightning.models.mamba_decode import _step_kernels

    torch.manual_seed(0)
    cfg = MambaConfig(hidden_size=256, num_hidden_layers=4, state_size=16, expand=2, conv_kernel=4, vocab_size=512)
    model = MambaForCausalLM(cfg).cuda().eval()
    embeds = torch.randn(2, 40, 256, device="cuda")
    with torch.no_grad():
        want = _greedy_by_full_recompute(model, embeds, 12)
        dec = MambaDecoder(model, batch_size=2, cuda_graph=True)
        assert dec.use_graph and (dec.kernels is not None) == (_step_kernels() is not None)
        got = dec.generate(embeds, 12)
        assert dec.graph is not None
        assert (got == want).float().mean() == 1.0
