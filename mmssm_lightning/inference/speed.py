"""How fast an evaluation ran, in lmms-eval's terms (docs/throughput_metrics.md at 2bb5e98): time to
first token (TTFT), time per output token after the first (TPOT = (E2E - TTFT) / (tokens - 1)),
end-to-end batch latency, output tokens; plus samples/s over the wall clock. And what a paper's
whole suite would take at the measured rates: the sizes of the splits each protocol scores
(``conf/split_sizes/``) x seconds per sample."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import fmean


@dataclass
class BatchTime:
    """samples: real rows; tokens: decode positions the batch ran (0 for likelihood scoring);
    output_tokens: tokens its rows generated (each up to its EOS)."""

    samples: int
    ttft_s: float
    e2e_s: float
    tokens: int = 0
    output_tokens: int = 0


def summarize(
    batches: Sequence[BatchTime], wall_s: float, scoring: str, engine: str, batch_size: int, world_size: int
) -> dict:
    """One benchmark's speed; ``batches`` from every rank, ``wall_s`` the slowest rank's."""
    samples = sum(b.samples for b in batches)
    decoding = [b for b in batches if b.tokens > 1]
    out_tokens = sum(b.output_tokens for b in batches)
    return {
        "scoring": scoring,
        "engine": engine,
        "batch_size": batch_size,
        "world_size": world_size,
        "samples": samples,
        "batches": len(batches),
        "wall_s": wall_s,
        "samples_per_s": samples / wall_s if wall_s > 0 else None,
        "s_per_sample": wall_s / samples if samples else None,
        "ttft_s": fmean(b.ttft_s for b in batches) if batches else None,
        "e2e_s": fmean(b.e2e_s for b in batches) if batches else None,
        "tpot_s": fmean((b.e2e_s - b.ttft_s) / (b.tokens - 1) for b in decoding) if decoding else None,
        "output_tokens": out_tokens,
        "output_tokens_per_s": out_tokens / wall_s if wall_s > 0 and out_tokens else None,
    }


def measured_seconds(
    protocol: Mapping[str, Mapping], results: Mapping[str, dict]
) -> dict[str, tuple[float, str]]:
    """Seconds per sample of each benchmark of ``protocol``: its own where this run scored it, else
    the mean over the run's benchmarks scored the same way (generate / likelihood)."""
    own = {
        name: r["speed"]["s_per_sample"]
        for name, r in results.items()
        if r.get("speed", {}).get("s_per_sample") is not None
    }
    by_scoring: dict[str, list[float]] = {}
    for name, s in own.items():
        if name in protocol:
            by_scoring.setdefault(protocol[name].get("scoring", "generate"), []).append(s)
    out = {}
    for name, entry in protocol.items():
        scoring = entry.get("scoring", "generate")
        if name in own:
            out[name] = (own[name], "measured")
        elif by_scoring.get(scoring):
            out[name] = (fmean(by_scoring[scoring]), f"mean of this run's {scoring} benchmarks")
    return out


def modelled_seconds(
    protocol: Mapping[str, Mapping], rates: Mapping[str, Mapping]
) -> dict[str, tuple[float, str]]:
    """Seconds per sample from batch timings: ``rates["likelihood"]`` = {e2e_s, batch},
    ``rates["generate"]`` = {ttft_s, tpot_s, batch}; a generated answer is counted at the protocol's
    ``max_new_tokens`` (an upper bound: answers that stop at EOS cost less)."""
    out = {}
    for name, entry in protocol.items():
        scoring = entry.get("scoring", "generate")
        r = rates.get(scoring)
        if not r:
            continue
        if scoring == "likelihood":
            out[name] = (r["e2e_s"] / r["batch"], "likelihood batch time / batch")
        else:
            n = int(entry.get("max_new_tokens", 16))
            out[name] = ((r["ttft_s"] + (n - 1) * r["tpot_s"]) / r["batch"], f"(ttft + {n - 1} tpot) / batch")
    return out


def suite_estimate(
    protocol: Mapping[str, Mapping], sizes: Mapping[str, int], seconds: Mapping[str, tuple[float, str]]
) -> dict:
    """Estimated wall-clock of every benchmark of ``protocol`` at ``seconds`` per sample."""
    rows, missing = {}, []
    for name in protocol:
        if name not in sizes or name not in seconds:
            missing.append(name)
            continue
        s, basis = seconds[name]
        rows[name] = {
            "samples": int(sizes[name]),
            "s_per_sample": s,
            "basis": basis,
            "estimate_s": sizes[name] * s,
        }
    total = sum(r["estimate_s"] for r in rows.values())
    return {"benchmarks": rows, "total_s": total, "total_h": total / 3600, "missing": missing}
