"""The inference engine: a prompt's greedy answer and log-probabilities do not depend on the batch it
is in nor on its left padding (batch invariance), rows stop at their own EOS, and the fast paths
answer as the baseline HF path does."""

import pytest
import torch
from transformers import MambaConfig, MambaForCausalLM

from mmssm_lightning.bench.init import mamba_ssm_init
from mmssm_lightning.build import build_model
from mmssm_lightning.constants import IMAGE_TOKEN_ID
from mmssm_lightning.inference import Engine
from mmssm_lightning.inference.mamba_decode import MambaDecoder

LENGTHS = (7, 2, 11, 4, 1)  # mixed, two of them shorter than the conv window (4)


def _mamba(seed: int) -> MambaForCausalLM:
    """A tiny Mamba whose conv and projection biases are nonzero, as trained ones are (the conv bias
    is what a padded position would feed into the state), with an untied head (a tiny tied one
    repeats one token)."""
    torch.manual_seed(seed)
    cfg = MambaConfig(
        hidden_size=32,
        num_hidden_layers=3,
        state_size=8,
        expand=2,
        conv_kernel=4,
        vocab_size=97,
        use_bias=True,
        use_mambapy=False,
        tie_word_embeddings=False,
    )
    model = MambaForCausalLM(cfg).eval()
    mamba_ssm_init(model, seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("in_proj.bias"):
                p.normal_(0, 0.3)
    return model


def _left_padded(rows: list[torch.Tensor], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L, D) with random garbage at the pad positions (a pad token's embedding is not zero)."""
    g = torch.Generator().manual_seed(seed + 100)
    length = max(len(r) for r in rows)
    embeds = torch.randn(len(rows), length, rows[0].shape[-1], generator=g)
    mask = torch.zeros(len(rows), length)
    for i, r in enumerate(rows):
        embeds[i, length - len(r) :], mask[i, length - len(r) :] = r, 1
    return embeds, mask


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mamba_decoder_is_batch_invariant(seed):
    model = _mamba(seed)
    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randn(n, 32, generator=g) for n in LENGTHS]
    embeds, mask = _left_padded(prompts, seed)
    with torch.no_grad():
        batched = MambaDecoder(model, len(prompts), backend="torch")
        first = batched.prefill(embeds, mask)
        logp = batched.logits.log_softmax(-1)
        steps = batched.decode(8)
        for i, p in enumerate(prompts):
            one = MambaDecoder(model, 1, backend="torch")
            assert torch.equal(one.prefill(p[None])[0], first[i])
            assert torch.allclose(one.logits.log_softmax(-1)[0], logp[i], rtol=0, atol=1e-5)
            assert torch.equal(one.decode(8)[0], steps[i])
            # and batch 1 is the model's own forward on the prompt alone
            ref = model(inputs_embeds=p[None], use_cache=False).logits[0, -1].log_softmax(-1)
            assert torch.allclose(one.logits.log_softmax(-1)[0], ref, rtol=0, atol=1e-5)
    assert len(set(steps.flatten().tolist())) > 5  # the answers are not one repeated token


def test_unmasked_left_padding_leaks_into_the_state():
    """The check above can fail: without the mask the pads' embeddings and the conv bias reach the
    conv window and the SSM state of the rows they pad."""
    model = _mamba(0)
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randn(n, 32, generator=g) for n in LENGTHS]
    embeds, _ = _left_padded(prompts, 0)
    with torch.no_grad():
        batched = MambaDecoder(model, len(prompts), backend="torch")
        batched.prefill(embeds)
        one = MambaDecoder(model, 1, backend="torch")
        one.prefill(prompts[1][None])  # the row with most padding
        assert (one.logits[0] - batched.logits[1]).abs().max() > 1e-3


def _prompts(model, lengths, seed):
    g = torch.Generator().manual_seed(seed)
    vocab = len(model.tokenizer)
    rows = [
        torch.cat([torch.tensor([IMAGE_TOKEN_ID]), torch.randint(2, vocab, (n,), generator=g)])
        for n in lengths
    ]
    size = model.vision.image_size
    pixels = torch.rand(len(rows), 3, size, size, generator=g)
    return rows, pixels


def _batch(rows, pad_id):
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad_id)
    mask = torch.zeros(len(rows), length, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, length - len(r) :], mask[i, length - len(r) :] = r, 1
    return ids, mask


def _vlm(cfg_factory, llm, seed):
    torch.manual_seed(seed)
    untied = ["+llm.config.tie_word_embeddings=false"] if llm == "tiny_mamba" else []
    model = build_model(cfg_factory([f"llm={llm}", *untied])).eval()  # a tiny tied head repeats one token
    return model


@pytest.mark.slow
@pytest.mark.parametrize("llm", ["tiny_mamba", "tiny_pythia", "tiny_llama"])
@pytest.mark.parametrize("seed", [0, 1])
def test_engine_is_batch_invariant_and_matches_the_baseline(cfg_factory, llm, seed):
    """Same greedy answers and next-token log-probabilities at batch 1 and in a left-padded batch of
    mixed prompt lengths, for the engine's path (Mamba: static state) and the HF baseline alike."""
    model = _vlm(cfg_factory, llm, seed)
    rows, pixels = _prompts(model, (2, 9, 5, 13), seed)
    ids, mask = _batch(rows, model.tokenizer.pad_token_id)
    answers = {}
    for backend in ("auto", "hf"):
        engine = Engine(model, backend=backend)
        batched = engine.generate_tokens(ids, mask, pixels, 6, stop_at_eos=False)
        logp = engine.next_token_logprobs(ids, mask, pixels)
        for i, r in enumerate(rows):
            one = (r[None], torch.ones(1, len(r), dtype=torch.long), pixels[i : i + 1])
            assert torch.equal(
                engine.generate_tokens(*one, 6, stop_at_eos=False).tokens[0], batched.tokens[i]
            )
            assert torch.allclose(engine.next_token_logprobs(*one)[0], logp[i], rtol=0, atol=1e-5)
        answers[backend] = (batched.tokens, logp)
    assert torch.equal(answers["auto"][0], answers["hf"][0])
    assert torch.allclose(answers["auto"][1], answers["hf"][1], rtol=0, atol=1e-4)
    assert len(set(answers["auto"][0].flatten().tolist())) > 3


@pytest.mark.slow
@pytest.mark.parametrize("llm", ["tiny_mamba", "tiny_pythia"])
def test_rows_stop_at_their_own_eos(cfg_factory, llm):
    model = _vlm(cfg_factory, llm, 0)
    rows, pixels = _prompts(model, (3, 8, 5), 0)
    ids, mask = _batch(rows, model.tokenizer.pad_token_id)
    engine = Engine(model)
    free = engine.generate_tokens(ids, mask, pixels, 8, stop_at_eos=False).tokens
    # EOS := the token row 0 produces at step 2 (one it has not produced before)
    step = next(t for t in range(2, 8) if free[0, t] not in free[0, :t])
    eos = engine.eos_token_id = int(free[0, step])
    pad = engine.pad_token_id
    got = engine.generate_tokens(ids, mask, pixels, 8)
    want_lengths = []
    for i in range(3):
        hits = (free[i] == eos).nonzero().flatten()
        k = int(hits[0]) + 1 if len(hits) else 8
        want_lengths.append(k)
        assert torch.equal(got.tokens[i, :k], free[i, :k])  # up to and including its EOS
        assert (got.tokens[i, k:] == pad).all()  # then nothing
        text = model.tokenizer.decode(free[i, : k - 1 if len(hits) else k], skip_special_tokens=True)
        assert got.texts[i] == text
    assert got.lengths == want_lengths and got.tokens.shape[1] == max(want_lengths)
    # a batch whose rows all end early ends there, not at max_new_tokens
    two = engine.generate_tokens(ids[[0, 0]], mask[[0, 0]], pixels[[0, 0]], 8)
    assert two.tokens.shape[1] == step + 1 and two.lengths == [step + 1, step + 1]
    assert 0 < two.ttft_s <= two.e2e_s


def test_engine_rejects_a_path_the_model_cannot_take(cfg_factory):
    model = build_model(cfg_factory(["llm=tiny_pythia"]))
    with pytest.raises(ValueError, match="needs a Mamba LLM"):
        Engine(model, backend="mamba")
    with pytest.raises(ValueError, match="inference backend must be one of"):
        Engine(model, backend="vllm")
    mamba = build_model(cfg_factory(["llm=tiny_mamba"]))
    with pytest.raises(ValueError, match="'hf_static' is for KV-cache LLMs"):
        Engine(mamba, backend="hf_static")
    assert Engine(mamba).name == "mamba_static_state" and Engine(model).name == "hf_generate (baseline)"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_kernel_path_is_batch_invariant_on_gpu():
    """mamba_ssm / causal_conv1d kernels where installed, CUDA graphs for the step and the batch-1
    prefill: batch 1 and batch 5 agree on tokens and (float32) log-probabilities."""
    torch.manual_seed(0)
    cfg = MambaConfig(hidden_size=256, num_hidden_layers=4, state_size=16, vocab_size=512, use_bias=True)
    model = MambaForCausalLM(cfg).cuda().eval()
    mamba_ssm_init(model, 0)
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randn(n * 5, 256, generator=g).cuda() for n in LENGTHS]
    embeds, mask = _left_padded([p.cpu() for p in prompts], 0)
    with torch.no_grad():
        batched = MambaDecoder(model, len(prompts), cuda_graph=True)
        batched.prefill(embeds.cuda(), mask.cuda())
        logp = batched.logits.log_softmax(-1)
        steps = batched.decode(12)
        one = MambaDecoder(model, 1, cuda_graph=True, graph_prefill=True)
        for i, p in enumerate(prompts):
            one.prefill(p[None])
            assert torch.allclose(one.logits.log_softmax(-1)[0], logp[i], rtol=0, atol=1e-4)
            assert torch.equal(one.decode(12)[0], steps[i])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_engine_on_gpu_pads_batches_to_one_graph_and_stays_invariant(cfg_factory):
    model = _vlm(cfg_factory, "tiny_mamba", 0).cuda()
    rows, pixels = _prompts(model, (2, 9, 5), 0)
    ids, mask = _batch(rows, model.tokenizer.pad_token_id)
    engine = Engine(model, batch_size=4)
    batched = engine.generate_tokens(ids.cuda(), mask.cuda(), pixels.cuda(), 6, stop_at_eos=False)
    for i, r in enumerate(rows):
        one = engine.generate_tokens(
            r[None].cuda(),
            torch.ones(1, len(r), dtype=torch.long).cuda(),
            pixels[i : i + 1].cuda(),
            6,
            stop_at_eos=False,
        )
        assert torch.equal(one.tokens[0], batched.tokens[i])
    assert list(engine._decoders) == [4] and len(engine.encode_images.graphs) == 1
