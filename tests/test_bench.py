"""Benchmarks on CPU with tiny models: the generation protocol's bookkeeping, the FLOP count of
MFU against a hand count, the throughput callback's summary, the evaluation-speed script's dry run
and the non-chaotic initialisation it uses for batch invariance at scale."""

import json

import pytest
import torch
from hydra import compose, initialize_config_dir

from mmssm_lightning.bench.cli import run_generation
from mmssm_lightning.bench.throughput import training_flops
from mmssm_lightning.constants import CONF_DIR
from mmssm_lightning.train import run
from tests.conftest import SHARED_CACHE, compose_cfg


def test_generation_protocol_bookkeeping(tmp_path):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            "bench",
            overrides=[
                "device=cpu",
                "run=[cobra,pythia_vl]",
                f"paths.root_dir={tmp_path}",
                f"paths.cache_dir={SHARED_CACHE}",
                "encoder@models.cobra.encoder=tiny_dual_channel",
                "llm@models.cobra.llm=tiny_mamba",
                "encoder@models.pythia_vl.encoder=tiny_dual_channel",
                "llm@models.pythia_vl.llm=tiny_pythia",
                "new_tokens=6",
                "batch_sizes=[1,2]",
                "repeats=2",
                "dtype=float32",
                f"output={tmp_path}/gen.json",
            ],
        )
    report = run_generation(cfg)
    assert json.loads((tmp_path / "gen.json").read_text()) == json.loads(json.dumps(report))
    for name, path in (
        ("cobra", "mamba_static_state_op_kernels_linear"),
        ("pythia_vl", "hf_generate_static_cache"),
    ):
        entry = report["models"][name]
        assert "error" not in entry, entry.get("error")
        assert entry["visual_tokens"] == 64
        for b in (1, 2):
            r = entry[f"batch_{b}"]
            assert r["decode_path"] == path and r["batch"] == b and len(r["runs"]) == 2
            assert r["total_s"] == pytest.approx(r["prefill_s"] + r["decode_s"], rel=1e-6)
            assert r["tokens_per_s"] == pytest.approx(6 / r["total_s"])
            assert r["aggregate_tokens_per_s"] == pytest.approx(b * 6 / r["total_s"])
    assert (
        report["models"]["cobra"]["llm_weight_bytes"] == 4 * report["models"]["cobra"]["llm_params"]
    )  # tied head
    # untied Pythia: the input embedding (1024 x 128 fp32) is gathered, not read whole
    pythia = report["models"]["pythia_vl"]
    assert pythia["llm_weight_bytes"] == 4 * (pythia["llm_params"] - 1024 * 128)


def test_training_flops_hand_count():
    counts = {
        "llm_matmul_params": 1000,
        "llm_layers": 2,
        "llm_hidden": 8,
        "llm_attention": False,
        "projector_params": 100,
        "image_tokens": 10,
        "towers": {"a": (500, 10)},
    }
    # single stage: LLM 6 x 1000 x 30 tokens, projector 4 x 100 x 10 (no input grad: towers frozen),
    # frozen tower 2 x 500 x 10
    assert (
        training_flops(counts, [30], 1, {"projector", "llm"}) == 6 * 1000 * 30 + 4 * 100 * 10 + 2 * 500 * 10
    )
    # align: the frozen LLM still passes gradients back to the projector (4 N per token)
    assert training_flops(counts, [30], 1, {"projector"}) == 4 * 1000 * 30 + 4 * 100 * 10 + 2 * 500 * 10
    # attention: + 4 L h T per token forward, tripled by the two backward passes
    attn = {**counts, "llm_attention": True}
    assert training_flops(attn, [30, 20], 2, {"projector", "llm"}) == (
        3 * ((2 * 1000 + 4 * 2 * 8 * 30) * 30 + (2 * 1000 + 4 * 2 * 8 * 20) * 20)
        + 2 * (4 * 100 * 10 + 2 * 500 * 10)
    )


def test_throughput_callback_summary(tmp_path):
    cfg = compose_cfg(
        tmp_path,
        [
            "experiment=benchmarks/cobra_throughput",
            "encoder=tiny_dual_channel",
            "llm=tiny_mamba",
            "trainer=cpu",
            "data.text_tokens=16",
            "data.global_batch_size=4",
            "data.per_device_batch_size=4",
            "data.num_workers=0",
            "trainer.max_steps=4",
            "callbacks.throughput.warmup_batches=1",
            f"callbacks.throughput.output={tmp_path}/t.json",
        ],
        small_data=False,
    )
    run(cfg)
    s = json.loads((tmp_path / "t.json").read_text())
    assert s["measured_micro_batches"] == 3 and s["devices"] == 1
    assert s["samples_per_s"] == pytest.approx(4 / s["micro_batch_s"])
    assert s["tokens_per_s"] == pytest.approx(s["samples_per_s"] * (64 + 16))  # image tokens + text
    assert 0 < s["mfu"] < 1
    assert s["flop_counts"]["image_tokens"] == 64 and set(s["flop_counts"]["towers"]) == {"vit", "siglip"}


@pytest.mark.slow
def test_eval_speed_dry_run_writes_every_number(tmp_path):
    """scripts/bench_eval_speed.py --tiny: the GPU run's code top to bottom on CPU."""
    from mmssm_lightning.bench.eval_speed import TARGETS, main

    out = tmp_path / "eval_speed.json"
    args = ["--tiny", "--batches", "1", "--warmup", "0", "--b1-batches", "2", "--invariance-prompts", "4"]
    args += ["--output", str(out)]
    report = main(args)
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    for path in ("ours", "baseline"):
        entry = report[path]
        for key in TARGETS:
            assert entry[key] > 0, (path, key, entry[key.removesuffix("_samples_per_s")])
        assert entry["generate16_b16"]["batch"] == 16 and entry["generate16_b1"]["batch"] == 1
        assert entry["generate16_b16"]["tpot_s"] > 0 and entry["likelihood_b16"]["ttft_s"] > 0
        inv = report["batch_invariance"][path]
        assert inv["prompts"] == 4 and inv["greedy_sequences_equal"] == 1.0 and inv["max_abs_dlogprob"] < 1e-4
    assert report["ours"]["engine"] == "mamba_static_state" and report["baseline"]["engine"].startswith("hf")
    assert {k: report[k] for k in TARGETS} == {k: report["ours"][k] for k in TARGETS}
    assert set(report["ours"]["breakdown_b16_ms"]) >= {"towers", "splice", "llm_prefill", "decode_step"}
    cobra = report["suite_estimates"]["cobra"]["ours"]
    assert not cobra["missing"] and cobra["benchmarks"]["pope"]["samples"] == 9000
    assert cobra["total_s"] == pytest.approx(sum(b["estimate_s"] for b in cobra["benchmarks"].values()))
    assert set(report["suite_estimates"]) == {"cobra", "llava", "q_mamba", "pythia_vl"}
    assert report["git"]["sha"] and report["versions"]["torch"] and report["command"]


def test_mamba_ssm_init_bounds_and_residual_scaling():
    import math

    from transformers import MambaConfig, MambaForCausalLM

    from mmssm_lightning.bench.init import mamba_ssm_init, perturbation_gain

    torch.manual_seed(0)
    lm = MambaForCausalLM(
        MambaConfig(hidden_size=32, num_hidden_layers=9, state_size=4, vocab_size=50)
    ).eval()
    mamba_ssm_init(lm, seed=3)
    m = lm.backbone.layers[0].mixer
    # U(+-1/sqrt(fan_in)), out_proj further / sqrt(n_layer) = / 3
    assert m.in_proj.weight.abs().max() <= 1 / math.sqrt(32)
    assert m.in_proj.weight.abs().max() > 0.9 / math.sqrt(32)
    assert m.out_proj.weight.abs().max() <= 1 / math.sqrt(64) / 3
    assert m.out_proj.weight.abs().max() > 0.9 / math.sqrt(64) / 3
    assert lm.backbone.embeddings.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert torch.equal(m.A_log[3], torch.log(torch.arange(1.0, 5.0)))
    dt = torch.nn.functional.softplus(m.dt_proj.bias)
    assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 0.1 * 1.001
    # a relative input change of 1e-3 stays of that order through the stack
    assert 1e-4 < perturbation_gain(lm, length=32) < 1e-2
