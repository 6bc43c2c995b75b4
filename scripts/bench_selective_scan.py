"""Selective scan at the Cobra recipe's shape (B 16, D 5120, L 985, N 16; bf16 u / delta / z / B / C, fp32
A / D / delta_bias, z gate + delta bias + softplus), side by side in one run: mamba_ssm's kernels, our
Triton scan (inputs laid out (b, d, l) as mamba_ssm takes them, and channel-last as our mixer passes
them) and our PyTorch scan, forward and forward + backward; the error of ours against mamba_ssm
(values and all gradients); then one Mamba-2.8B block (d_model 2560, d_inner 5120) training step,
Hugging Face's mixer against our fused one (scan by mamba_ssm and by Triton), time and peak memory.

usage: python3 scripts/bench_selective_scan.py OUT_JSON [--tiny] [--reps N]
  (GPU; the repository on PYTHONPATH, as scripts/device_setup.sh sets. --tiny: small shapes, runs on
   CPU in Triton's interpreter, to check the script end to end.)
CUDA events, warm-up, median of N; the JSON is rewritten after every measurement, so a crash keeps
what ran. Parts whose packages are missing (mamba_ssm, causal_conv1d, triton) are skipped and say so.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before any Triton kernel is defined

import mmssm_lightning  # noqa: E402,F401  (torchvision shim before transformers)
from mmssm_lightning.bench.provenance import package_version  # noqa: E402
from mmssm_lightning.utils import git_state  # noqa: E402


class Report:
    def __init__(self, path: Path, info: dict) -> None:
        self.path, self.data = path, {**info, "rows": []}
        self.write()

    def add(self, **row) -> None:
        self.data["rows"].append(row)
        print(json.dumps(row), flush=True)
        self.write()

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.data, indent=1, default=str))


def timed(fn, reps: int, warmup: int) -> float:
    """Median milliseconds of ``fn()`` (CUDA events on a GPU, wall clock otherwise)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        if torch.cuda.is_available():
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            fn()
            e.record()
            e.synchronize()
            times.append(s.elapsed_time(e))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def scan_inputs(b: int, d: int, length: int, n: int, dtype, device, channel_last: bool = False):
    g = torch.Generator(device="cpu").manual_seed(0)

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(device)

    def bdl(scale=1.0):
        t = rnd(b, length, d, scale=scale).to(dtype)
        return t.transpose(1, 2) if channel_last else t.transpose(1, 2).contiguous()

    u, delta, z = bdl(), bdl(0.5), bdl()
    A = -torch.arange(1, n + 1, dtype=torch.float32).repeat(d, 1).to(device)  # S4D-real, as Mamba's init
    B, C = rnd(b, n, length).to(dtype), rnd(b, n, length).to(dtype)
    D = torch.ones(d, device=device)
    bias = (torch.rand(d, generator=g) * 4 - 6).to(device)  # softplus^-1 of dt in [0.001, 0.1]-ish
    return [u, delta, A, B, C, D, z, bias]


def fwd_bwd(fn, ins, dout):
    """A (fwd, fwd+bwd) pair of closures over leaf copies of ``ins``."""
    leaves = [t.detach().requires_grad_() for t in ins]

    def fwd():
        with torch.no_grad():
            return fn(*ins)

    def both():
        for t in leaves:
            t.grad = None
        fn(*leaves).backward(dout)

    return fwd, both, leaves


def scan_section(rep: Report, args, dev) -> None:
    shape = (
        {"b": 2, "d": 16, "length": 37, "n": 4} if args.tiny else {"b": 16, "d": 5120, "length": 985, "n": 16}
    )
    dtype = torch.float32 if args.tiny else torch.bfloat16
    rep.data["scan_shape"] = {**shape, "dtype": str(dtype)}
    ins = scan_inputs(**shape, dtype=dtype, device=dev)
    ins_cl = scan_inputs(**shape, dtype=dtype, device=dev, channel_last=True)
    dout = torch.randn(shape["b"], shape["d"], shape["length"], device=dev).to(dtype)
    kw = {"delta_softplus": True}
    impls = {}
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

        if dev.type == "cuda":
            impls["mamba_ssm"] = (lambda *a: selective_scan_fn(*a, **kw), ins)
        else:
            rep.add(section="scan", impl="mamba_ssm", skipped="needs a GPU")
    except ImportError as e:
        rep.add(section="scan", impl="mamba_ssm", skipped=f"not importable: {e}")
    try:
        from mmssm_lightning.models.kernels.selective_scan_triton import _TUNED, selective_scan_triton

        impls["triton_bdl_inputs"] = (lambda *a: selective_scan_triton(*a, **kw), ins)
        impls["triton_channel_last"] = (lambda *a: selective_scan_triton(*a, **kw), ins_cl)
    except ImportError as e:
        _TUNED = {}
        rep.add(section="scan", impl="triton", skipped=f"not importable: {e}")
    from mmssm_lightning.models.ssm import selective_scan_torch

    impls["torch_scan"] = (lambda *a: selective_scan_torch(*a, **kw, chunk_size=16), ins)

    grads = {}
    for name, (fn, x) in impls.items():
        reps = max(3, args.reps // 5) if name == "torch_scan" else args.reps
        try:
            fwd, both, leaves = fwd_bwd(fn, x, dout)
            print(f"... {name}: compiling / tuning", flush=True)
            fwd(), both()  # compile and tune outside the timing
            t_fwd = timed(fwd, reps, args.warmup)
            t_both = timed(both, reps, args.warmup)
            rep.add(
                section="scan", impl=name, fwd_ms=t_fwd, fwd_bwd_ms=t_both, bwd_ms=t_both - t_fwd, reps=reps
            )
            grads[name] = (fn(*x).detach(), [t.grad.detach() for t in leaves])
        except Exception as e:  # one implementation failing must not stop the others
            rep.add(section="scan", impl=name, error=repr(e)[:500], trace=traceback.format_exc()[-1500:])
        torch.cuda.empty_cache() if dev.type == "cuda" else None
    rep.data["triton_configs"] = {str(k): v for k, v in _TUNED.items()}
    names = ("y", "du", "ddelta", "dA", "dB", "dC", "dD", "dz", "ddelta_bias")
    ref = "mamba_ssm" if "mamba_ssm" in grads else "torch_scan"
    for name in grads:
        if name == ref:
            continue
        errs = {}
        for label, a, b in zip(names, [grads[name][0], *grads[name][1]], [grads[ref][0], *grads[ref][1]]):
            diff = (a.float() - b.float()).abs().max().item()
            errs[label] = {"max_abs": diff, "rel_to_max": diff / max(b.float().abs().max().item(), 1e-30)}
        rep.add(section="error", impl=name, against=ref, errors=errs)


def block_section(rep: Report, args, dev) -> None:
    import copy

    from transformers import MambaConfig, MambaModel

    from mmssm_lightning.models.hf_mamba import use_fused_mixers
    from mmssm_lightning.models.ssm import kernels, triton_scan

    width, b, length, n = (16, 2, 37, 4) if args.tiny else (2560, 16, 985, 16)
    rep.data["block_shape"] = {
        "d_model": width,
        "d_inner": 2 * width,
        "state": n,
        "batch": b,
        "length": length,
    }
    cfg = MambaConfig(
        hidden_size=width,
        state_size=n,
        expand=2,
        conv_kernel=4,
        num_hidden_layers=1,
        vocab_size=16,
        use_mambapy=True,
    )
    torch.manual_seed(0)
    hf = MambaModel(cfg).layers[0].to(dev).train()
    variants = {"hf_mixer": hf}
    for backend, ok in (
        ("cuda", kernels() is not None and dev.type == "cuda"),
        ("triton", triton_scan() is not None),
    ):
        if ok:
            block = copy.deepcopy(hf)
            use_fused_mixers(block, backend)
            variants[f"fused_mixer_{backend}_scan"] = block
        else:
            rep.add(section="block", impl=f"fused_mixer_{backend}_scan", skipped="backend not available here")
    x = torch.randn(b, length, width, device=dev)
    dout = torch.randn(b, length, width, device=dev)
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")
    outs = {}
    for name, block in variants.items():
        try:
            xi = x.clone().requires_grad_()

            def step(block=block, xi=xi):
                block.zero_grad(set_to_none=True)
                xi.grad = None
                with autocast:
                    y = block(xi)
                y = y[0] if isinstance(y, tuple) else y
                y.backward(dout)
                return y

            def fwd(block=block):
                with torch.no_grad(), autocast:
                    return block(x)

            print(f"... block {name}: compiling / tuning", flush=True)
            y = step()
            outs[name] = (y.detach().float(), xi.grad.detach().float())
            t_step = timed(step, args.reps, args.warmup)
            t_fwd = timed(fwd, args.reps, args.warmup)
            mem = {}
            if dev.type == "cuda":
                block.zero_grad(set_to_none=True)
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
                step()
                torch.cuda.synchronize()
                mem = {"peak_gib": (torch.cuda.max_memory_allocated() - base) / 2**30}
            rep.add(section="block", impl=name, fwd_ms=t_fwd, fwd_bwd_ms=t_step, reps=args.reps, **mem)
        except Exception as e:
            rep.add(section="block", impl=name, error=repr(e)[:500], trace=traceback.format_exc()[-1500:])
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    for name, (y, gx) in outs.items():
        if name != "hf_mixer" and "hf_mixer" in outs:
            y0, g0 = outs["hf_mixer"]
            rep.add(
                section="block_error",
                impl=name,
                y_rel=((y - y0).abs().max() / y0.abs().max()).item(),
                dx_rel=((gx - g0).abs().max() / g0.abs().max()).item(),
            )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--tiny", action="store_true", help="small shapes (CPU: Triton's interpreter)")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--skip-block", action="store_true")
    args = p.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cpu" and not args.tiny:
        sys.exit("bench_selective_scan: no GPU; use --tiny for a CPU dry run")
    if args.tiny:
        args.reps, args.warmup = min(args.reps, 2), 1
    info = {
        "command": " ".join([sys.executable, *sys.argv]),
        "git": git_state(),
        "device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu (Triton interpreter)",
        "versions": {
            "torch": torch.__version__,
            **{k: package_version(k) for k in ("triton", "mamba-ssm", "causal-conv1d", "transformers")},
        },
        "tiny": args.tiny,
    }
    rep = Report(args.out, info)
    print(
        f"bench_selective_scan: {info['device']}, torch {torch.__version__}, writing {args.out}", flush=True
    )
    scan_section(rep, args, dev)
    if not args.skip_block:
        block_section(rep, args, dev)
    print(f"done: {args.out}", flush=True)


if __name__ == "__main__":
    main()
