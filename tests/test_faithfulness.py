"""Faithfulness metrics (Average Drop / Increase / Retention, of-others, deletion/insertion)."""

from __future__ import annotations

import itertools
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import wsol
from wsol.cams import compute
from wsol.faithfulness import (
    FaithfulnessMetrics,
    confidences,
    deletion_insertion,
    masked_inputs,
)

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class Halves(nn.Module):
    """Stand-in classifier: logits ``a * [mean(left half), mean(right half), mean(all)] + b``
    of ``rgb ** power`` (RGB in [0, 1]), exposing the attributes of a WSOLModel the metrics use.
    ``power=2`` measures energy, which blurring lowers on a textured image."""

    def __init__(
        self, multilabel: bool = False, a: float = 4.0, b: float = 0.0, power: int = 1
    ) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))
        self.config = SimpleNamespace(multilabel=multilabel, num_classes=3)
        self.a, self.b, self.power = a, b, power

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rgb = (x.double() * self.std.double() + self.mean.double()) ** self.power
        half = rgb.shape[-1] // 2
        means = [rgb[..., :half], rgb[..., half:], rgb]
        return self.a * torch.stack([m.mean(dim=(1, 2, 3)) for m in means], dim=1) + self.b


def image(left: float, right: float, size: int = 8) -> torch.Tensor:
    """Normalized input [3, size, size] whose RGB is ``left`` / ``right`` on each half."""
    rgb = torch.full((3, size, size), right, dtype=torch.float64)
    rgb[..., : size // 2] = left
    return (rgb - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)


def half_map(side: str, value: float = 1.0, size: int = 8) -> torch.Tensor:
    m = torch.zeros(size, size, dtype=torch.float64)
    if side == "left":
        m[:, : size // 2] = value
    else:
        m[:, size // 2 :] = value
    return m


def softmax(z: list[float]) -> list[float]:
    e = [math.exp(v) for v in z]
    return [v / sum(e) for v in e]


def sigmoid(z: list[float]) -> list[float]:
    return [1 / (1 + math.exp(-v)) for v in z]


def drop(y: float, o: float) -> float:
    return max(0.0, y - o) / y


def test_single_label_scores_by_hand() -> None:
    model = Halves(a=4.0)
    x = torch.stack([image(1.0, 0.5), image(0.2, 0.8)])
    maps = torch.stack([half_map("left"), half_map("right", 0.5)])
    targets = torch.tensor([0, 1])
    # logits worked out by hand: a * [left, right, (left + right) / 2]
    clean = [softmax([4.0, 2.0, 3.0]), softmax([0.8, 3.2, 2.0])]
    kept = [softmax([4.0, 0.0, 2.0]), softmax([0.0, 1.6, 0.8])]  # x * M
    removed = [softmax([0.0, 2.0, 1.0]), softmax([0.8, 1.6, 1.2])]  # x * (1 - M)
    metrics = FaithfulnessMetrics(curves=False)
    metrics.update(model, x, maps, targets)
    s = metrics.summary()
    pairs = list(zip([0, 1], [0, 1], strict=True))
    ad = 100 * sum(drop(clean[i][c], kept[i][c]) for i, c in pairs) / 2
    ar = 100 * sum(drop(clean[i][c], removed[i][c]) for i, c in pairs) / 2
    assert s["average_drop"] == pytest.approx(ad, rel=1e-6)
    assert s["average_retention"] == pytest.approx(ar, rel=1e-6)
    assert s["increase_in_confidence"] == pytest.approx(50.0)  # only image 0 gains
    assert s["pairs"] == 2 and s["pairs_with_others"] == 0
    assert math.isnan(s["average_drop_of_others"]) and math.isnan(s["deletion_auc"])
    # single-label: "of others" are not defined even if labels are given
    metrics.update(model, x, maps, targets, present=torch.ones(2, 3, dtype=torch.bool))
    assert metrics.summary()["pairs_with_others"] == 0
    probs = confidences(model, x)
    assert torch.allclose(probs, torch.tensor(clean, dtype=probs.dtype), atol=1e-6)


def test_multilabel_of_others_by_hand() -> None:
    model = Halves(multilabel=True, a=6.0, b=-3.0)
    x = torch.stack([image(1.0, 0.5), image(1.0, 0.5), image(0.2, 0.8)])
    maps = torch.stack([half_map("left"), half_map("right"), half_map("right", 0.5)])
    targets = torch.tensor([0, 1, 1])
    present = torch.tensor([[1, 1, 0], [0, 1, 0], [1, 1, 1]], dtype=torch.bool)

    def conf(means: list[float]) -> list[float]:
        return sigmoid([6.0 * m - 3.0 for m in means])

    # [left, right, all] means of the RGB image for clean / kept / removed, by hand
    clean = [conf([1, 0.5, 0.75]), conf([1, 0.5, 0.75]), conf([0.2, 0.8, 0.5])]
    kept = [conf([1, 0, 0.5]), conf([0, 0.5, 0.25]), conf([0, 0.4, 0.2])]
    removed = [conf([0, 0.5, 0.25]), conf([1, 0, 0.5]), conf([0.2, 0.4, 0.3])]
    metrics = FaithfulnessMetrics(curves=False, batch_size=2)
    metrics.update(model, x, maps, targets, present)
    s = metrics.summary()
    t = [0, 1, 1]
    ad = 100 * sum(drop(clean[i][t[i]], kept[i][t[i]]) for i in range(3)) / 3
    ic = 100 * sum(kept[i][t[i]] > clean[i][t[i]] for i in range(3)) / 3
    ar = 100 * sum(drop(clean[i][t[i]], removed[i][t[i]]) for i in range(3)) / 3
    # image 1 has no other present class: excluded; image 0: D = {1}; image 2: D = {0, 2}
    ado = (
        100
        * (
            drop(clean[0][1], kept[0][1])
            + (drop(clean[2][0], kept[2][0]) + drop(clean[2][2], kept[2][2])) / 2
        )
        / 2
    )
    aro = (
        100
        * (
            drop(clean[0][1], removed[0][1])
            + (drop(clean[2][0], removed[2][0]) + drop(clean[2][2], removed[2][2])) / 2
        )
        / 2
    )
    assert s["average_drop"] == pytest.approx(ad, rel=1e-6)
    assert s["increase_in_confidence"] == pytest.approx(ic)
    assert s["average_retention"] == pytest.approx(ar, rel=1e-6)
    assert s["average_drop_of_others"] == pytest.approx(ado, rel=1e-6)
    assert s["average_retention_of_others"] == pytest.approx(aro, rel=1e-6)
    assert s["pairs"] == 3 and s["pairs_with_others"] == 2
    assert 0 < ado < 100 and 0 < aro < 100


def test_deletion_curve_by_hand_and_tie_order() -> None:
    model = Halves(multilabel=True, a=6.0, b=-3.0)
    x = image(1.0, 0.0, size=4)[None]
    target = torch.tensor([0])

    def auc(left_means: list[float]) -> float:
        c = sigmoid([6.0 * m - 3.0 for m in left_means])
        return sum((u + v) / 2 for u, v in itertools.pairwise(c)) / (len(c) - 1)

    # all ties: raster order, one row (2 left pixels of 8) per step of 4 pixels
    flat = torch.zeros(1, 4, 4)
    dele, _ = deletion_insertion(model, x, flat, target, steps=4)
    assert dele.item() == pytest.approx(auc([1, 0.75, 0.5, 0.25, 0]), rel=1e-6)
    # left half ranked first: the left half is gone after two steps
    dele, _ = deletion_insertion(model, x, half_map("left", size=4)[None], target, steps=4)
    assert dele.item() == pytest.approx(auc([1, 0.5, 0, 0, 0]), rel=1e-6)
    # a blurred uniform image is the image: both curves stay at the clean confidence
    flat_img = image(0.6, 0.6, size=4)[None]
    dele, ins = deletion_insertion(model, flat_img, flat, target, steps=4, baseline="blur")
    y = sigmoid([6.0 * 0.6 - 3.0])[0]
    assert dele.item() == pytest.approx(y, rel=1e-5)
    assert ins.item() == pytest.approx(y, rel=1e-5)


def test_perfect_map_beats_inverted_map() -> None:
    model = Halves(a=12.0, power=2)
    x = image(1.0, 0.3, size=16)[None]
    x[..., ::2, :8:2] = image(0.0, 0.0, size=16)[..., ::2, :8:2]  # checkerboard on the left
    x[..., 1::2, 1:8:2] = image(0.0, 0.0, size=16)[..., 1::2, 1:8:2]
    target = torch.tensor([0])
    perfect, inverted = half_map("left", size=16)[None], half_map("right", size=16)[None]
    good, bad = FaithfulnessMetrics(steps=8), FaithfulnessMetrics(steps=8)
    good.update(model, x, perfect, target)
    bad.update(model, x, inverted, target)
    g, b = good.summary(), bad.summary()
    assert g["average_drop"] == pytest.approx(0.0, abs=1e-9)
    assert b["average_drop"] > 10
    assert g["average_retention"] > 70 > b["average_retention"]
    assert g["deletion_auc"] < b["deletion_auc"]
    assert g["insertion_auc"] > b["insertion_auc"]
    assert all(0 <= g[k] <= 100 for k in ("deletion_auc", "insertion_auc"))


def test_batching_and_accumulation_invariance() -> None:
    model = Halves(multilabel=True, a=6.0, b=-3.0)
    gen = torch.Generator().manual_seed(1)
    x = ((torch.rand(6, 3, 12, 12, generator=gen) - model.mean) / model.std).double()
    maps = torch.rand(6, 12, 12, generator=gen)
    targets = torch.tensor([0, 1, 2, 0, 1, 2])
    present = torch.rand(6, 3, generator=gen) > 0.4
    results = []
    for batch_size, splits in ((64, 1), (1, 1), (5, 2)):
        m = FaithfulnessMetrics(steps=6, batch_size=batch_size)
        for xs, ms, ts, ps in zip(
            *(a.chunk(splits) for a in (x, maps, targets, present)), strict=True
        ):
            m.update(model, xs, ms, ts, ps)
        results.append(m.summary())
    for other in results[1:]:
        assert other.keys() == results[0].keys()
        for key, value in results[0].items():
            assert other[key] == pytest.approx(value, rel=1e-9, abs=1e-12, nan_ok=True), key
    assert results[0]["pairs"] == 6
    assert results[0]["pairs_with_others"] == int(
        (present & ~nn.functional.one_hot(targets, 3).bool()).any(dim=1).sum()
    )


@pytest.mark.parametrize("multilabel", [False, True])
def test_real_model_end_to_end(multilabel: bool) -> None:
    torch.manual_seed(0)
    model = wsol.create_model("resnet10t", 3, input_size=64, multilabel=multilabel)
    x = model.normalize(torch.rand(2, 3, 64, 64))
    targets = torch.tensor([0, 2])
    maps = compute(model, x, "gradcam", targets)
    model.train()
    metrics = FaithfulnessMetrics(steps=4, batch_size=8)
    metrics.update(model, x, maps, targets, present=torch.ones(2, 3, dtype=torch.bool))
    assert model.training  # mode restored
    s = metrics.summary()
    assert s["pairs"] == 2 and s["pairs_with_others"] == (2 if multilabel else 0)
    for key in ("average_drop", "increase_in_confidence", "average_retention"):
        assert 0 <= s[key] <= 100, key
    for key in ("deletion_auc", "insertion_auc"):
        assert 0 <= s[key] <= 100, key
    probs = confidences(model, x)
    assert probs.shape == (2, 3) and torch.isfinite(probs).all()
    if not multilabel:
        assert torch.allclose(probs.sum(dim=1), torch.ones(2))
    ones = masked_inputs(model, x, torch.ones(2, 64, 64))
    assert torch.allclose(ones, x, atol=1e-5)
    black = masked_inputs(model, x, torch.ones(2, 64, 64), invert=True)
    assert torch.allclose(black * model.std + model.mean, torch.zeros_like(x), atol=1e-6)


def test_bad_input_is_named() -> None:
    model = Halves()
    x = torch.stack([image(1.0, 0.5), image(0.2, 0.8)])
    maps = torch.rand(2, 8, 8)
    targets = torch.tensor([0, 1])
    metrics = FaithfulnessMetrics(curves=False)
    with pytest.raises(ValueError, match="maps"):
        metrics.update(model, x, torch.rand(2, 4, 4), targets)
    with pytest.raises(ValueError, match="maps"):
        masked_inputs(model, x, torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match="targets"):
        metrics.update(model, x, maps, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="targets"):
        deletion_insertion(model, x, maps, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="present"):
        metrics.update(model, x, maps, targets, present=torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="baseline"):
        deletion_insertion(model, x, maps, targets, baseline="noise")
    with pytest.raises(ValueError, match=r"x must be"):
        metrics.update(model, x[:, :2], maps, targets)
    assert metrics.summary()["pairs"] == 0
