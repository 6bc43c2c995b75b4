"""The selective scan: PyTorch path vs a float64 step-by-step recurrence (values and gradients),
vs Hugging Face's MambaMixer, and vs the mamba_ssm CUDA kernels where those exist."""

import pytest
import torch

from mmssm_lightning.models.ssm import (
    MambaMixer,
    SelectiveSSM,
    kernels,
    selective_scan,
    selective_scan_reference,
    selective_scan_torch,
    triton_scan,
)


def _inputs(groups=0, b=2, d=6, length=37, n=4, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)

    def mk(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype).requires_grad_()

    bc = (b, n, length) if groups == 0 else (b, groups, n, length)
    A = (-torch.rand(d, n, generator=g, dtype=dtype) * 3).requires_grad_()
    return [mk(b, d, length), mk(b, d, length), A, mk(*bc), mk(*bc), mk(d), mk(b, d, length), mk(d)]


@pytest.mark.parametrize("groups", [0, 2])
@pytest.mark.parametrize("chunk", [1, 5, 8, 64])
def test_torch_scan_matches_the_recurrence_values_and_gradients(groups, chunk):
    ins = _inputs(groups)
    ref = selective_scan_reference(*ins, delta_softplus=True)
    weights = torch.randn_like(ref)
    ref_grads = torch.autograd.grad((ref * weights).sum(), ins)
    f32 = [t.detach().float().requires_grad_() for t in ins]
    out = selective_scan_torch(*f32, delta_softplus=True, chunk_size=chunk)
    grads = torch.autograd.grad((out * weights.float()).sum(), f32)
    assert (out.double() - ref).abs().max() < 1e-4
    for name, got, want in zip(("u", "delta", "A", "B", "C", "D", "z", "delta_bias"), grads, ref_grads):
        assert (got.double() - want).abs().max() < 1e-4 * max(1.0, want.abs().max().item()), name


def test_last_state_is_the_recurrence_state():
    u, delta, A, B, C, D, z, db = [t.detach() for t in _inputs(2)]
    _, h_ref = selective_scan_reference(u, delta, A, B, C, D, z, db, True, return_last_state=True)
    _, h = selective_scan_torch(
        *[t.float() for t in (u, delta, A, B, C, D, z, db)], True, return_last_state=True
    )
    assert h.shape == (2, 6, 4) and (h.double() - h_ref).abs().max() < 1e-5


def test_large_steps_do_not_overflow():
    u, delta, A, B, C, *_ = [t.detach() for t in _inputs(length=40, dtype=torch.float32)]
    out = selective_scan_torch(u, delta * 0 + 50.0, A * 10, B, C, chunk_size=16)  # exp(-1500) per step
    assert torch.isfinite(out).all()
    ref = selective_scan_reference(u, delta * 0 + 50.0, A * 10, B, C)
    assert (out.double() - ref).abs().max() < 1e-4


def test_mixer_equals_huggingface_mamba_mixer():
    """Same parameter names, same function: HF's MambaMixer is the oracle (its sequential PyTorch
    path on CPU; where mamba_ssm is installed HF uses the kernels, which need the GPU)."""
    from transformers import MambaConfig
    from transformers.models.mamba.modeling_mamba import MambaMixer as HFMixer

    device = "cuda" if kernels() is not None and torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    hf = HFMixer(
        MambaConfig(hidden_size=32, state_size=8, expand=2, conv_kernel=4, use_mambapy=False), 0
    ).eval()
    ours = MambaMixer(32, d_state=8, d_conv=4, expand=2, backend="torch")
    assert set(ours.state_dict()) == set(hf.state_dict())
    ours.load_state_dict(hf.state_dict())
    hf, ours = hf.to(device), ours.to(device)
    x = torch.randn(2, 29, 32, device=device)
    with torch.no_grad():
        assert (ours(x) - hf(x)).abs().max() < (1e-5 if device == "cpu" else 1e-4)


def test_multi_direction_ssm_runs_each_direction_with_its_own_parameters():
    torch.manual_seed(0)
    ssm = SelectiveSSM(d_inner=8, num_directions=3, d_state=4, backend="torch")
    x = torch.randn(2, 3, 11, 8)
    y = ssm(x)
    for k in range(3):
        xk = x[:, k].transpose(1, 2)  # (b, d, l)
        dbl = torch.einsum("bdl,cd->bcl", xk, ssm.x_proj_weight[k])
        dt, B, C = dbl.split([ssm.dt_rank, 4, 4], dim=1)
        delta = torch.einsum("brl,dr->bdl", dt, ssm.dt_proj_weight[k])
        want = selective_scan_reference(
            xk,
            delta,
            -torch.exp(ssm.A_log[k]),
            B,
            C,
            ssm.D[k],
            None,
            ssm.dt_proj_bias[k],
            delta_softplus=True,
        )
        assert (y[:, k].transpose(1, 2).double() - want).abs().max() < 1e-4
    shared = SelectiveSSM(d_inner=8, num_directions=3, d_state=4, shared=True, backend="torch")
    same = shared(x[:, :1].expand(-1, 3, -1, -1))
    assert torch.allclose(same[:, 0], same[:, 2])


def test_cuda_backend_is_refused_clearly_without_kernels():
    if kernels() is not None and torch.cuda.is_available():
        pytest.skip("kernels present")
    u, delta, A, B, C, *_ = [t.detach().float() for t in _inputs()]
    with pytest.raises(RuntimeError, match="backend 'cuda'"):
        selective_scan(u, delta, A, B, C, backend="cuda")
    with pytest.raises(ValueError, match="backend"):
        MambaMixer(8, backend="bogus")
    if triton_scan() is None:
        with pytest.raises(RuntimeError, match="triton is not installed"):
            selective_scan(u, delta, A, B, C, backend="triton")


@pytest.mark.skipif(
    kernels() is None or not torch.cuda.is_available(), reason="needs mamba_ssm + causal_conv1d on a GPU"
)
def test_cuda_kernels_match_the_torch_path():
    torch.manual_seed(0)
    for groups in (0, 4):
        u, delta, A, B, C, D, z, db = [
            t.detach().float().cuda() for t in _inputs(groups, b=2, d=64, length=300, n=16)
        ]
        cuda = selective_scan(u, delta, A, B, C, D, z, db, True, backend="cuda")
        ref = selective_scan(u, delta, A, B, C, D, z, db, True, backend="torch")
        assert (cuda - ref).abs().max() < 1e-3
    mixer = MambaMixer(64, backend="torch").cuda()
    x = torch.randn(2, 300, 64, device="cuda", requires_grad=True)
    y_t = mixer(x)
    g_t = torch.autograd.grad(y_t.sum(), [x, mixer.A_log])
    mixer.backend = "cuda"
    y_c = mixer(x)
    g_c = torch.autograd.grad(y_c.sum(), [x, mixer.A_log])
    assert (y_c - y_t).abs().max() < 1e-3
    for a, b in zip(g_c, g_t):
        assert (a - b).abs().max() < 1e-2 * max(1.0, b.abs().max().item())
