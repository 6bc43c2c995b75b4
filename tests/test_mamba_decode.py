"""The static-state Mamba decoder computes what the Hugging Face model computes."""

import pytest
import torch
from transformers import MambaConfig, MambaForCausalLM

from mmssm_lightning.inference.mamba_decode import MambaDecoder
from mmssm_lightning.models.ssm import kernels
from tests.conftest import needs_triton

# Where mamba_ssm is installed, HF's Mamba runs its kernels, which need the GPU.
DEVICE = "cuda" if kernels() is not None and torch.cuda.is_available() else "cpu"


def _greedy_by_full_recompute(model, embeds, n):
    """The obvious greedy loop: re-run the whole sequence for every token (no cache)."""
    tokens = []
    for _ in range(n):
        seq = (
            embeds
            if not tokens
            else torch.cat([embeds, model.get_input_embeddings()(torch.stack(tokens, 1))], 1)
        )
        tokens.append(model(inputs_embeds=seq, use_cache=False).logits[:, -1].argmax(-1))
    return torch.stack(tokens, 1)


@pytest.mark.parametrize("residual_in_fp32", [True, False])
def test_decoder_matches_full_recompute_greedy(residual_in_fp32):
    torch.manual_seed(0)
    cfg = MambaConfig(
        hidden_size=32,
        num_hidden_layers=3,
        state_size=8,
        expand=2,
        conv_kernel=4,
        vocab_size=97,
        residual_in_fp32=residual_in_fp32,
        use_mambapy=False,
    )
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


@pytest.mark.parametrize("gemv", ["mv", "triton"])
def test_decoder_gemvs_at_batch_1(gemv):
    if gemv == "triton":
        needs_triton()
    torch.manual_seed(4)
    model = _tiny_mamba().to(DEVICE)
    embeds = torch.randn(1, 6, 32, device=DEVICE)
    with torch.no_grad():
        want = _greedy_by_full_recompute(model, embeds, 6)
        dec = MambaDecoder(model, 1, cuda_graph=False, backend="torch", fused_step=False, gemv=gemv)
        assert torch.equal(dec.generate(embeds, 6), want)
    with pytest.raises(ValueError, match="gemv"):
        MambaDecoder(model, 1, gemv="gemm")


def test_decoder_prefill_state_equals_stepping_the_prompt():
    """Prefill's conv window and SSM state equal those reached by feeding the prompt step by step."""
    torch.manual_seed(1)
    model = MambaForCausalLM(
        MambaConfig(hidden_size=16, num_hidden_layers=2, state_size=4, vocab_size=50)
    ).eval()
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
@pytest.mark.parametrize("fused_step", [True, False])
def test_decoder_on_gpu_kernels_and_cuda_graph_match_full_recompute(fused_step):
    from mmssm_lightning.inference.mamba_decode import _step_kernels

    torch.manual_seed(0)
    cfg = MambaConfig(
        hidden_size=256, num_hidden_layers=4, state_size=16, expand=2, conv_kernel=4, vocab_size=512
    )
    model = MambaForCausalLM(cfg).cuda().eval()
    embeds = torch.randn(2, 40, 256, device="cuda")
    with torch.no_grad():
        want = _greedy_by_full_recompute(model, embeds, 12)
        dec = MambaDecoder(model, batch_size=2, cuda_graph=True, fused_step=fused_step)
        assert dec.use_graph and (dec.kernels is not None) == (_step_kernels() is not None)
        got = dec.generate(embeds, 12)
        assert dec.graph is not None
        assert (got == want).float().mean() == 1.0
        # the prefill replayed from a graph fills the same states; a second prompt length gets its own graph
        graphed = MambaDecoder(
            model, batch_size=2, cuda_graph=True, fused_step=fused_step, graph_prefill=True
        )
        eager = MambaDecoder(model, batch_size=2, cuda_graph=True, fused_step=fused_step)
        for _ in range(2):
            assert torch.equal(graphed.prefill(embeds), eager.prefill(embeds))
            assert torch.allclose(graphed.conv_state, eager.conv_state, rtol=0, atol=1e-6)
            assert torch.allclose(graphed.ssm_state, eager.ssm_state, rtol=1e-5, atol=1e-6)
        # cuBLAS may pick other kernels under capture, so the states agree to rounding, not bits; from
        # one state, the decoders (the graphed prefill's memory pool live beside the step's) agree exactly
        for dst, src in ((eager.conv_state, graphed.conv_state), (eager.ssm_state, graphed.ssm_state)):
            dst.copy_(src)
        assert torch.equal(graphed.decode(11), eager.decode(11))
        shorter = embeds[:, :25]
        assert torch.equal(graphed.generate(shorter, 12), _greedy_by_full_recompute(model, shorter, 12))
        assert len(graphed._prefill.graphs) == 2


@pytest.fixture
def step_kernels():
    """The Triton step kernels: compiled on a GPU, else run by Triton's interpreter (conftest)."""
    needs_triton()
    import mmssm_lightning.inference.mamba_step_kernels as module

    return module


def _tiny_mamba(dtype=torch.float32, **kw):
    cfg = MambaConfig(
        hidden_size=32,
        num_hidden_layers=3,
        state_size=8,
        expand=2,
        conv_kernel=4,
        vocab_size=97,
        use_mambapy=False,
        **kw,
    )
    return MambaForCausalLM(cfg).eval().to(dtype)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_fused_mixer_step_equals_op_by_op_step(step_kernels, dtype, tol):
    """Per layer and step: mixer output, conv window and SSM state equal the PyTorch step's."""
    torch.manual_seed(2)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    model = _tiny_mamba(dtype).to(dev)
    ref = MambaDecoder(model, 3, cuda_graph=False, backend="torch", fused_step=False)
    ref.prefill(torch.randn(3, 7, 32, device=dev, dtype=dtype))
    conv, ssm = ref.conv_state.clone(), ref.ssm_state.clone()
    fused = step_kernels.FusedMixerStep(model, 3, conv, ssm, block_n=16, block_d=16)  # 4 partials of x_proj

    def close(a, b):
        return (a.float() - b.float()).abs().max() <= tol * b.float().abs().max()

    with torch.no_grad():
        for _ in range(3):
            for i, layer in enumerate(ref.layers):
                h = torch.randn(3, 32, device=dev, dtype=dtype)
                got, want = fused(i, layer.mixer, h), ref._mixer_step(i, layer.mixer, h)
                assert (
                    close(got, want) and close(conv[i], ref.conv_state[i]) and close(ssm[i], ref.ssm_state[i])
                )


def test_triton_gemv_at_batch_1(step_kernels):
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    for n, k in ((40, 24), (24, 40), (300, 100)):  # tall, wide, neither a multiple of the tiles
        layer = torch.nn.Linear(k, n, bias=n == 300).to(dev)
        x = torch.randn(1, k, device=dev)
        assert torch.allclose(step_kernels.gemv(x, layer.weight, layer.bias), layer(x), atol=1e-5, rtol=1e-5)
    strided = torch.randn(1, 64, device=dev)[:, ::2]  # a column slice, as x_proj's dt part is
    w = torch.randn(8, 32, device=dev)
    assert torch.allclose(step_kernels.gemv(strided, w), strided @ w.t(), atol=1e-5, rtol=1e-5)


def test_fused_decoder_matches_full_recompute_greedy(step_kernels):
    torch.manual_seed(3)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    model = _tiny_mamba().to(dev)
    embeds = torch.randn(2, 9, 32, device=dev)
    with torch.no_grad():
        want = _greedy_by_full_recompute(model, embeds, 8)
        dec = MambaDecoder(
            model, 2, cuda_graph=False, backend="auto" if dev == "cuda" else "torch", fused_step=True
        )
        assert dec.fused is not None
        assert torch.equal(dec.generate(embeds, 8), want)
        one = MambaDecoder(
            model,
            1,
            cuda_graph=False,
            backend="auto" if dev == "cuda" else "torch",
            fused_step=True,
            gemv="triton",
        )
        assert torch.equal(one.generate(embeds[:1], 8), want[:1])
    with pytest.raises(ValueError, match="batch 1..16"):
        MambaDecoder(model, 17, backend="torch", fused_step=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_graphed_replays_per_shape_and_drops_the_oldest():
    from mmssm_lightning.inference.cuda_graph import CudaGraphed

    w = torch.randn(8, 8, device="cuda")
    f = CudaGraphed(lambda x: torch.relu(x @ w) + 1, max_graphs=2)
    for n in (3, 4, 3, 5):
        x = torch.randn(n, 8, device="cuda")
        assert torch.allclose(f(x), torch.relu(x @ w) + 1)
    assert [key[0][0][0] for key in f.graphs] == [3, 5]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_decoder_autotune_times_every_variant_and_keeps_the_tokens():
    torch.manual_seed(5)
    model = MambaForCausalLM(MambaConfig(hidden_size=256, num_hidden_layers=4, vocab_size=512)).cuda().eval()
    embeds = torch.randn(1, 30, 256, device="cuda")
    with torch.no_grad():
        dec = MambaDecoder(model, 1, autotune=True)
        got = dec.generate(embeds, 10)
        # tuning ran every variant on the live state and restored it: the tokens are those of the
        # chosen variant run plainly (variants differ from each other in rounding, tested above)
        chosen = min(dec.tuning, key=dec.tuning.get)
        assert (dec.fused is not None) == chosen.startswith("fused") and dec.gemv == chosen.split("_")[1]
        plain = MambaDecoder(model, 1, cuda_graph=False, fused_step=dec.fused is not None, gemv=dec.gemv)
        assert torch.equal(got, plain.generate(embeds, 10))
    assert set(dec.tuning) == {f"{s}_{g}" for s in ("fused", "ops") for g in ("linear", "mv", "triton")}
    assert min(dec.tuning.values()) > 0
