from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from wsol.metrics import Accuracy, BoxMetrics, PixelMetrics, box_iou, mask_boxes


def _quantized(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    # values at bin centres, so binning is exact and sklearn sees the same thresholds
    return (rng.integers(0, 1000, size=shape) + 0.5) / 1000


def test_pxap_equals_average_precision_of_pooled_pixels() -> None:
    rng = np.random.default_rng(0)
    masks = rng.random((4, 32, 32)) < 0.3
    maps = np.clip(_quantized(rng, (4, 32, 32)) * 0.6 + masks * 0.35, 0, 0.9995)
    maps = (np.floor(maps * 1000) + 0.5) / 1000
    metric = PixelMetrics()
    for i in range(4):  # accumulated over batches, pooled over the dataset
        metric.update(torch.tensor(maps[i : i + 1]), torch.tensor(masks[i : i + 1]))
    expected = 100 * average_precision_score(masks.ravel(), maps.ravel())
    assert metric.pxap() == pytest.approx(expected, abs=1e-9)
    assert metric.num_pixels == masks.size


def test_perfect_and_inverted_maps() -> None:
    masks = torch.zeros(2, 16, 16, dtype=torch.bool)
    masks[:, 4:10, 4:12] = True
    perfect = PixelMetrics()
    perfect.update(masks.float(), masks)
    assert perfect.pxap() == pytest.approx(100)
    best = perfect.best()
    assert best["dice_fg"] == pytest.approx(100) and best["iou_bg"] == pytest.approx(100)
    inverted = PixelMetrics()
    inverted.update(1 - masks.float(), masks)
    assert inverted.pxap() < 40


def test_dice_and_iou_at_a_threshold_match_direct_counts() -> None:
    rng = np.random.default_rng(1)
    masks = rng.random((3, 20, 20)) < 0.4
    maps = _quantized(rng, (3, 20, 20))
    metric = PixelMetrics()
    metric.update(torch.tensor(maps), torch.tensor(masks))
    tau = 0.42
    pred = maps >= tau
    tp, fp = (pred & masks).sum(), (pred & ~masks).sum()
    fn, tn = (~pred & masks).sum(), (~pred & ~masks).sum()
    got = metric.at_threshold(tau)
    assert got["dice_fg"] == pytest.approx(100 * 2 * tp / (2 * tp + fp + fn))
    assert got["dice_bg"] == pytest.approx(100 * 2 * tn / (2 * tn + fn + fp))
    assert got["iou_fg"] == pytest.approx(100 * tp / (tp + fp + fn))
    assert got["iou_bg"] == pytest.approx(100 * tn / (tn + fn + fp))
    # the best threshold is at least as good as any given one
    assert metric.best()["dice_fg"] >= got["dice_fg"]
    with pytest.raises(ValueError, match="threshold"):
        metric.at_threshold(1.5)


def test_memory_does_not_grow_with_pixels() -> None:
    metric = PixelMetrics()
    size = metric.fg_hist.numel() + metric.bg_hist.numel()
    for _ in range(5):
        metric.update(torch.rand(4, 64, 64), torch.rand(4, 64, 64) > 0.5)
    assert metric.fg_hist.numel() + metric.bg_hist.numel() == size
    assert metric.num_pixels == 5 * 4 * 64 * 64


def test_ignored_pixels_do_not_count() -> None:
    metric = PixelMetrics()
    maps, masks = torch.rand(1, 8, 8), torch.rand(1, 8, 8) > 0.5
    ignore = torch.zeros(1, 8, 8, dtype=torch.bool)
    ignore[:, :4] = True
    metric.update(maps, masks, ignore)
    assert metric.num_pixels == 32


def test_no_foreground_gives_nan_pxap() -> None:
    metric = PixelMetrics()
    metric.update(torch.rand(1, 8, 8), torch.zeros(1, 8, 8, dtype=torch.bool))
    assert np.isnan(metric.pxap())


def _blob(shape: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    """A smooth map peaking inside box (x0, y0, x1, y1)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    sx, sy = (box[2] - box[0]) / 2, (box[3] - box[1]) / 2
    return np.exp(-(((xx - cx) / sx) ** 2 + ((yy - cy) / sy) ** 2))


def test_box_helpers() -> None:
    mask = np.zeros((10, 10), dtype=bool)
    mask[1:3, 2:5] = True
    mask[6:9, 6:8] = True
    boxes = mask_boxes(mask)
    assert boxes.tolist() == [[2, 1, 4, 2], [6, 6, 7, 8]]
    assert box_iou(boxes[:1], boxes[:1])[0, 0] == pytest.approx(1.0)
    # 3x2 box vs one shifted by one column: overlap 2x2 = 4, union 6 + 6 - 4 = 8
    assert box_iou(np.array([[2, 1, 4, 2]]), np.array([[3, 1, 5, 2]]))[0, 0] == pytest.approx(0.5)


def test_maxboxacc_right_and_wrong_places() -> None:
    mask = np.zeros((2, 64, 64), dtype=bool)
    mask[:, 10:30, 20:50] = True
    maps = np.stack([_blob((64, 64), (20, 10, 49, 29)), _blob((64, 64), (0, 40, 15, 63))])
    metric = BoxMetrics()
    metric.update(maps, mask)
    assert metric.count == 2
    assert metric.maxboxacc() == pytest.approx(50)  # first image right, second wrong
    per = metric.summary()["maxboxacc_v2_per_iou"]
    assert per["iou30"] >= per["iou50"] >= per["iou70"]


def test_maxboxacc_v2_counts_every_component_v1_only_the_largest() -> None:
    mask = np.zeros((1, 64, 64), dtype=bool)
    mask[0, 5:15, 5:15] = True  # one small object
    # the brightest and largest blob lies on background, a weaker one on the object
    heat = np.maximum(_blob((64, 64), (28, 28, 63, 63)), 0.9 * _blob((64, 64), (5, 5, 14, 14)))
    metric = BoxMetrics()
    metric.update(heat[None], mask)
    assert metric.maxboxacc() == 0  # the largest component is always the wrong one
    assert metric.summary()["maxboxacc_v2_per_iou"]["iou50"] == 100  # another component fits


def test_negative_images_are_skipped_by_box_metrics() -> None:
    metric = BoxMetrics()
    metric.update(np.random.default_rng(0).random((2, 16, 16)), np.zeros((2, 16, 16), dtype=bool))
    assert metric.count == 0 and np.isnan(metric.maxboxacc())


def test_accuracy() -> None:
    acc = Accuracy()
    acc.update(torch.tensor([[0.1, 0.9], [0.8, 0.2]]), torch.tensor([1, 1]))
    assert acc.value() == pytest.approx(50)
