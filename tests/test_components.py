"""One contract per component kind, checked for every option of its config group (timm-style):
every projector of conf/projector/ and every scan of conf/scan/ builds, keeps the projector
contract (models/projectors/base.py), runs forward and backward; every encoder of conf/encoder/,
shrunk to tiny shapes, gives the token count and width its layout says and back-propagates."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from mmssm_lightning.constants import CONF_DIR
from mmssm_lightning.models.layout import VisualLayout
from mmssm_lightning.models.projectors.base import Projector, check_projector
from tests.conftest import compose_cfg


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


# what shrinks an option to CPU size without changing what it is
TINY_PROJECTOR = {
    "ldpv2": ["projector.pool_size=4"],
    "ldpv2_released": ["projector.pool_size=4"],
    "qmamba": [
        "projector.width=32",
        "projector.depth=2",
        "projector.num_heads=2",
        "projector.num_queries=16",
        "projector.pretrained_mamba=null",
        "projector.connector_ckpt=null",
    ],
}
GRID = VisualLayout(64, (8, 8))
TWO_MAPS = VisualLayout(128, (8, 8), num_maps=2)


def _projector(
    tmp_path, option: str, scan: str = "cross", layout: VisualLayout = GRID, in_dim=24, out_dim=40
):
    cfg = compose_cfg(tmp_path, [f"projector={option}", f"scan={scan}", *TINY_PROJECTOR.get(option, [])])
    factory = instantiate(cfg.projector, _convert_="all")
    return check_projector(factory(in_dim=in_dim, out_dim=out_dim, layout=layout), in_dim, out_dim)


def _forward_backward(module: torch.nn.Module, x: torch.Tensor, out_dim: int) -> torch.Tensor:
    x = x.requires_grad_(True)
    y = module(x)
    assert y.shape == (x.shape[0], module.out_layout.num_tokens, out_dim)
    assert torch.isfinite(y).all()
    y.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    params = [p for p in module.parameters() if p.requires_grad]
    assert params and all(p.grad is not None and torch.isfinite(p.grad).all() for p in params)
    return y


@pytest.mark.parametrize("option", _options("projector"))
def test_every_projector_keeps_the_contract_forward_and_backward(tmp_path, option):
    torch.manual_seed(0)
    proj = _projector(tmp_path, option)
    assert isinstance(proj, Projector)
    _forward_backward(proj, torch.randn(2, GRID.num_tokens, 24), 40)
    if proj.out_layout.grid is not None:  # grid-keeping or pooling projectors keep a grid's arithmetic
        rows, cols = proj.out_layout.grid
        assert rows * cols * proj.out_layout.num_maps == proj.out_layout.num_tokens


@pytest.mark.parametrize("scan", _options("scan"))
@pytest.mark.parametrize("option", ["vss_l2", "mamba_projector"])
def test_every_scan_runs_in_the_ssm_projectors(tmp_path, option, scan):
    """The scans read by the SSM projectors (VL-Mamba's VSS, MambaVLM's Mamba projector), on one map
    or, for the two-map scans (cross-stitch, cross-cat), on MambaVLM's two maps."""
    torch.manual_seed(0)
    layout = TWO_MAPS if scan in ("cross_stitch", "cross_cat") else GRID
    proj = _projector(tmp_path, option, scan, layout)
    _forward_backward(proj, torch.randn(2, layout.num_tokens, 24), 40)


def test_a_module_without_out_layout_is_refused():
    with pytest.raises(ValueError, match="must set out_layout"):
        check_projector(torch.nn.Linear(3, 4), 3, 4)


def _tiny_tower(node) -> None:
    """The same timm model class and feature recipe, two blocks of width 64 at 2 x 2 patches."""
    patch = 16 if "patch16" in node.model_name else 8 if "patch8" in node.model_name else 14
    node.pretrained = False
    node.image_size = 2 * patch
    kwargs = OmegaConf.to_container(node.model_kwargs) if node.get("model_kwargs") else {}
    kwargs.update(depth=2, embed_dim=64, num_heads=2)
    node.model_kwargs = kwargs


@pytest.mark.parametrize("option", [o for o in _options("encoder") if o != "none"])
def test_every_encoder_option_at_tiny_shapes(tmp_path, option):
    torch.manual_seed(0)
    cfg = compose_cfg(tmp_path, [f"encoder={option}"])
    OmegaConf.set_struct(cfg, False)
    for tower in cfg.encoder.towers.values():
        _tiny_tower(tower)
    sizes = {t.image_size for t in cfg.encoder.towers.values()}
    size = max(sizes)
    for tower in cfg.encoder.towers.values():  # towers of one encoder see one image
        tower.image_size = size
    encoder = instantiate(cfg.encoder, _convert_="all")
    encoder.freeze = False  # what stage=full does: the towers learn
    encoder.requires_grad_(True)
    pixels = torch.rand(2, 3, size, size)
    feats = encoder(pixels)
    layout = encoder.layout
    assert feats.shape == (2, layout.num_tokens, encoder.embed_dim)
    assert layout.num_tokens == layout.grid[0] * layout.grid[1] * layout.num_maps
    assert layout.num_maps == (len(cfg.encoder.towers) if cfg.encoder.fuse == "sequence" else 1)
    feats.square().mean().backward()
    trained = [p for p in encoder.parameters() if p.requires_grad]
    assert trained and sum(p.grad is not None for p in trained) > 0.5 * len(trained)
