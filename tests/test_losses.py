from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

from wsol.losses import (
    BarrierSchedule,
    crf_loss,
    extended_log_barrier,
    keep_loss,
    partial_cross_entropy,
    size_loss,
)
from wsol.pseudo import BG, FG, IGNORE


def test_partial_cross_entropy_uses_labelled_pixels_only() -> None:
    logits = torch.randn(2, 2, 5, 5, dtype=torch.float64)
    labels = torch.full((2, 5, 5), IGNORE)
    labels[0, 1, 1], labels[1, 2, 3] = FG, BG
    expected = (
        F.cross_entropy(logits[0:1, :, 1, 1], torch.tensor([FG]))
        + F.cross_entropy(logits[1:2, :, 2, 3], torch.tensor([BG]))
    ) / 2
    assert partial_cross_entropy(logits, labels) == pytest.approx(float(expected))
    changed = logits.clone()
    changed[0, :, 4, 4] += 10  # an unlabelled pixel
    assert partial_cross_entropy(changed, labels) == partial_cross_entropy(logits, labels)
    logits.requires_grad_(True)
    assert gradcheck(lambda x: partial_cross_entropy(x, labels), (logits,))


def test_partial_cross_entropy_without_labels_is_zero_and_differentiable() -> None:
    logits = torch.randn(1, 2, 3, 3, requires_grad=True)
    loss = partial_cross_entropy(logits, torch.full((1, 3, 3), IGNORE))
    loss.backward()
    assert loss.item() == 0 and torch.equal(logits.grad, torch.zeros_like(logits))


def _crf_brute_force(probs, image, radius, sigma_rgb, sigma_xy) -> torch.Tensor:
    b, _, h, w = probs.shape
    total = probs.new_zeros(())
    for n in range(b):
        for (y, x), (v, u) in itertools.product(itertools.product(range(h), range(w)), repeat=2):
            if (y, x) == (v, u) or abs(y - v) > radius or abs(x - u) > radius:
                continue
            colour = ((image[n, :, y, x] - image[n, :, v, u]) ** 2).sum()
            affinity = torch.exp(
                -colour / (2 * sigma_rgb**2) - ((y - v) ** 2 + (x - u) ** 2) / (2 * sigma_xy**2)
            )
            total = total + affinity * (probs[n, :, y, x] * (1 - probs[n, :, v, u])).sum()
    neighbours = (2 * radius + 1) ** 2 - 1
    return total / (b * h * w * neighbours)


def test_crf_loss_equals_the_pairwise_sum_and_passes_gradcheck() -> None:
    gen = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(2, 2, 6, 7, generator=gen, dtype=torch.float64), dim=1)
    image = torch.rand(2, 3, 6, 7, generator=gen, dtype=torch.float64)
    options = dict(radius=2, sigma_rgb=0.3, sigma_xy=2.0)
    ours = crf_loss(probs, image, **options)
    assert float(ours) == pytest.approx(float(_crf_brute_force(probs, image, **options)), rel=1e-10)
    probs.requires_grad_(True)
    assert gradcheck(lambda p: crf_loss(p, image, **options), (probs,))


def test_crf_loss_prefers_labels_that_follow_colour_edges() -> None:
    image = torch.zeros(1, 3, 16, 16)
    image[:, :, :, 8:] = 1.0  # left black, right white
    along = torch.zeros(1, 2, 16, 16)
    along[:, 1, :, 8:], along[:, 0, :, :8] = 1, 1
    across = torch.zeros(1, 2, 16, 16)
    across[:, 1, 8:], across[:, 0, :8] = 1, 1
    assert crf_loss(along, image) < 0.01 * crf_loss(across, image)


def test_crf_loss_scale_computes_on_a_smaller_grid() -> None:
    probs = torch.softmax(torch.randn(1, 2, 32, 32), dim=1)
    image = torch.rand(1, 3, 32, 32)
    half = crf_loss(probs, image, scale=0.5)
    small = crf_loss(
        F.interpolate(probs, size=(16, 16), mode="bilinear"),
        F.interpolate(image, size=(16, 16), mode="bilinear"),
    )
    assert float(half) == pytest.approx(float(small), rel=1e-5)


def test_extended_log_barrier_is_continuous_and_gradchecks() -> None:
    for t in (1.0, 2.5, 10.0):
        edge = -1 / t**2
        below = extended_log_barrier(torch.tensor([edge - 1e-9], dtype=torch.float64), t)
        above = extended_log_barrier(torch.tensor([edge + 1e-9], dtype=torch.float64), t)
        assert float(below) == pytest.approx(float(above), abs=1e-6)
        z = torch.tensor([-3.0, -0.5, edge * 2, 0.2, 4.0], dtype=torch.float64, requires_grad=True)
        assert gradcheck(lambda v, t=t: extended_log_barrier(v, t), (z,))
    z = torch.tensor([-2.0, -0.1, 1.0])
    # Satisfied constraints cost little; violations cost more the more they are violated.
    values = extended_log_barrier(z, 5.0)
    assert values[0] < values[1] < values[2]
    with pytest.raises(ValueError):
        extended_log_barrier(z, 0.0)


def test_size_loss_penalizes_a_collapsed_class() -> None:
    balanced = torch.full((1, 2, 8, 8), 0.5, dtype=torch.float64)
    collapsed = torch.zeros(1, 2, 8, 8, dtype=torch.float64)
    collapsed[:, 0] = 0.999
    collapsed[:, 1] = 0.001
    assert size_loss(collapsed, t=5.0) > size_loss(balanced, t=5.0)
    probs = torch.softmax(torch.randn(2, 2, 4, 4, dtype=torch.float64), 1).requires_grad_(True)
    assert gradcheck(lambda p: size_loss(p, 3.0, min_fraction=0.05), (probs,))


def test_barrier_schedule() -> None:
    schedule = BarrierSchedule()
    assert schedule(0) == 1.0 and schedule(1) == pytest.approx(1.01)
    assert schedule(10_000) == 10.0


def test_keep_loss_is_the_kl_from_the_earlier_prediction_on_kept_pixels() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 2, 5, 6, generator=g, dtype=torch.float64)
    previous = torch.softmax(torch.randn(2, 2, 5, 6, generator=g, dtype=torch.float64), 1)
    mask = torch.rand(2, 5, 6, generator=g) < 0.6
    q = torch.softmax(logits, 1)
    kl = (previous * (previous / q).log()).sum(1)
    assert torch.allclose(keep_loss(logits, previous, mask), kl[mask].mean())
    assert torch.allclose(keep_loss(logits, previous), kl.mean())
    # Pixels outside the mask do not count, whatever the head says there.
    moved = logits.clone()
    moved[:, 1][~mask] += 10.0
    assert torch.allclose(keep_loss(moved, previous, mask), keep_loss(logits, previous, mask))
    # Where the head still says what it said before: zero, and nothing pulls.
    same = previous.log().clone().requires_grad_(True)
    value = keep_loss(same, previous, mask)
    value.backward()
    assert abs(value.item()) < 1e-12 and same.grad.abs().max().item() < 1e-12
    assert gradcheck(lambda x: keep_loss(x, previous, mask), (logits.clone().requires_grad_(),))


def test_keep_loss_holds_sure_foreground_harder_without_loosening_the_rest() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 2, 6, 7, generator=g, dtype=torch.float64)
    previous = torch.softmax(3 * torch.randn(2, 2, 6, 7, generator=g, dtype=torch.float64), 1)
    mask = torch.rand(2, 6, 7, generator=g) < 0.7
    sure = previous[:, 1] > 0.9
    assert (sure & mask).any() and (~sure & mask).any()
    q = torch.softmax(logits, 1)
    kl = (previous * (previous / q).log()).sum(1)
    # Sure-foreground kept pixels count 3 times; the mean is still over the kept pixels.
    expected = (kl[mask & ~sure].sum() + 3 * kl[mask & sure].sum()) / mask.sum()
    assert torch.allclose(keep_loss(logits, previous, mask, fg_extra=2.0), expected)
    assert torch.allclose(keep_loss(logits, previous, mask, fg_extra=0.0), kl[mask].mean())
    # A change on an unsure pixel costs what it cost without the extra hold.
    moved = logits.clone()
    moved[:, 1][mask & ~sure] += 1.0
    with_extra = keep_loss(moved, previous, mask, fg_extra=2.0) - keep_loss(
        logits, previous, mask, fg_extra=2.0
    )
    without = keep_loss(moved, previous, mask) - keep_loss(logits, previous, mask)
    assert torch.allclose(with_extra, without)
    assert gradcheck(
        lambda x: keep_loss(x, previous, mask, fg_extra=2.0), (logits.clone().requires_grad_(),)
    )
