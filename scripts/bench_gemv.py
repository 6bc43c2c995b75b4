"""Batch-1 GEMV: cuBLAS (``mm`` and ``mv``) vs a plain Triton row-block GEMV, over 64 layers of Mamba-2.8B-
shaped weights in one CUDA graph (as a decode step reads them: no weight is in L2 when it is read).
usage: python3 scripts/bench_gemv.py OUT_JSON     (GPU; the repository on PYTHONPATH, as device_setup.sh sets)

Decides whether the fused decode step should own its GEMVs: at batch 1 the step is ~26 us of
in_proj + out_proj per layer through cuBLAS (3.2 and 2.4 TB/s), against 19 us at copy bandwidth.
"""

import itertools
import json
import statistics
import sys

import torch
import torch.nn.functional as F

from mmssm_lightning.inference.mamba_step_kernels import _gemv_rows


def graph_us(fn, ws, xs, ys) -> float:
    for w, x, y in zip(ws, xs, ys):
        fn(w, x, y)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for w, x, y in zip(ws, xs, ys):
            fn(w, x, y)
    times = []
    for _ in range(7):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        g.replay()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e) * 1e3 / len(ws))
    return statistics.median(times[2:])


def main() -> None:
    torch.manual_seed(0)
    dev, dt, layers = "cuda", torch.bfloat16, 64
    rows = []
    for name, (n, k) in {"in_proj": (10240, 2560), "out_proj": (2560, 5120)}.items():
        ws = [torch.randn(n, k, device=dev, dtype=dt) * 0.02 for _ in range(layers)]
        xs = [torch.randn(k, device=dev, dtype=dt) for _ in range(layers)]
        ys = [torch.empty(n, device=dev, dtype=dt) for _ in range(layers)]
        mb = n * k * 2 / 1e6
        ref = F.linear(xs[0][None], ws[0])[0].float()
        for impl, fn in (
            ("cublas", lambda w, x, y: torch.mm(x[None], w.t(), out=y[None])),
            ("cublas_mv", lambda w, x, y: torch.mv(w, x, out=y)),
        ):
            us = graph_us(fn, ws, xs, ys)
            rows.append({"gemv": name, "impl": impl, "us": us, "TBps": mb / us})
            print(json.dumps(rows[-1]), flush=True)
        for bn, bk, nw, ns in itertools.product((4, 8, 16, 32), (128, 256, 512), (4, 8), (1, 3)):
            if bn * bk > 8192:
                continue

            def fn(w, x, y, bn=bn, bk=bk, nw=nw, ns=ns, n=n, k=k):
                _gemv_rows[(n // bn,)](x, w, y, n, k, BLOCK_N=bn, BLOCK_K=bk, num_warps=nw, num_stages=ns)

            try:
                us = graph_us(fn, ws, xs, ys)
                fn(ws[0], xs[0], ys[0])
                err = ((ys[0].float() - ref).norm() / ref.norm()).item()
            except Exception as e:  # a config Triton rejects: recorded
                rows.append(
                    {"gemv": name, "impl": "triton", "config": [bn, bk, nw, ns], "error": repr(e)[:200]}
                )
                continue
            rows.append(
                {
                    "gemv": name,
                    "impl": "triton",
                    "config": [bn, bk, nw, ns],
                    "us": us,
                    "TBps": mb / us,
                    "rel_err": err,
                }
            )
        best = min(
            (r for r in rows if r["gemv"] == name and r["impl"] == "triton" and "us" in r),
            key=lambda r: r["us"],
        )
        print(json.dumps(best), flush=True)
        del ws
        torch.cuda.empty_cache()
    json.dump({"device": torch.cuda.get_device_name(), "rows": rows}, open(sys.argv[1], "w"), indent=1)


if __name__ == "__main__":
    main()
