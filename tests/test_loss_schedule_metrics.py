import math

import pytest
import torch

from mmssm_lightning.eval.metrics import TaskAccuracy
from mmssm_lightning.eval.parsing import box_iou, first_box
from mmssm_lightning.lit.module import warmup_cosine
from mmssm_lightning.models.loss import causal_lm_loss

EYE = -100


def _logits_for(nll_per_position):
    """Two-class logits whose NLL of class 0 at each position is the given value."""
    nll = torch.tensor(nll_per_position, dtype=torch.float)
    p0 = torch.exp(-nll)
    return torch.stack([torch.log(p0), torch.log1p(-p0)], dim=-1)


def test_token_vs_sample_normalisation_hand_checked():
    # Sequence 0 has 3 targets with NLL 1, 2, 3; sequence 1 has one target with NLL 6.
    logits = torch.stack([_logits_for([1, 2, 3, 0.5]), _logits_for([6, 0.5, 0.5, 0.5])])
    labels = torch.tensor([[EYE, 0, 0, 0], [EYE, 0, EYE, EYE]])
    assert causal_lm_loss(logits, labels, "token").item() == pytest.approx((1 + 2 + 3 + 6) / 4, rel=1e-5)
    assert causal_lm_loss(logits, labels, "sample").item() == pytest.approx(
        ((1 + 2 + 3) / 3 + 6) / 2, rel=1e-5
    )


def test_sample_normalisation_skips_sequences_without_targets():
    logits = torch.stack([_logits_for([2, 2, 0.5]), _logits_for([9, 9, 9])])
    labels = torch.tensor([[EYE, 0, EYE], [EYE, EYE, EYE]])
    assert causal_lm_loss(logits, labels, "sample").item() == pytest.approx(2.0, rel=1e-5)
    with pytest.raises(ValueError, match="loss_normalization"):
        causal_lm_loss(logits, labels, "mean")


def test_warmup_cosine():
    total, ratio = 100, 0.1
    assert warmup_cosine(0, total, ratio, 0.0) == pytest.approx(0.1)
    assert warmup_cosine(9, total, ratio, 0.0) == pytest.approx(1.0)
    assert warmup_cosine(10, total, ratio, 0.0) == pytest.approx(1.0)
    assert warmup_cosine(55, total, ratio, 0.0) == pytest.approx(0.5)
    assert warmup_cosine(100, total, ratio, 0.1) == pytest.approx(0.1)
    assert warmup_cosine(32, total, ratio, 0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 22 / 90)))


def test_task_accuracy_hand_checked():
    m = TaskAccuracy(["color", "box"])
    m.update(
        ["Red.", "blue", "[0.1, 0.1, 0.5, 0.5]", "[0, 0, 0.2, 0.2]"],
        ["red", "green", "[0.1, 0.1, 0.5, 0.6]", "[0.5, 0.5, 1, 1]"],
        ["color", "color", "box", "box"],
    )
    out = m.compute()
    assert out["color"].item() == pytest.approx(0.5)
    assert out["box"].item() == pytest.approx(0.5)  # IoU 0.8 hits, IoU 0 misses
    assert out["mean"].item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="'count' is not among"):
        m.update(["1"], ["1"], ["count"])


def test_box_parsing_and_iou():
    assert first_box("the box is [0.12, 0.30, 0.41, 0.62].") == (0.12, 0.30, 0.41, 0.62)
    assert first_box("no box") is None
    assert box_iou((0, 0, 2, 2), (1, 1, 3, 3)) == pytest.approx(1 / 7)
