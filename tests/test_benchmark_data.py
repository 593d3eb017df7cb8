from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from wsol.benchmark_data import SPLITS, BenchmarkSpec, _Source, lesion_mask, make_benchmark
from wsol.data import WSOLDataset
from wsol.samples import sample_path


@pytest.mark.parametrize(("fraction", "count"), [(0.05, 1), (0.3, 2), (0.6, 3)])
def test_lesion_masks_hit_their_area_with_at_most_count_blobs(fraction: float, count: int) -> None:
    mask = lesion_mask(128, np.random.default_rng(count), fraction, count)
    assert mask.mean() == pytest.approx(fraction, abs=0.01)
    _, blobs = ndimage.label(mask)
    assert 1 <= blobs <= count


def _spec(seed: int = 0) -> BenchmarkSpec:
    return BenchmarkSpec(
        size=32, downsample=2.0, train=12, val=4, test=6, seed=seed, positive_fraction=0.5
    )


def _digest(folder: Path) -> str:
    h = hashlib.sha1()
    for path in sorted(folder.rglob("*.png")):
        h.update(path.read_bytes())
    return h.hexdigest()


def test_make_benchmark_writes_three_datasets_with_ground_truth(
    tmp_path: Path, synthetic_slide: Path
) -> None:
    out = tmp_path / "bench"
    summary = make_benchmark(out, [sample_path("he_tile")], [synthetic_slide], _spec())
    assert [summary["splits"][s]["tiles"] for s in SPLITS] == [12, 4, 6]
    for split in SPLITS:
        data = WSOLDataset(out / split, ["normal", "lesion"])
        assert len(data) == summary["splits"][split]["tiles"] and data.num_masks == len(data)
        for i, sample in enumerate(data.samples):
            image, mask = data.load(i)
            assert image.shape == (32, 32, 3)
            if sample.label == 0:
                assert not mask.any()
            else:
                assert 0.02 < mask.mean() < 0.75
    assert (out / "preview.png").exists() and (out / "benchmark.json").exists()
    again = make_benchmark(tmp_path / "again", [sample_path("he_tile")], [synthetic_slide], _spec())
    assert again["splits"] == summary["splits"]
    assert _digest(out) == _digest(tmp_path / "again")
    make_benchmark(tmp_path / "other", [sample_path("he_tile")], [synthetic_slide], _spec(1))
    assert _digest(out) != _digest(tmp_path / "other")


def test_splits_come_from_disjoint_stripes_of_tissue(synthetic_slide: Path) -> None:
    source = _Source(synthetic_slide, _spec())
    stripes = sorted((lo, hi, split) for split in SPLITS for lo, hi in source.stripes[split])
    assert {split for _, _, split in stripes} == set(SPLITS)
    for (_, hi, _), (lo, _, _) in itertools.pairwise(stripes):
        assert hi <= lo  # no overlap
    assert source.crop("val", np.random.default_rng(0)).shape == (32, 32, 3)


def test_preview_shows_tiles_and_outlines(tmp_path: Path, synthetic_slide: Path) -> None:
    make_benchmark(tmp_path, [sample_path("he_tile")], [synthetic_slide], _spec())
    preview = np.asarray(Image.open(tmp_path / "preview.png"))
    assert preview.shape[0] == 2 * 32 + 4 and (preview == (0, 200, 0)).all(axis=-1).any()
