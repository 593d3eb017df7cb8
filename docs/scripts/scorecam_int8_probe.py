"""Why Score-CAM scores its masked images in int8 on a CPU (docs/BENCHMARKS.md, issue 2).

resnet18 (random init), crops of the sample H&E tile at 224 px, in one process:

1. one forward of 16 crops: float32, bfloat16 autocast, and the int8 copy of
   ``wsol.cams.int8.int8_scorer`` (what Score-CAM's masked forwards cost); and making
   that copy, calibrated on 6 images as a Score-CAM call of one crop calibrates;
2. Score-CAM of one crop with int8 scoring in chunks of 16, 32 or 64 masked images;
3. with ``--compile``: Score-CAM under bfloat16 autocast with the masked forwards run by
   ``torch.compile`` (weight freezing), against the same without it.

Each part: one warm-up of everything, then ``--repeats`` rounds of all variants in turn;
medians in ms.

Run: python docs/scripts/scorecam_int8_probe.py [--compile]
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import time
from collections.abc import Callable

import torch

from wsol.bench import interleaved_times, tissue_batch
from wsol.cams import compute_many
from wsol.cams.int8 import int8_scorer
from wsol.model import create_model


def rounds(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    times = interleaved_times(fns, repeats)
    return {name: round(1000 * statistics.median(t), 1) for name, t in times.items()}


def bf16(fn: Callable[[], object]) -> Callable[[], object]:
    def run() -> object:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return fn()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = create_model("resnet18", 2).eval()
    x = model.normalize(tissue_batch(16, 224, 0))
    one = x[:1]

    with torch.no_grad():
        int8 = int8_scorer(model, x)
        forwards = {
            "float32": lambda: model(x),
            "bfloat16": bf16(lambda: model(x)),
            "int8": lambda: int8(x),
        }
        print("forward of 16 crops (ms):", rounds(forwards, args.repeats), flush=True)
        making = {"int8 copy, 6 calibration images": lambda: int8_scorer(model, x[:6])}
        print("making the int8 copy (ms):", rounds(making, args.repeats), flush=True)

    chunks = {
        f"int8, chunks of {c}": lambda c=c: compute_many(
            model, one, ["scorecam"], scorecam_int8=True, scorecam_batch_size=c
        )
        for c in (16, 32, 64)
    }
    print("Score-CAM of one crop (ms):", rounds(chunks, args.repeats), flush=True)

    if args.compile:
        scorecam = importlib.import_module("wsol.cams.compute")  # the name compute_many calls
        plain = scorecam.scorecam_scores
        compiled = torch.compile(model, options={"freezing": True})

        def with_compiled(*a, **k):
            # Every chunk padded to the same 16 images: one compiled shape.
            def score(images: torch.Tensor) -> torch.Tensor:
                n = images.shape[0]
                pad = images[:1].expand(16 - n, -1, -1, -1)
                return compiled(torch.cat([images, pad]))[:n]

            return plain(score, *a[1:], **k)

        def run_compiled() -> object:
            scorecam.scorecam_scores = with_compiled
            try:
                return bf16(lambda: compute_many(model, one, ["scorecam"]))()
            finally:
                scorecam.scorecam_scores = plain

        start = time.perf_counter()
        run_compiled()
        print(f"first compiled call (compiles): {time.perf_counter() - start:.1f} s")
        variants = {
            "bfloat16": bf16(lambda: compute_many(model, one, ["scorecam"])),
            "bfloat16, compiled": run_compiled,
        }
        print("Score-CAM of one crop (ms):", rounds(variants, args.repeats), flush=True)


if __name__ == "__main__":
    main()
