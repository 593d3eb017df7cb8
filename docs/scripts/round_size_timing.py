"""Time of one fine-tuning round by region size, with and without whole-region checks.

The first test region of each size (a mosaic of ``grid x grid`` test tiles), the
benchmark's simulated user's first 10 strokes, one ``heads`` round of the app's settings
per seed; prints each round's time and the median.

    .venv/bin/python docs/scripts/round_size_timing.py /tmp/bench1 /tmp/q18.safetensors
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import torch
from round_trace import app_round  # docs/scripts, beside this script

import wsol.bench_corrections as bc
from wsol.checkpoint import load_model
from wsol.data import WSOLDataset
from wsol.pseudo import IGNORE
from wsol.train import TrainData, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--grids", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--check-every", type=int, nargs="+", default=[0, 5])
    parser.add_argument("--repeats", type=int, default=3, help="rounds (seeds) per setting")
    args = parser.parse_args()

    base = load_model(args.checkpoint)
    test = WSOLDataset(args.data / "test", base.config.class_names)
    for grid in args.grids:
        found = bc.mosaics(test, base.config.input_size, grid=grid, count=1)
        if not found:
            raise SystemExit(f"{args.data / 'test'}: too few tiles for a {grid} x {grid} region")
        image, truth = found[0]
        truth = truth.numpy()
        for every in args.check_every:
            times, kept = [], []
            for seed in range(args.repeats):
                model = copy.deepcopy(base)
                corrections = torch.full(truth.shape, IGNORE, dtype=torch.long)
                bc.paint(corrections, bc._predict(model, image, "fcam"), truth, 10, 4)
                config = app_round(base, check_every=every, seed=seed)
                data = TrainData(image[None], torch.tensor([1]), corrections[None])
                start = time.perf_counter()
                result = train(model, data, "heads", config)
                times.append(time.perf_counter() - start)
                kept.append(result.kept_step)
            print(
                f"{truth.shape[0]} px, check every {every}: rounds "
                + ", ".join(f"{t:.2f}" for t in times)
                + f" s (median {statistics.median(times):.2f}); kept steps {kept}",
                flush=True,
            )


if __name__ == "__main__":
    main()
