"""Benchmarks on CPU with tiny models: the generation protocol's bookkeeping, the FLOP count of
MFU against a hand count, and the throughput callback's summary."""

import json

import pytest
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
