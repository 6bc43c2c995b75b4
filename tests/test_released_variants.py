"""Where the authors' released code departs from their paper, the released variant as a config
option: Cobra's LDPv2 with a 4x first layer, Pythia-VL's EVA02 features through the final norm."""

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import nn

from mmssm_lightning.models.encoders import TimmEncoder
from mmssm_lightning.models.layout import VisualLayout
from mmssm_lightning.models.projectors.ldp import LDPv2Projector
from tests.conftest import compose_cfg


def _ldp(tmp_path, projector: str, **kw) -> LDPv2Projector:
    cfg = compose_cfg(tmp_path, ["experiment=cobra/ldpv2", f"projector={projector}"], small_data=False)
    return instantiate(cfg.projector, _convert_="all")(**kw)


def test_cobra_released_ldpv2_first_layer_is_2176_to_8704_to_2560(tmp_path):
    """Cobra §3.2: "the lightweight downsample projector suggested by [10] (MobileVLM v2)": its
    point-wise layers map the vision width to the LLM width (2176 -> 2560 -> 2560); Cobra's released
    FusedLDPProjector (cobra/util/nn_utils.py @4b81082) maps 2176 -> 8704 -> 2560. Both pool the
    27 x 27 grid to "(14 x 14)" and add the PEG."""
    fused = VisualLayout(729, (27, 27), 1)
    with torch.device("meta"):
        paper = _ldp(tmp_path, "ldpv2", in_dim=2176, out_dim=2560, layout=fused)
        released = _ldp(tmp_path, "ldpv2_released", in_dim=2176, out_dim=2560, layout=fused)
    shapes = lambda p: [tuple(m.weight.shape) for m in p.mlp if isinstance(m, nn.Linear)]  # noqa: E731
    assert shapes(paper) == [(2560, 2176), (2560, 2560)]
    assert shapes(released) == [(8704, 2176), (2560, 8704)]
    n = lambda p: sum(t.numel() for t in p.parameters())  # noqa: E731
    peg = 2560 * 9 + 2560
    assert n(released) == 2176 * 8704 + 8704 + 8704 * 2560 + 2560 + peg == 41_259_008
    assert n(paper) == 2176 * 2560 + 2560 + 2560 * 2560 + 2560 + peg == 12_154_880
    out = released(torch.empty(1, 729, 2176, device="meta"))
    assert out.shape == (1, 196, 2560) and released.out_layout == VisualLayout(196, (14, 14), 1)


def test_released_ldpv2_computes_linear_gelu_linear_pool_peg():
    torch.manual_seed(0)
    p = LDPv2Projector(6, 8, VisualLayout(16, (4, 4), 1), pool_size=2, fused_expansion=4).eval()
    x = torch.randn(2, 16, 6)
    l1, l2 = p.mlp[0], p.mlp[2]
    assert l1.weight.shape == (24, 6)
    h = F.linear(F.gelu(F.linear(x, l1.weight, l1.bias)), l2.weight, l2.bias)  # (2, 16, 8)
    grid = h.transpose(1, 2).reshape(2, 8, 4, 4)
    pooled = grid.reshape(2, 8, 2, 2, 2, 2).mean((3, 5))  # 4 x 4 -> 2 x 2, each cell a 2 x 2 mean
    peg = F.conv2d(pooled, p.peg.weight, p.peg.bias, padding=1, groups=8)
    want = (pooled + peg).flatten(2).transpose(1, 2)
    torch.testing.assert_close(p(x), want, rtol=1e-5, atol=1e-6)


EVA = {
    "model_name": "eva02_large_patch14_clip_336",  # the Pythia-VL tower, shrunk
    "image_size": 56,
    "model_kwargs": {"embed_dim": 32, "depth": 2, "num_heads": 2},
}


def test_released_eva02_features_are_timms_forward_features():
    """Pythia-VL App. B: "we obtain visual features from the last layer of the EVA model"; the released
    code (gpantaz/vl_mamba@c788f5f, modeling_vlmambaclip.py get_patch_embeddings) takes timm's
    ``forward_features`` (last block, then the final LayerNorm) and drops the CLS token.
    ``final_norm=true`` gives exactly that; the default is the last block's output without the norm."""
    torch.manual_seed(0)
    released = TimmEncoder(**EVA, feature_layer=-1, final_norm=True).eval()
    torch.manual_seed(0)
    paper = TimmEncoder(**EVA, feature_layer=-1).eval()
    assert isinstance(released.model.norm, nn.LayerNorm) and isinstance(paper.model.norm, nn.Identity)
    x = torch.rand(2, 3, 56, 56)
    with torch.no_grad():
        want = released.model.forward_features((x - released.mean) / released.std)[:, 1:]
        got = released(x)
        block = paper(x)
    assert got.shape == (2, 16, 32)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got, released.model.norm(block))
    assert (got - block).abs().max() > 0.1  # the norm changes the features


def test_pythia_vl_tower_takes_the_final_norm_as_an_option(tmp_path):
    cfg = compose_cfg(tmp_path, ["experiment=pythia_vs_mamba/mamba_1.4b"], small_data=False)
    assert cfg.encoder.towers.eva02.final_norm is False
    cfg.encoder.towers.eva02.pretrained = False
    cfg.encoder.towers.eva02.final_norm = True
    with torch.device("meta"):
        tower = instantiate(cfg.encoder, _convert_="all")
    norm = tower.towers["eva02"].model.norm
    assert isinstance(norm, nn.LayerNorm) and norm.normalized_shape == (1024,)
    assert tower(torch.empty(1, 3, 336, 336, device="meta")).shape == (1, 576, 1024)


def test_released_framing_opens_and_closes_the_image_with_three_hashes(tmp_path):
    """Pythia-VL §3.2: "we overcome this issue by introducing a separator token ("##") that signals
    the beginning and the end of the image sequence, as well as an image-newline character ("&&")
    that depicts the end of a row of patches"; the released code's SpecialTokens use "###" for the
    image's begin and end (framing=fuyu_released). Rows and separators are laid out alike."""
    from mmssm_lightning.data.synthetic import corpus
    from mmssm_lightning.models.tokenizer import synthetic_bpe_tokenizer

    tok = synthetic_bpe_tokenizer(1024, corpus=corpus())
    layout = VisualLayout(576, (24, 24), 1)
    framings = {}
    for name in ("fuyu", "fuyu_released"):
        cfg = compose_cfg(
            tmp_path, ["experiment=pythia_vs_mamba/mamba_1.4b", f"framing={name}"], small_data=False
        )
        framings[name] = instantiate(cfg.framing)
    paper, released = (f.token_ids(tok) for f in framings.values())
    assert tok.decode(paper["begin"]) == tok.decode(paper["end"]) == "##"
    assert tok.decode(released["begin"]) == tok.decode(released["end"]) == "###"
    assert paper["row_sep"] == released["row_sep"] and tok.decode(released["row_sep"]) == "&&"
    # 576 patches + 23 row separators + begin + end (one token each in GPT-NeoX's vocabulary).
    n = lambda ids: 576 + 23 * len(ids["row_sep"]) + len(ids["begin"]) + len(ids["end"])  # noqa: E731
    assert framings["fuyu_released"].num_tokens(layout, released) == n(released)
    assert framings["fuyu"].num_tokens(layout, paper) == n(paper)
