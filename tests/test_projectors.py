"""Projectors: shapes and layouts, the equations they implement, Q-Mamba's local mask and weight loading."""

import pytest
import torch
from torch import nn

from mmssm_lightning.models.layout import VisualLayout
from mmssm_lightning.models.projectors.ldp import LDPv2Projector
from mmssm_lightning.models.projectors.mamba_projector import MambaProjector
from mmssm_lightning.models.projectors.qmamba import QMambaProjector, local_attention_mask
from mmssm_lightning.models.projectors.vss import VSSProjector
from mmssm_lightning.models.scans import Scan

ONE = VisualLayout(12, (3, 4), 1)
TWO = VisualLayout(24, (3, 4), 2)


def test_local_mask_is_figure_3():
    """Q-Mamba Fig. 3: "Example of local attention mask applied in the cross-attention layer inside
    Querying Mamba with 4 queries (Q) and 9 keys (K). Each query attends exclusively to K/Q keys,
    enabling the focused extraction of information from distinct visual components."

    4 queries over 9 keys: chunks [0,2) [2,4) [4,6) [6,9), a partition of the keys."""
    m = local_attention_mask(4, 9)
    assert [row.nonzero().flatten().tolist() for row in m] == [[0, 1], [2, 3], [4, 5], [6, 7, 8]]
    assert torch.equal(local_attention_mask(729, 729), torch.eye(729, dtype=torch.bool))
    assert torch.equal(local_attention_mask(1, 5), torch.ones(1, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="projector.num_queries=8"):
        local_attention_mask(8, 4)  # a partition would leave some query without a key


@pytest.mark.parametrize(
    ("n", "sizes"), [(128, {5: 39, 6: 89}), (256, {2: 39, 3: 217}), (512, {1: 295, 2: 217}), (729, {1: 729})]
)
def test_local_mask_partitions_729_keys(n, sizes):
    """Q-Mamba §4.1 / Tables 1-2: 729 SigLIP features, 128 / 256 / 512 / 729 queries; Fig. 3: "Each
    query attends exclusively to K/Q keys ... from distinct visual components": every key belongs to
    exactly one query's chunk, chunks are contiguous and in query order, sizes floor/ceil(K/N)."""
    m = local_attention_mask(n, 729)
    assert m.shape == (n, 729)
    assert m.sum(0).tolist() == [1] * 729  # each key in exactly one chunk
    owner = m.int().argmax(0)
    assert owner.tolist() == sorted(owner.tolist()) and owner[0] == 0 and owner[-1] == n - 1
    counts = m.sum(1)
    values, freq = torch.unique(counts, return_counts=True)
    assert dict(zip(values.tolist(), freq.tolist())) == sizes
    assert {int(c) for c in counts} <= {729 // n, -(-729 // n)}
    for row, c in zip(m, counts):  # contiguous: one run of True per query
        idx = row.nonzero().flatten()
        assert idx[-1] - idx[0] + 1 == c


def test_qmamba_query_i_reads_only_its_chunk():
    torch.manual_seed(0)
    p = QMambaProjector(
        16,
        8,
        ONE,
        Scan("bidirectional"),
        num_queries=4,
        width=16,
        depth=1,
        num_heads=2,
        connector=False,
        backend="torch",
    ).eval()
    x = torch.randn(1, 12, 16)
    base = p(x)
    assert base.shape == (1, 4, 8) and p.out_layout == VisualLayout(4)
    mask = local_attention_mask(4, 12)
    for j in range(12):
        x2 = x.clone()
        x2[0, j] += 5.0
        changed = (p(x2) - base).abs().amax(-1)[0] > 1e-6
        # depth 1: the Mamba over queries sees no keys, so only queries whose chunk holds key j move
        assert changed.tolist() == mask[:, j].tolist()
    glob = QMambaProjector(
        16,
        8,
        ONE,
        Scan("forward"),
        num_queries=4,
        width=16,
        depth=1,
        num_heads=2,
        attention="global",
        connector=False,
        backend="torch",
    )
    assert glob.mask is None


def test_qmamba_takes_hf_mamba_weights(tmp_path):
    from transformers import MambaConfig, MambaForCausalLM

    hf = MambaForCausalLM(
        MambaConfig(
            hidden_size=32, num_hidden_layers=3, state_size=16, expand=2, conv_kernel=4, vocab_size=64
        )
    )
    hf.save_pretrained(tmp_path / "mamba")
    p = QMambaProjector(
        24,
        40,
        ONE,
        Scan("bidirectional"),
        num_queries=6,
        width=32,
        depth=2,
        num_heads=4,
        pretrained_mamba=str(tmp_path / "mamba"),
        backend="torch",
    )
    sd = hf.state_dict()
    for i in range(2):
        assert torch.equal(p.blocks[i].mixer.A_log, sd[f"backbone.layers.{i}.mixer.A_log"])
        assert torch.equal(p.blocks[i].mixer.in_proj.weight, sd[f"backbone.layers.{i}.mixer.in_proj.weight"])
        assert torch.equal(p.blocks[i].norm.weight, sd[f"backbone.layers.{i}.norm.weight"])
    assert torch.equal(p.norm_f.weight, sd["backbone.norm_f.weight"])
    assert p.load_mamba_state_dict(sd) == 1 + 2 * 10  # norm_f + per layer: norm + 9 mixer tensors
    with pytest.raises(ValueError, match="projector.width"):
        QMambaProjector(
            24, 40, ONE, Scan("forward"), num_queries=6, width=48, depth=2, num_heads=4, backend="torch"
        ).load_mamba_state_dict(sd)
    with pytest.raises(ValueError, match="depth"):
        QMambaProjector(
            24, 40, ONE, Scan("forward"), num_queries=6, width=32, depth=4, num_heads=4, backend="torch"
        ).load_mamba_state_dict(sd)


def test_qmamba_connector_from_a_vl_mamba_checkpoint(tmp_path):
    vl = VSSProjector(24, 40, ONE, Scan("bidirectional"), variant="l2", backend="torch")
    ckpt = tmp_path / "vl.ckpt"
    torch.save({"state_dict": {f"model.projector.{k}": v for k, v in vl.state_dict().items()}}, ckpt)
    p = QMambaProjector(
        24,
        40,
        ONE,
        Scan("bidirectional"),
        num_queries=4,
        width=16,
        depth=1,
        num_heads=2,
        connector_ckpt=str(ckpt),
        backend="torch",
    )
    for k, v in vl.state_dict().items():
        assert torch.equal(p.connector.state_dict()[k], v)
    with pytest.raises(ValueError, match="not a matching VL-Mamba connector"):
        QMambaProjector(
            24,
            40,
            ONE,
            Scan("bidirectional"),
            num_queries=4,
            width=16,
            depth=1,
            num_heads=2,
            connector_variant="mlp",
            connector_ckpt=str(ckpt),
            backend="torch",
        )
    with pytest.raises(FileNotFoundError, match="connector_ckpt"):
        QMambaProjector(
            24,
            40,
            ONE,
            Scan("bidirectional"),
            num_queries=4,
            width=16,
            depth=1,
            num_heads=2,
            connector_ckpt=str(tmp_path / "nope.ckpt"),
            backend="torch",
        )


def test_vss_mlp_is_equation_5_and_vss_l2_is_equation_6():
    torch.manual_seed(0)
    x = torch.randn(2, 12, 16)
    mlp = VSSProjector(16, 8, ONE, Scan("bidirectional"), variant="mlp", backend="torch")
    assert torch.allclose(mlp(x), mlp.head(mlp.norm(mlp.vss(x) + x)))
    assert mlp.vss.mamba.in_proj.in_features == 16  # the VSS runs at the vision width
    l2 = VSSProjector(16, 8, ONE, Scan("bidirectional"), variant="l2", backend="torch")
    v = l2.linear_in(x)
    assert torch.allclose(l2(x), l2.head(l2.norm(l2.vss(nn.functional.gelu(v)) + v)))
    assert l2.vss.mamba.in_proj.in_features == 8  # ... and at the LLM width in VSS-L2


def test_vss_with_forward_scan_is_one_mamba_layer_and_bidirectional_averages_both_ways():
    torch.manual_seed(0)
    x = torch.randn(2, 12, 16)
    fwd = VSSProjector(16, 8, ONE, Scan("forward"), variant="mlp", backend="torch")
    assert torch.allclose(fwd.vss(x), fwd.vss.mamba(x), atol=1e-6)
    bi = VSSProjector(16, 8, ONE, Scan("bidirectional"), variant="mlp", backend="torch")
    bi.vss.mamba.load_state_dict(fwd.vss.mamba.state_dict())
    both = (fwd.vss.mamba(x) + fwd.vss.mamba(x.flip(1)).flip(1)) / 2
    assert torch.allclose(bi.vss(x), both, atol=1e-6)


def test_mamba_projector_scans_the_long_sequence():
    torch.manual_seed(0)
    stitch = MambaProjector(16, 8, TWO, Scan("cross_stitch"), hidden_dim=12, backend="torch")
    cat = MambaProjector(16, 8, TWO, Scan("cross_cat"), hidden_dim=12, backend="torch")
    cat.load_state_dict(stitch.state_dict())  # same weights, only the scan order differs
    x = torch.randn(2, 24, 16)
    assert stitch(x).shape == (2, 24, 8) and stitch.out_layout == TWO
    assert stitch.ssm.num_directions == 4 and stitch.ssm.x_proj_weight.shape[0] == 4
    assert not torch.allclose(stitch(x), cat(x), atol=1e-4)
    # Sequence-fused maps must be scanned as two maps: one map of 24 tokens is refused.
    with pytest.raises(ValueError, match="cross_stitch"):
        MambaProjector(16, 8, VisualLayout(12, (3, 4), 1), Scan("cross_stitch"), backend="torch")
    with pytest.raises(ValueError, match="patch grid"):
        MambaProjector(16, 8, VisualLayout(13), Scan("cross"), backend="torch")


@pytest.mark.parametrize("name", ["forward", "backward"])
def test_mamba_projector_puts_each_output_back_on_its_patch(name):
    """With no spatial conv mixing (1 x 1), a forward scan makes output i depend on patches <= i
    only, a backward scan on patches >= i: so the merge put every output back on its own patch."""
    torch.manual_seed(0)
    p = MambaProjector(16, 8, ONE, Scan(name), hidden_dim=12, conv_size=1, backend="torch")
    x = torch.randn(1, 12, 16)
    y = p(x)
    for j in (0, 5, 11):
        x2 = x.clone()
        x2[0, j] += torch.randn(16)  # not a constant shift, which the input LayerNorm would remove
        moved = (p(x2) - y).abs().amax(-1)[0] > 1e-6
        want = [i >= j for i in range(12)] if name == "forward" else [i <= j for i in range(12)]
        assert moved.tolist() == want


def test_ldpv2_pools_each_map():
    p = LDPv2Projector(16, 8, TWO, pool_size=2)
    x = torch.randn(3, 24, 16)
    out = p(x)
    assert out.shape == (3, 8, 8) and p.out_layout == VisualLayout(8, (2, 2), 2)
    # Token reduction is a 2-D average of the transformed features; PEG adds a depthwise conv on top.
    t = p.mlp(x).view(3, 2, 3, 4, 8).permute(0, 1, 4, 2, 3).reshape(6, 8, 3, 4)
    pooled = nn.functional.adaptive_avg_pool2d(t, 2)
    want = (pooled + p.peg(pooled)).flatten(2).transpose(1, 2).reshape(3, 8, 8)
    assert torch.allclose(out, want, atol=1e-6)
    with pytest.raises(ValueError, match="pool_size"):
        LDPv2Projector(16, 8, ONE, pool_size=14)
