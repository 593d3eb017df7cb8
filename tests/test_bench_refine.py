from __future__ import annotations

import torch

from wsol.bench_refine import markdown_tables, time_dense_crf
from wsol.refine import DenseCRFParams


def test_time_dense_crf_interleaves_sizes_and_reports_ratios() -> None:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (3, 3, 24, 24), dtype=torch.uint8, generator=gen)
    params = DenseCRFParams(iterations=1, appearance_sxy=8.0)
    timing = time_dense_crf(images, sizes=(64, 32), repeats=3, params=params)
    assert list(timing) == [32, 64]
    assert all(len(t["runs"]) == 3 and t["median_s"] > 0 for t in timing.values())
    assert "ratio_to_previous" not in timing[32]
    assert timing[64]["pixel_ratio_to_previous"] == 4.0
    assert timing[64]["ratio_to_previous"] > 0
    per_px = timing[64]["median_s"] / 64**2 * 1e9
    assert abs(timing[64]["ns_per_pixel"] - per_px) < 1e-6 * per_px
    row = {"pxap": 50.0, "dice_fg": 60.0, "tau": 0.5}
    report = {
        "quality": {"plain": {"fcam": row}, "dense_crf": {"fcam": row}},
        "timing": {str(k): v for k, v in timing.items()},
    }
    table = markdown_tables(report)
    assert "| 32² |" in table and "| 4× |" in table
