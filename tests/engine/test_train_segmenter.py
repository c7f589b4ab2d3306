"""Segmentation training loop: loss with unknown / partial labels, metrics, a tiny run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shindan.engine.train_segmenter import (
    IGNORE,
    TrainConfig,
    confusion,
    dice_ce_loss,
    dice_from_confusion,
    train_segmenter,
    use_bf16,
    validation_score,
)
from tests.helpers import seg_card_dict


def test_loss_skips_unknown_pixels() -> None:
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 8, 8)
    target = torch.randint(0, 3, (1, 8, 8))
    target[0, :4] = IGNORE
    base = dice_ce_loss(logits, target)
    changed = logits.clone()
    changed[0, :, :4] = torch.randn(3, 4, 8) * 10  # only unknown pixels change
    assert torch.isclose(base, dice_ce_loss(changed, target))
    assert dice_ce_loss(logits, torch.full((1, 8, 8), IGNORE)).item() == 0.0


def test_partial_label_set_loss() -> None:
    # code 254 = "class 1 or 2": a pixel confident in class 1 costs ~0, in class 0 a lot
    sets = {254: [1, 2]}
    target = torch.full((1, 1, 1), 254)
    good = torch.tensor([[-10.0, 10.0, -10.0]]).view(1, 3, 1, 1)
    bad = torch.tensor([[10.0, -10.0, -10.0]]).view(1, 3, 1, 1)
    assert dice_ce_loss(good, target, label_sets=sets).item() < 1e-3
    assert dice_ce_loss(bad, target, label_sets=sets).item() > 5


def test_confusion_and_dice() -> None:
    t = np.array([[0, 1, 1, 255], [2, 2, 254, 1]])
    p = np.array([[0, 1, 0, 2], [2, 1, 2, 1]])
    cm = confusion(p, t, 3)
    assert cm.sum() == 6  # 255 and 254 are skipped
    d = dice_from_confusion(cm)
    assert d[0] == pytest.approx(2 / 3) and d[2] == pytest.approx(2 / 3)


def test_validation_score_averages_groups_over_their_classes() -> None:
    big = np.array([[0, 0], [10, 990]])  # class 1 only, Dice 0.995
    small = np.array([[50, 50], [50, 50]])  # both classes, Dice 0.5 each
    score, groups = validation_score({"big": big, "small": small}, [0, 1])
    # a class absent from a group's truth is not scored there (big: class 0 only predicted)
    assert groups["big"] == pytest.approx(990 * 2 / (2 * 990 + 10))
    assert score == pytest.approx((groups["big"] + 0.5) / 2)
    pooled, _ = validation_score({"all": big + small}, [0, 1])
    assert pooled != pytest.approx(score)  # pooling lets the big group dominate class 1
    assert validation_score({}, [0, 1]) == (0.0, {})


def _card() -> dict:
    return seg_card_dict(classes=2, decoder_channels=(16, 8, 8))


def _sampler(rng: np.random.Generator):
    img = np.full((32, 32, 3), 200, np.uint8)
    lab = np.zeros((32, 32), np.uint8)
    y, x = rng.integers(0, 20, 2)
    img[y : y + 12, x : x + 12] = 40
    lab[y : y + 12, x : x + 12] = 1
    lab[:2] = IGNORE
    return img, lab


def test_tiny_training_learns_and_reports() -> None:
    rng = np.random.default_rng(1)
    val = [_sampler(rng) for _ in range(3)]
    saved = []
    cfg = TrainConfig(steps=30, batch_size=4, lr=5e-3, warmup=3, eval_every=10, patience=5, seed=0)
    net, res = train_segmenter(
        _card(),
        _sampler,
        val,
        cfg,
        progress=False,
        on_best=lambda n, r: saved.append(r["best_dice"]),
    )
    assert torch.get_num_threads() == 1
    assert len(res["history"]) == 3 and saved
    assert res["best_dice"] == pytest.approx(max(h["mean_dice"] for h in res["history"]), abs=1e-4)
    assert res["history"][0]["loss"] > res["history"][-1]["loss"]
    assert res["best_dice"] > 0.6
    assert not net.training


def test_grouped_validation_is_reported_per_group() -> None:
    rng = np.random.default_rng(3)
    val = {"a": [_sampler(rng)], "b": [_sampler(rng), _sampler(rng)]}
    cfg = TrainConfig(steps=10, batch_size=2, lr=5e-3, warmup=2, eval_every=5, seed=0)
    _, res = train_segmenter(_card(), _sampler, val, cfg, progress=False)
    for h in res["history"]:
        assert set(h["group_dice"]) == {"a", "b"}
        assert h["mean_dice"] == pytest.approx(np.mean(list(h["group_dice"].values())), abs=2e-4)
    assert set(res["group_dice"]) == {"a", "b"}
    _, single = train_segmenter(_card(), _sampler, val["b"], cfg, progress=False)
    assert "group_dice" not in single["history"][0]


def test_early_stopping() -> None:
    rng = np.random.default_rng(2)
    val = [_sampler(rng)]
    cfg = TrainConfig(
        steps=100, batch_size=2, lr=0.0, warmup=1, eval_every=2, patience=2, seed=0
    )  # lr 0: never improves after the first validation
    _, res = train_segmenter(_card(), _sampler, val, cfg, progress=False)
    assert len(res["history"]) == 3


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_both_precisions_learn(precision: str) -> None:
    rng = np.random.default_rng(1)
    val = [_sampler(rng) for _ in range(3)]
    cfg = TrainConfig(
        steps=30, batch_size=4, lr=5e-3, warmup=3, eval_every=10, seed=0, precision=precision
    )
    _, res = train_segmenter(_card(), _sampler, val, cfg, progress=False)
    assert res["config"]["precision"] == precision
    assert res["best_dice"] > 0.6


def test_precision_is_checked() -> None:
    assert use_bf16("bf16") and not use_bf16("fp32")
    with pytest.raises(ValueError, match="precision must be"):
        use_bf16("fp16")


def test_partial_label_false_positives_count_in_dice() -> None:
    # 254 = "class 0 or 1": predicting class 2 there is a false positive of class 2
    t = np.array([[2, 2, 254, 254]])
    p = np.array([[2, 2, 2, 0]])
    assert dice_from_confusion(confusion(p, t, 3))[2] == 1.0  # blind to it without sets
    cm = confusion(p, t, 3, {254: [0, 1]})
    assert cm.shape == (4, 3) and cm[3].tolist() == [0, 0, 1]
    assert dice_from_confusion(cm)[2] == pytest.approx(4 / 5)


def test_for_steps_warmup_is_a_tenth_at_most_100() -> None:
    assert TrainConfig.for_steps(30, lr=1e-3).warmup == 4
    assert TrainConfig.for_steps(5000).warmup == 100
    assert TrainConfig.for_steps(30, lr=1e-3).lr == 1e-3
