"""The Triton selective scan (models/kernels/selective_scan_triton.py): values and all eight gradients
against the float64 step-by-step recurrence and our PyTorch scan (in Triton's interpreter on CPU,
tiny shapes), and against mamba_ssm's kernels on a GPU."""

import pytest
import torch

from mmssm_lightning.models.ssm import (
    MambaMixer,
    kernels,
    selective_scan_reference,
    selective_scan_torch,
)
from tests.conftest import needs_triton

NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
# (channels per lane, steps per chunk, warps): the interpreter's "warps" have 8 lanes; on a GPU these
# tests run on it (32 lanes, VEC >= 2)
GPU = torch.cuda.is_available()
DEVICE = "cuda" if GPU else "cpu"
CHUNK4, CHUNK8 = ((2, 4, 1), (2, 8, 1)) if GPU else ((1, 4, 1), (1, 8, 1))


@pytest.fixture(autouse=True)
def _triton():
    needs_triton()


def _scan():
    from mmssm_lightning.models.kernels.selective_scan_triton import selective_scan_triton

    return selective_scan_triton


def _inputs(groups=0, b=2, d=6, length=13, n=4, seed=0, device=DEVICE):
    g = torch.Generator().manual_seed(seed)

    def mk(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    bc = (b, n, length) if groups == 0 else (b, groups, n, length)
    A = -torch.rand(d, n, generator=g, dtype=torch.float64) * 3
    return [
        t.to(device)
        for t in (mk(b, d, length), mk(b, d, length), A, mk(*bc), mk(*bc), mk(d), mk(b, d, length), mk(d))
    ]


def _grads(fn, ins, weights):
    leaves = [None if t is None else t.detach().requires_grad_() for t in ins]
    out = fn(*leaves)
    y = out[0] if isinstance(out, tuple) else out
    used = [t for t in leaves if t is not None]
    return out, dict(
        zip(
            [n for n, t in zip(NAMES, leaves) if t is not None],
            torch.autograd.grad((y * weights.to(y.dtype)).sum(), used),
        )
    )


def _compare(ins, tol=1e-4, fwd_config=CHUNK4, bwd_config=CHUNK4, softplus=True, dtype=torch.float32):
    """Ours in ``dtype`` (u, delta, z, B, C; A, D, bias float32) against the float64 recurrence on
    the same rounded values: y, last state and every gradient, each in its input's dtype."""
    rounded = [None if t is None else t.to(dtype) if t.dim() >= 3 else t.float() for t in ins]
    weights = torch.randn(ins[0].shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    weights = weights.to(ins[0].device)
    ref, ref_grads = _grads(
        lambda *a: selective_scan_reference(*a, delta_softplus=softplus, return_last_state=True),
        [None if t is None else t.double() for t in rounded],
        weights,
    )
    (y, last), grads = _grads(
        lambda *a: _scan()(
            *a, delta_softplus=softplus, return_last_state=True, fwd_config=fwd_config, bwd_config=bwd_config
        ),
        rounded,
        weights,
    )
    assert y.dtype == dtype and y.shape == ins[0].shape and last.shape == ref[1].shape
    assert (y.double() - ref[0]).abs().max().item() < tol * max(1.0, ref[0].abs().max().item())
    assert (last.double() - ref[1]).abs().max().item() < tol * max(1.0, ref[1].abs().max().item())
    for name, want in ref_grads.items():
        got = grads[name]
        assert got.shape == want.shape and got.dtype == rounded[NAMES.index(name)].dtype, name
        assert (got.double() - want).abs().max().item() < tol * max(1.0, want.abs().max().item()), name


def test_values_and_gradients_match_the_recurrence():
    _compare(_inputs(b=1, d=4, length=9, n=2))


@pytest.mark.slow
@pytest.mark.parametrize(
    "groups, d", [(0, 6), (2, 6), (2, 16)], ids=["shared", "groups-straddle-blocks", "groups-aligned"]
)
@pytest.mark.parametrize("config", [CHUNK4, CHUNK8], ids=["T4", "T8"])
def test_grouped_bc_and_partial_last_chunk(groups, d, config):
    """L = 13 is no multiple of the chunk; d = 6 in 2 groups puts both groups in one block (the
    per-channel B/C path with atomics in backward), d = 16 gives each group its own blocks."""
    _compare(_inputs(groups, d=d), fwd_config=config, bwd_config=config)


@pytest.mark.slow
def test_without_optional_inputs():
    u, delta, A, B, C, *_ = _inputs()
    _compare([u, delta.abs() * 0.5, A, B, C, None, None, None], softplus=False)


@pytest.mark.slow
def test_bfloat16_inputs():
    """bf16 u / delta / z / B / C, float32 state: within bf16 rounding of the float64 recurrence."""
    _compare(_inputs(b=1, d=8, length=11), tol=2e-2, dtype=torch.bfloat16)


@pytest.mark.slow
def test_same_as_the_pytorch_scan():
    ins = [t.float() for t in _inputs(2, d=6)]
    weights = torch.randn(ins[0].shape, device=DEVICE)
    (y_t, last_t), g_t = _grads(
        lambda *a: selective_scan_torch(*a, delta_softplus=True, return_last_state=True), ins, weights
    )
    (y, last), g = _grads(
        lambda *a: _scan()(
            *a, delta_softplus=True, return_last_state=True, fwd_config=CHUNK8, bwd_config=CHUNK4
        ),
        ins,
        weights,
    )
    assert (y - y_t).abs().max() < 1e-4 and (last - last_t).abs().max() < 1e-4
    for name in NAMES:
        assert (g[name] - g_t[name]).abs().max() < 1e-4 * max(1.0, g_t[name].abs().max().item()), name


def test_layouts_give_the_same_result():
    """(b, d, l) inputs are transposed to channel-last once; channel-last ones are read in place."""
    u, delta, A, B, C, D, z, bias = [t.float() for t in _inputs(b=1, d=4, length=9, n=2)]
    cl = [t.transpose(1, 2).contiguous().transpose(1, 2) for t in (u, delta, z)]
    assert cl[0].stride(1) == 1
    y1 = _scan()(u, delta, A, B, C, D, z, bias, True)
    y2 = _scan()(cl[0], cl[1], A, B, C, D, cl[2], bias, True)
    assert y1.stride(1) == 1 and torch.equal(y1, y2)


@pytest.mark.slow
def test_packed_sequences_restart_the_state():
    """seq_idx: two sequences packed in one row scan as if run separately (values and gradients)."""
    from mmssm_lightning.models.kernels.selective_scan_triton import seq_idx_from_cu_seqlens

    u, delta, A, B, C, D, z, bias = [t.float() for t in _inputs(b=1, d=4, length=11, n=2)]
    cut = 5
    seq_idx = seq_idx_from_cu_seqlens(torch.tensor([0, cut, 11], device=DEVICE), 11)
    assert seq_idx.tolist() == [[0] * cut + [1] * (11 - cut)]
    weights = torch.randn(u.shape, device=DEVICE)
    ins = [u, delta, A, B, C, D, z, bias]
    (y, last), g = _grads(
        lambda *a: _scan()(*a, delta_softplus=True, return_last_state=True, seq_idx=seq_idx), ins, weights
    )
    parts = [slice(0, cut), slice(cut, 11)]
    for part in parts:
        piece = [t[..., part] if t.dim() == 3 else t for t in ins]
        (yp, lastp), gp = _grads(
            lambda *a: selective_scan_reference(*a, delta_softplus=True, return_last_state=True),
            [t.double() for t in piece],
            weights[..., part].double(),
        )
        assert (y[..., part].double() - yp).abs().max() < 1e-4
        for name in ("u", "delta", "z", "B", "C"):
            assert (g[name][..., part].double() - gp[name]).abs().max() < 1e-4, name
    assert (last.double() - lastp).abs().max() < 1e-4  # the last piece's final state


@pytest.mark.slow
def test_mixer_on_the_triton_scan_matches_the_pytorch_path():
    torch.manual_seed(0)
    mixer = MambaMixer(16, d_state=4, expand=2, backend="torch").to(DEVICE)
    x = torch.randn(2, 9, 16, device=DEVICE, requires_grad=True)
    mask = torch.ones(2, 9, device=DEVICE)
    mask[1, :3] = 0  # left padding
    y_t = mixer(x, mask)
    g_t = torch.autograd.grad(y_t.square().sum(), [x, *mixer.parameters()])
    mixer.backend = "triton"
    y = mixer(x, mask)
    g = torch.autograd.grad(y.square().sum(), [x, *mixer.parameters()])
    assert (y - y_t).abs().max() < 1e-4
    for a, b in zip(g, g_t):
        assert (a - b).abs().max() < 1e-4 * max(1.0, b.abs().max().item())


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")


@cuda
@pytest.mark.parametrize("groups", [0, 4])
def test_gpu_matches_the_pytorch_scan(groups):
    """All tuned configs run on the GPU; fp32 against our PyTorch scan, values and gradients."""
    ins = [t.float() for t in _inputs(groups, b=2, d=512, length=300, n=16, device="cuda")]
    weights = torch.randn(ins[0].shape, device="cuda")
    (y_t, last_t), g_t = _grads(
        lambda *a: selective_scan_torch(*a, delta_softplus=True, return_last_state=True, chunk_size=16),
        ins,
        weights,
    )
    (y, last), g = _grads(lambda *a: _scan()(*a, delta_softplus=True, return_last_state=True), ins, weights)
    assert (y - y_t).abs().max() < 1e-3 * max(1.0, y_t.abs().max().item())
    assert (last - last_t).abs().max() < 1e-3 * max(1.0, last_t.abs().max().item())
    for name in NAMES:
        assert (g[name] - g_t[name]).abs().max() < 1e-3 * max(1.0, g_t[name].abs().max().item()), name


@cuda
@pytest.mark.skipif(kernels() is None, reason="needs mamba_ssm")
@pytest.mark.parametrize("groups", [0, 2])
def test_gpu_matches_mamba_ssm_in_bfloat16(groups):
    """The recipe's dtypes (bf16 u / delta / z / B / C, fp32 A / D / bias) at a medium shape."""
    selective_scan_fn = kernels()[0]
    u, delta, A, B, C, D, z, bias = _inputs(groups, b=2, d=256, length=300, n=16, device="cuda")
    ins = [
        u.bfloat16(),
        (delta * 0.5).bfloat16(),
        A.float(),
        B.bfloat16(),
        C.bfloat16(),
        D.float(),
        z.bfloat16(),
        bias.float(),
    ]
    weights = torch.randn(u.shape, device="cuda")
    (y_m, last_m), g_m = _grads(
        lambda *a: selective_scan_fn(*a, delta_softplus=True, return_last_state=True), ins, weights
    )
    (y, last), g = _grads(lambda *a: _scan()(*a, delta_softplus=True, return_last_state=True), ins, weights)
    assert (y.float() - y_m.float()).abs().max() < 2e-2 * y_m.float().abs().max()
    assert (last - last_m).abs().max() < 1e-2 * max(1.0, last_m.abs().max().item())
    for name in NAMES:
        want = g_m[name].float()
        assert (g[name].float() - want).abs().max() < 3e-2 * max(1.0, want.abs().max().item()), name


@cuda
def test_gpu_fused_mixer_matches_huggingface_block():
    """HF's MambaBlock with its mixer turned into ours (Triton scan) against HF's own, in training mode."""
    from transformers import MambaConfig, MambaModel

    from mmssm_lightning.models.hf_mamba import use_fused_mixers

    torch.manual_seed(0)
    cfg = MambaConfig(
        hidden_size=64, state_size=16, expand=2, conv_kernel=4, num_hidden_layers=1, vocab_size=16
    )
    hf = MambaModel(cfg).layers[0].cuda().train()
    ours = MambaModel(cfg).layers[0].cuda().train()
    ours.load_state_dict(hf.state_dict())
    assert use_fused_mixers(ours, "triton") == 1
    x = torch.randn(2, 300, 64, device="cuda", requires_grad=True)
    y_h, y_o = hf(x), ours(x)
    g_h = torch.autograd.grad(y_h.square().sum(), [x, *hf.parameters()])
    g_o = torch.autograd.grad(y_o.square().sum(), [x, *ours.parameters()])
    assert (y_o - y_h).abs().max() < 1e-3 * max(1.0, y_h.abs().max().item())
    for a, b in zip(g_o, g_h):
        assert (a - b).abs().max() < 1e-2 * max(1.0, b.abs().max().item())
