from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.filters import threshold_otsu

from wsol.pseudo import (
    BG,
    FG,
    IGNORE,
    TRIMAP_BG,
    TRIMAP_FG,
    TRIMAP_UNSURE,
    apply_corrections,
    otsu_threshold,
    sample_seeds,
    seed_regions,
    trimap,
)


def _blob_maps(batch: int = 3, size: int = 40) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    maps = torch.rand(batch, size, size, generator=gen) * 0.3
    maps[:, 10:30, 12:28] += 0.6
    maps[:, 0, 0], maps[:, -1, -1] = 0.0, 1.0  # full [0, 1] range, as normalized CAMs have
    return maps


def test_otsu_matches_scikit_image() -> None:
    maps = _blob_maps()
    ours = otsu_threshold(maps)
    for b in range(maps.shape[0]):
        assert float(ours[b]) == pytest.approx(
            threshold_otsu(maps[b].numpy(), nbins=256), abs=1.5 / 255
        )


def test_regions_foreground_above_otsu_background_lowest_fraction() -> None:
    maps = _blob_maps()
    fg, bg = seed_regions(maps, bg_fraction=0.25)
    assert fg[:, 10:30, 12:28].all() and fg.sum() == 3 * 20 * 16 + 3  # + the 1.0 corners
    assert (bg.sum(dim=(1, 2)) == round(0.25 * 40 * 40)).all()
    assert not (fg & bg).any()
    # Every background pixel is below every pixel outside the background.
    for b in range(3):
        assert maps[b][bg[b]].max() <= maps[b][~bg[b]].min()


def test_erosion_shrinks_the_foreground_square() -> None:
    maps = torch.zeros(1, 30, 30)
    maps[0, 5:15, 5:15] = 1.0
    fg, _ = seed_regions(maps, erode=2)
    assert fg.sum() == 6 * 6 and fg[0, 7:13, 7:13].all()


def test_seeds_come_from_their_regions_k_each_reproducibly() -> None:
    maps = _blob_maps()
    fg, bg = seed_regions(maps, 0.3)
    seeds = sample_seeds(maps, 12, bg_fraction=0.3, generator=torch.Generator().manual_seed(1))
    assert seeds.dtype == torch.long and set(seeds.unique().tolist()) == {IGNORE, BG, FG}
    assert ((seeds == FG).sum(dim=(1, 2)) == 12).all()
    assert ((seeds == BG).sum(dim=(1, 2)) == 12).all()
    assert fg[seeds == FG].all() and bg[seeds == BG].all()
    again = sample_seeds(maps, 12, bg_fraction=0.3, generator=torch.Generator().manual_seed(1))
    other = sample_seeds(maps, 12, bg_fraction=0.3, generator=torch.Generator().manual_seed(2))
    assert torch.equal(seeds, again) and not torch.equal(seeds, other)


def test_small_regions_give_all_their_pixels() -> None:
    maps = torch.zeros(1, 20, 20)
    maps[0, 0, :3] = 1.0  # a 3-pixel foreground
    seeds = sample_seeds(maps, 10, bg_fraction=0.01)
    assert (seeds == FG).sum() == 3 and (seeds == BG).sum() == 4  # round(0.01 * 400)


def test_map_proportional_sampling_prefers_strong_pixels() -> None:
    maps = torch.full((1, 40, 40), 0.05)
    maps[0, 10:30, 10:20] = 0.5  # weak half of the object
    maps[0, 10:30, 20:30] = 1.0  # strong half
    fg, _ = seed_regions(maps)
    assert fg[0, 10:30, 10:30].all()
    gen = torch.Generator().manual_seed(0)
    ratios = {}
    for mode in ("uniform", "map"):
        strong = weak = 0
        for _ in range(40):
            picks = sample_seeds(maps, 20, fg_sampling=mode, generator=gen) == FG
            strong += int(picks[0, :, 20:].sum())
            weak += int(picks[0, :, :20].sum())
        ratios[mode] = strong / weak
    assert ratios["uniform"] == pytest.approx(1.0, rel=0.2)
    assert ratios["map"] > 1.5  # weights 1.0 vs 0.5, without replacement


def test_negative_images_get_background_seeds_only_anywhere() -> None:
    maps = _blob_maps(batch=2)
    seeds = sample_seeds(
        maps, 200, negatives=torch.tensor([True, False]), generator=torch.Generator().manual_seed(0)
    )
    assert (seeds[0] == FG).sum() == 0 and (seeds[0] == BG).sum() == 200
    assert (seeds[0, 10:30, 12:28] == BG).any()  # drawn from the whole image
    assert (seeds[1] == FG).sum() == 200


def test_trimap_codes() -> None:
    maps = _blob_maps(batch=1)
    tri = trimap(maps, bg_fraction=0.3)
    fg, bg = seed_regions(maps, 0.3)
    assert tri.dtype == torch.uint8
    assert torch.equal(tri == TRIMAP_FG, fg) and torch.equal(tri == TRIMAP_BG, bg)
    assert torch.equal(tri == TRIMAP_UNSURE, ~(fg | bg))


def test_corrections_override_seeds_without_touching_either() -> None:
    seeds = torch.full((1, 4, 4), IGNORE)
    seeds[0, 0, 0], seeds[0, 1, 1] = FG, BG
    corrections = torch.full((1, 4, 4), IGNORE)
    corrections[0, 0, 0], corrections[0, 3, 3] = BG, FG
    before = seeds.clone(), corrections.clone()
    merged = apply_corrections(seeds, corrections)
    assert merged[0, 0, 0] == BG and merged[0, 3, 3] == FG and merged[0, 1, 1] == BG
    assert (merged == IGNORE).sum() == 13
    assert torch.equal(seeds, before[0]) and torch.equal(corrections, before[1])
    assert torch.equal(apply_corrections(seeds, None), seeds)
    with pytest.raises(ValueError, match="do not match"):
        apply_corrections(seeds, torch.full((1, 3, 3), IGNORE))


def test_seeding_runs_on_the_maps_device_and_dtype() -> None:
    maps = _blob_maps().double()
    seeds = sample_seeds(maps, 5)
    assert seeds.device == maps.device
    assert np.isfinite(otsu_threshold(maps).numpy()).all()
