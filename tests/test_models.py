import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from mmssm_lightning.build import build_model
from mmssm_lightning.constants import IGNORE_INDEX, IMAGE_TOKEN_ID
from mmssm_lightning.inference import Engine
from mmssm_lightning.models.encoders import TimmEncoder, VisionTower
from mmssm_lightning.models.layout import VisualLayout
from mmssm_lightning.models.loss import causal_lm_loss
from mmssm_lightning.models.projectors.mlp import MLPProjector


def _batch(model, batch_size=3, img_first=True):
    tok = model.tokenizer
    rows, labels = [], []
    for i in range(batch_size):
        q = tok(f"Is there a red circle{'?' * (i + 1)}", add_special_tokens=False)["input_ids"]
        a = tok("yes", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        ids = ([IMAGE_TOKEN_ID] if img_first else []) + q + a
        rows.append(torch.tensor(ids))
        labels.append(torch.tensor([IGNORE_INDEX] * (len(ids) - len(a)) + a))
    L = max(len(r) for r in rows)
    input_ids = torch.full((batch_size, L), tok.pad_token_id)
    lab = torch.full((batch_size, L), IGNORE_INDEX)
    mask = torch.zeros(batch_size, L, dtype=torch.long)
    for i, (r, lb) in enumerate(zip(rows, labels)):
        input_ids[i, : len(r)], lab[i, : len(lb)], mask[i, : len(r)] = r, lb, 1
    size = model.vision.image_size
    return input_ids, mask, torch.rand(batch_size, 3, size, size), lab


@pytest.mark.parametrize("encoder", ["tiny", "tiny_dual_channel", "tiny_dual_sequence"])
@pytest.mark.parametrize("llm", ["tiny_mamba", "tiny_pythia", "tiny_llama"])
def test_forward_backward_every_fusion_and_llm(cfg_factory, encoder, llm):
    cfg = cfg_factory([f"encoder={encoder}", f"llm={llm}"])
    model = build_model(cfg)
    ids, mask, pixels, labels = _batch(model)
    logits, out_labels = model(ids, mask, pixels, labels)
    n_vis = {"tiny": 64, "tiny_dual_channel": 64, "tiny_dual_sequence": 128}[encoder]
    assert model.vision.num_tokens == n_vis
    assert logits.shape == (3, ids.shape[1] - 1 + n_vis, model.llm.model.config.vocab_size)
    assert out_labels.shape == logits.shape[:2]
    # Spliced labels keep exactly the answer tokens.
    assert (out_labels != IGNORE_INDEX).sum() == (labels != IGNORE_INDEX).sum()
    loss = causal_lm_loss(logits, out_labels)
    assert torch.isfinite(loss) and loss.item() > 0
    # The training loss runs the LM head on supervised positions only: same number, both normalisations.
    for norm in ("token", "sample"):
        full = causal_lm_loss(logits, out_labels, norm)
        assert model.loss(ids, mask, pixels, labels, norm).item() == pytest.approx(full.item(), rel=1e-5)
    loss.backward()
    assert all(p.grad is not None for p in model.projector.parameters())
    assert all(p.grad is None for p in model.vision.parameters())  # frozen towers get no gradient


def test_tower_token_counts_and_prefix_drop():
    kw = {
        "model_name": "vit_small_patch16_224",
        "image_size": 64,
        "model_kwargs": {"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2, "reg_tokens": 4},
    }
    drop = TimmEncoder(**kw)
    keep = TimmEncoder(**kw, drop_prefix_tokens=False)
    x = torch.rand(2, 3, 64, 64)
    assert drop(x).shape == (2, 64, 32)
    assert keep(x).shape == (2, 69, 32)  # CLS + 4 registers kept
    keep.load_state_dict(drop.state_dict())
    assert torch.allclose(keep(x)[:, 5:], drop(x))


def test_feature_layer_selects_that_block_output():
    kw = {
        "model_name": "vit_small_patch16_224",
        "image_size": 32,
        "model_kwargs": {"patch_size": 8, "embed_dim": 32, "depth": 3, "num_heads": 2},
    }
    torch.manual_seed(0)
    full = TimmEncoder(**kw, feature_layer=-1)
    first = TimmEncoder(**kw, feature_layer=0)
    first.load_state_dict(full.state_dict(), strict=False)
    assert len(first.model.blocks) == 1  # later blocks pruned
    x = torch.rand(1, 3, 32, 32)
    m = full.model
    h = m._pos_embed(m.patch_embed((x - full.mean) / full.std))
    h = m.norm_pre(m.patch_drop(h))
    h = m.blocks[0](h)
    assert torch.allclose(first(x), h[:, m.num_prefix_tokens :], atol=1e-6)
    with pytest.raises(ValueError, match="feature_layer"):
        TimmEncoder(**kw, feature_layer=5)


def test_fusion_layouts():
    def tower(dim, **extra):
        return TimmEncoder(
            "vit_small_patch16_224",
            image_size=32,
            model_kwargs={"patch_size": 8, "embed_dim": dim, "depth": 2, "num_heads": 2, **extra},
        )

    a, b = tower(32), tower(48, class_token=False, global_pool="avg")
    x = torch.rand(2, 3, 32, 32)
    ch = VisionTower({"a": a, "b": b}, fuse="channel")
    seq = VisionTower({"a": a, "b": b}, fuse="sequence")
    assert ch(x).shape == (2, 16, 80) and ch.embed_dim == 80
    assert seq(x).shape == (2, 32, 48) and seq.layout == VisualLayout(32, (4, 4), 2)
    assert torch.allclose(ch(x)[..., :32], a(x))
    assert torch.allclose(seq(x)[:, :16, :32], a(x)) and torch.all(seq(x)[:, :16, 32:] == 0)
    assert torch.allclose(seq(x)[:, 16:], b(x))
    with pytest.raises(ValueError, match="image_size"):
        VisionTower(
            {
                "a": a,
                "c": TimmEncoder(
                    "vit_small_patch16_224",
                    image_size=64,
                    model_kwargs={"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2},
                ),
            }
        )


def test_frozen_tower_stays_in_eval_mode(cfg_factory):
    model = build_model(cfg_factory())
    model.train()
    assert not model.vision.training and all(not m.training for m in model.vision.modules())
    assert model.projector.training and model.llm.training


def test_cobra_fused_projector_shapes():
    p = MLPProjector(in_dim=2176, out_dim=2560, num_layers=3, fused_expansion=4)
    linears = [m for m in p.net if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(2176, 8704), (8704, 2560), (2560, 2560)]
    two = MLPProjector(in_dim=1024, out_dim=2048, num_layers=2)
    assert [(m.in_features, m.out_features) for m in two.net if isinstance(m, torch.nn.Linear)] == [
        (1024, 2048),
        (2048, 2048),
    ]


@pytest.mark.parametrize("llm", ["tiny_mamba", "tiny_pythia"])
def test_batched_generation_equals_one_by_one(cfg_factory, llm):
    """Left padding must not change any sample's greedy answer."""
    torch.manual_seed(0)
    model = build_model(cfg_factory([f"llm={llm}"])).eval()
    ids, mask, pixels, _ = _batch(model, batch_size=3)
    # Prompts of different lengths: strip the answers so each row ends at its question.
    prompts = [ids[i, : int(mask[i].sum()) - 2] for i in range(3)]
    L = max(len(p) for p in prompts)
    left = torch.full((3, L), model.tokenizer.pad_token_id)
    lmask = torch.zeros(3, L, dtype=torch.long)
    for i, p in enumerate(prompts):
        left[i, L - len(p) :], lmask[i, L - len(p) :] = p, 1
    engine = Engine(model)
    batched = engine.generate(left, lmask, pixels, max_new_tokens=6)
    single = [
        engine.generate(p[None], torch.ones(1, len(p), dtype=torch.long), pixels[i : i + 1], 6)[0]
        for i, p in enumerate(prompts)
    ]
    assert batched == single


def test_tokenizer_larger_than_embedding_is_a_clear_error(cfg_factory):
    cfg = cfg_factory(["llm.config.vocab_size=100"])
    with pytest.raises(InstantiationException, match="llm.config.vocab_size"):
        instantiate(cfg.llm, _convert_="all")


@pytest.mark.parametrize(
    "encoder, tokens, dim",
    [
        ("dinosiglip_384_channel", 729, 2176),  # Cobra eq. 4
        ("dinosiglip_384_sequence", 1458, 1152),  # MambaVLM visual long sequence
        ("siglip_so400m_384", 729, 1152),
        ("dinov2_l_reg4_384", 729, 1024),
        ("clip_l_336", 576, 1024),
        ("eva02_l_336", 576, 1024),
    ],
)
def test_real_towers_have_the_papers_token_counts(cfg_factory, encoder, tokens, dim):
    """Built on the meta device (no weights, no download): the shapes the papers report."""
    cfg = cfg_factory([f"encoder={encoder}"])
    for name in cfg.encoder.towers:
        cfg.encoder.towers[name].pretrained = False
    with torch.device("meta"):
        tower = instantiate(cfg.encoder, _convert_="all")
    assert (tower.num_tokens, tower.embed_dim) == (tokens, dim)
    assert tower(torch.empty(1, 3, tower.image_size, tower.image_size, device="meta")).shape == (
        1,
        tokens,
        dim,
    )


def test_text_only_and_image_rows_share_a_batch(cfg_factory):
    """LLaVA mixes text-only conversations in; a row without an image marker gets no image tokens."""
    model = build_model(cfg_factory())
    ids, mask, pixels, labels = _batch(model, batch_size=2)
    text_only = ids[1].clone()
    text_only[: int(mask[1].sum()) - 1] = ids[1, 1 : int(mask[1].sum())].clone()  # drop the marker
    ids2, mask2 = ids.clone(), mask.clone()
    ids2[1], mask2[1, int(mask[1].sum()) - 1] = text_only, 0
    embeds, out_mask, out_labels = model.splice(ids2, mask2, model.encode_images(pixels), labels, "right")
    assert out_mask[0].sum() == mask[0].sum() - 1 + 64
    assert out_mask[1].sum() == mask[1].sum() - 1
    assert torch.equal(embeds[1, : int(out_mask[1].sum())], model.llm.embed(ids2[1, : int(mask2[1].sum())]))
