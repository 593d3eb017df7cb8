"""Map levels shown by napari layers: a new run's maps replace the old ones in place."""

from __future__ import annotations

import numpy as np
import pytest
from napari.layers import Image, Labels

from napari_wsol import layers as L
from napari_wsol.views import MapLevel, ThresholdView


def _pyramid(seed: int) -> list[np.ndarray]:
    full = np.random.default_rng(seed).random((64, 64), dtype=np.float32)
    return [full, full[::2, ::2].copy(), full[::4, ::4].copy()]


def test_levels_take_a_new_map_without_napari_resetting_the_level() -> None:
    old = [MapLevel(a) for a in _pyramid(0)]
    layer = Image(old, multiscale=True, contrast_limits=(0, 1))
    layer.data_level = 0  # as a zoomed-in view has it; new data would reset it
    mask = Labels([ThresholdView(level, 0.5) for level in old], multiscale=True)
    new = _pyramid(1)

    kept = L.take_levels(layer, [MapLevel(a) for a in new])

    assert kept is not None and all(a is b for a, b in zip(kept, old, strict=True))
    assert layer.data_level == 0
    for level, expected in zip(L.shown_levels(layer), new, strict=True):
        np.testing.assert_array_equal(np.asarray(level), expected)
    # Views over the levels (the threshold mask) follow without new data either.
    np.testing.assert_array_equal(np.asarray(mask.data[0]), (new[0] >= 0.5).astype(np.uint8))


def test_levels_of_another_shape_are_not_taken() -> None:
    layer = Image([MapLevel(a) for a in _pyramid(0)], multiscale=True, contrast_limits=(0, 1))
    smaller = [MapLevel(a[:32, :32].copy()) for a in _pyramid(1)]
    assert L.take_levels(layer, smaller) is None
    assert L.take_levels(layer, [MapLevel(a) for a in _pyramid(1)[:2]]) is None
    np.testing.assert_array_equal(np.asarray(layer.data[0]), _pyramid(0)[0])
    with pytest.raises(ValueError, match="cannot replace"):
        layer.data[0].take(smaller[0])


def test_place_leaves_an_unchanged_grid_alone() -> None:
    layer = Image(np.zeros((8, 8), np.float32), scale=(2.0, 2.0), translate=(0.5, 0.5))
    changes: list[str] = []
    layer.events.scale.connect(lambda _e: changes.append("scale"))
    layer.events.translate.connect(lambda _e: changes.append("translate"))
    L.place(layer, {"scale": (2.0, 2.0), "translate": (0.5, 0.5)})
    assert changes == []
    L.place(layer, {"scale": (4.0, 4.0), "translate": (0.5, 0.5)})
    assert changes == ["scale"] and tuple(layer.scale) == (4.0, 4.0)


def test_a_threshold_view_keeps_painted_pixels_for_any_slice_napari_asks() -> None:
    from wsol.region import BACKGROUND, FOREGROUND, PaintedLabels, Region

    values = np.linspace(0, 1, 64 * 48, dtype=np.float32).reshape(64, 48)
    level = MapLevel(values)
    view = ThresholdView(level, 0.5, scale=2.0)
    labels = np.zeros((32, 24), np.uint8)  # a region at 4 level-0 px a pixel
    labels[:4, :4] = FOREGROUND  # map rows/cols 0..7: below the threshold
    labels[-4:, -4:] = BACKGROUND  # map rows 56..63, cols 40..47: above it
    view.painted = (PaintedLabels(labels, Region(0, 0, 128, 96, 4.0)),)
    want = (values >= 0.5).astype(np.uint8)
    want[:8, :8], want[56:, 40:] = 1, 0
    np.testing.assert_array_equal(np.asarray(view), want)
    for key in ((slice(3, 60), slice(5, 44)), (slice(None, None, 3), slice(1, None, 2)), 7):
        np.testing.assert_array_equal(view[key], want[key])
    view.painted = ()
    np.testing.assert_array_equal(np.asarray(view), values >= 0.5)
