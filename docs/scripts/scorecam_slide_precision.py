"""Score-CAM over a slide with the sample model: float32, bfloat16, int8 scoring.

What a user of `wsol predict` or the app waits for when Score-CAM is among the methods:
``infer_slide`` on the first ``--tiles`` tissue tiles of the sample slide with the
sample model (resnet10t, 128 px at 1 µm/px), in float32, in bfloat16 autocast (the
forwards), and with ``precision="auto"`` (bfloat16 forwards, Score-CAM's masked images
in int8). One warm-up, then ``--repeats`` rounds of the three in turn; medians, and the
map of each against float32's (Pearson over the stored level-0 map).

Run: python docs/scripts/scorecam_slide_precision.py [--tiles 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import wsol
from wsol.infer import infer_slide
from wsol.slide import open_slide

ROOT = Path(__file__).resolve().parents[2] / "sample_data"
VARIANTS = {"float32": {"precision": "float32"}, "bfloat16": {"precision": "bfloat16"}}
VARIANTS["auto (int8 scoring)"] = {"precision": "auto"}
MIN_TISSUE = 0.1  # infer_slide's default


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model = wsol.load_model(ROOT / "sample_model.safetensors").eval()
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    maps: dict[str, np.ndarray] = {}
    with open_slide(ROOT / "CMU-1-Small-Region.svs") as slide, tempfile.TemporaryDirectory() as d:
        for round_ in range(args.repeats + 1):
            for name, options in VARIANTS.items():
                out = Path(d) / f"{round_}-{name.split()[0]}.zarr"
                result, seconds = _run(model, slide, out, options, args.tiles)
                if round_:
                    times[name].append(seconds)
                if round_ == args.repeats:
                    maps[name] = np.asarray(result.store.levels("scorecam")[0][...], np.float32)
    tiles = result.tiles_run
    ref = maps["float32"].ravel()
    for name, t in times.items():
        r = np.corrcoef(ref, maps[name].ravel())[0, 1]
        per_tile = statistics.median(t) / tiles
        print(
            f"{name:<20} {statistics.median(t):6.2f} s for {tiles} tiles "
            f"({per_tile:.3f} s/tile), map vs float32: Pearson {r:.4f}"
        )
    for name in ("bfloat16", "auto (int8 scoring)"):
        ratios = [a / b for a, b in zip(times["float32"], times[name], strict=True)]
        print(f"float32 / {name}: {statistics.median(ratios):.2f}x (median of rounds)")


def _run(model, slide, out: Path, options: dict, count: int):
    """The first ``count`` tissue tiles of the slide (row-major), and the seconds taken."""
    first = infer_slide(model, slide, out, ["scorecam"], tiles=[], **options)
    tissue = first.store.tile_tissue().reshape(-1)
    chosen = np.flatnonzero(tissue >= MIN_TISSUE)[:count]
    start = time.perf_counter()
    result = infer_slide(model, slide, out, ["scorecam"], tiles=chosen, resume=False, **options)
    return result, time.perf_counter() - start


if __name__ == "__main__":
    main()
