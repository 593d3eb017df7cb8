from __future__ import annotations

from pathlib import Path

import numpy as np

from wsol.slide import ImageSlide, open_slide
from wsol.tissue import TissueMask, detect_tissue, saturation, tissue_mask_from_rgb


def test_synthetic_slide_tissue_fraction_and_location(synthetic_slide: Path) -> None:
    with open_slide(synthetic_slide) as slide:
        tissue = detect_tissue(slide, max_size=512)
        overview, _ = slide.thumbnail(512)
    assert tissue.mask.shape == overview.shape[:2]
    # The generator paints tissue over glass of colour (243, 242, 245).
    # Its soft edges are ambiguous; clear tissue and clear glass are not.
    distance = np.abs(overview.astype(int) - (243, 242, 245)).sum(axis=-1)
    assert tissue.mask[distance > 150].mean() > 0.97
    assert not tissue.mask[distance < 15].any()
    assert 0.1 < tissue.fraction < 0.5
    assert saturation(overview)[tissue.mask].mean() > 0.3
    assert tissue.labels.dtype == np.uint8 and set(np.unique(tissue.labels)) == {0, 1}


def test_blank_glass_has_no_tissue() -> None:
    glass = np.full((300, 300, 3), 242, np.uint8)
    glass += np.random.default_rng(0).integers(0, 6, glass.shape, dtype=np.uint8)
    mask, threshold = tissue_mask_from_rgb(glass)
    assert not mask.any() and threshold >= 0.04


def test_all_tissue_tile_is_mostly_tissue(he_tile: np.ndarray) -> None:
    mask = detect_tissue(ImageSlide.from_array(he_tile)).mask
    assert mask.mean() > 0.7


def test_specks_are_removed_and_holes_filled() -> None:
    rgb = np.full((200, 200, 3), 245, np.uint8)
    rgb[50:150, 50:150] = (200, 80, 160)  # tissue
    rgb[95:100, 95:100] = 245  # small hole
    rgb[10:13, 10:13] = (200, 80, 160)  # speck
    mask, _ = tissue_mask_from_rgb(rgb, closing=0)
    assert mask[97, 97] and not mask[11, 11]
    assert mask[50:150, 50:150].all() and mask.sum() == 100 * 100


def test_box_fractions() -> None:
    mask = np.zeros((10, 10), bool)
    mask[:5] = True
    tissue = TissueMask(mask, downsample=4.0, threshold=0.1)
    boxes = np.array([[0, 0, 20, 40], [20, 0, 20, 40], [10, 0, 20, 40], [36, 36, 8, 8]])
    assert tissue.box_fractions(boxes).tolist() == [1.0, 0.0, 0.5, 0.0]
