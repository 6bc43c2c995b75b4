"""The sm_90 SASS of the Triton selective-scan kernels, compiled offline (no GPU needed): registers,
spills and instructions per (t, d, n) state update at the Cobra recipe's shape, per tuned config —
the table in experiments/benchmarks/README.md.

usage: python3 scripts/sass_selective_scan.py [--dtype bf16|fp16|fp32]   (needs triton; CPU is enough)

Arguments are specialised as Triton's launcher would (16-byte-aligned pointers, integers equal to 1
as constants, multiples of 16 marked so). Loops are found from backward branches; the reverse pass's
runtime loop over states is weighted by its trip count.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from mmssm_lightning.models.kernels import selective_scan_triton as sst

BIN = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
BATCH, DIM, LENGTH, N = 16, 5120, 985, 16


def compile_sm90(fn, args: dict, constexprs: dict, num_warps: int):
    sig, attrs, ce = {}, {}, dict(constexprs)
    for i, name in enumerate(fn.arg_names):
        if name in ce:
            sig[name] = "constexpr"
            continue
        v = args[name]
        if isinstance(v, str):
            sig[name], attrs[(i,)] = v, [["tt.divisibility", 16]]
        elif v == 1:
            sig[name], ce[name] = "constexpr", 1
        else:
            sig[name] = "i32"
            if v % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
    src = ASTSource(fn=fn, signature=sig, constexprs=ce, attrs=attrs)
    return triton.compile(
        src, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps, "num_stages": 1}
    )


def sass(kernel) -> tuple[list[tuple[int, str]], int]:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(kernel.asm["cubin"])
        f.flush()
        text = subprocess.run([f"{BIN}/cuobjdump", "-sass", f.name], capture_output=True, text=True).stdout
        res = subprocess.run(
            [f"{BIN}/cuobjdump", "-res-usage", f.name], capture_output=True, text=True
        ).stdout
    ins = []
    for line in text.splitlines():
        m = re.match(r"\s+/\*([0-9a-f]{4,6})\*/\s+(@!?U?P\w+\s+)?([A-Z0-9_.]+)(.*)", line)
        if m:
            target = re.search(r"0x([0-9a-f]+)", m.group(4)) if m.group(3).startswith("BRA") else None
            ins.append(
                (int(m.group(1), 16), m.group(3).split(".")[0], int(target.group(1), 16) if target else None)
            )
    return ins, int(re.findall(r"REG:(\d+)", res)[0])


def per_update(ins, inner_trips: int, updates_per_chunk: float) -> tuple[float, int]:
    """Instructions per state update of the chunk loop (the longest backward branch), its innermost
    nested loop counted ``inner_trips`` times; and the spill instructions inside the chunk loop."""
    loops = sorted(((t, a) for a, op, t in ins if t is not None and t < a), key=lambda x: x[1] - x[0])
    outer = loops[-1]
    body = [a for a, _, _ in ins if outer[0] <= a <= outer[1]]
    inner = [a for a, _, _ in ins if loops[0][0] <= a <= loops[0][1]] if len(loops) > 1 else []
    count = len(body) - len(inner) + inner_trips * len(inner)
    spills = sum(1 for a, op, _ in ins if op in ("STL", "LDL") and outer[0] <= a <= outer[1])
    return count / updates_per_chunk, spills


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dtype", default="bf16", choices=("bf16", "fp16", "fp32"))
    dt = "*" + p.parse_args().dtype
    f32 = ("A2_ptr", "B_ptr", "C_ptr", "D_ptr", "bias_ptr", "st_ptr", "last_ptr", "dA_ptr", "dD_ptr")
    f32 += ("dbias_ptr", "dB_ptr", "dC_ptr", "w_ptr")
    ptrs = dict.fromkeys(f32, "*fp32") | dict.fromkeys(("u_ptr", "dl_ptr", "z_ptr", "g_ptr", "out_ptr"), dt)
    ptrs |= {"du_ptr": dt, "ddl_ptr": dt, "seq_ptr": "*i32"}
    ints = {
        "dim": DIM,
        "length": LENGTH,
        "cpg": DIM,
        "n_groups": 1,
        "s_ub": LENGTH * 2 * DIM,
        "s_ul": 2 * DIM,
    }
    ints |= {"s_db": LENGTH * DIM, "s_dl": DIM, "s_zb": LENGTH * 2 * DIM, "s_zl": 2 * DIM}
    ints |= {"s_gb": LENGTH * DIM, "s_gl": DIM}
    flags = {"HAS_D": True, "HAS_Z": True, "HAS_BIAS": True, "SOFTPLUS": True, "HAS_SEQ": False}
    flags["ROW_GROUPS"] = False
    print(f"sm_90 SASS, {dt[1:]} channel-last, D {DIM}, L {LENGTH}, N {N} (Triton {triton.__version__})")
    print("pass      | VEC, T, warps, stages | registers | spill instrs in loop | instructions / update")
    rows = [("forward", c) for c in sst.FWD_CONFIGS] + [
        (k, c) for c in sst.BWD_CONFIGS for k in ("recompute", "reverse")
    ]
    for kind, (vec, chunk, warps, stages) in rows:
        bd = 32 * warps * vec
        lpad = -(-LENGTH // chunk) * chunk
        ce = {"NR": N, "T": chunk, "VEC": vec, "BD": bd, **flags}
        args = {**ptrs, **ints, "lpad": lpad, "nblk": DIM // bd}
        if kind == "reverse":
            kernel, trips = compile_sm90(sst._bwd_kernel, args, ce, warps), N
        else:
            ce |= {"NP": N, "RECOMPUTE": kind == "recompute", "STAGES": stages}
            kernel, trips = compile_sm90(sst._fwd_kernel, args, ce, warps), 1
        ins, regs = sass(kernel)
        cost, spills = per_update(ins, trips, bd * N * chunk / (32 * warps))
        shown = (vec, chunk, warps, stages) if kind != "reverse" else (vec, chunk, warps)
        print(f"{kind:9} | {str(shown):21} | {regs:9} | {spills:20} | {cost:.1f}", flush=True)
    hist = collections.Counter(op for _, op, _ in ins)
    print("last kernel's most frequent instructions:", hist.most_common(8), file=sys.stderr)


if __name__ == "__main__":
    main()
