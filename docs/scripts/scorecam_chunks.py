"""Does exact Score-CAM run faster with larger chunks or channels-last? (docs/BENCHMARKS.md)

One 224-px crop of the sample H&E tile, resnet18 (random init), exact Score-CAM through
``compute_many``: chunks of 16 (the CPU default) or 64 masked images, contiguous or
channels-last memory format, float32 or under bfloat16 autocast. One warm-up each, then
``--repeats`` rounds of all eight in turn; medians.

Run: python docs/scripts/scorecam_chunks.py
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from wsol.bench import tissue_batch
from wsol.cams import compute_many
from wsol.model import create_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = create_model("resnet18", 2).eval()
    x = model.normalize(tissue_batch(1, 224, 0))

    def run(chunk: int, bf16: bool, channels_last: bool) -> None:
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            compute_many(model.to(memory_format=fmt), x, ["scorecam"], scorecam_batch_size=chunk)

    configs = [(c, b, cl) for b in (False, True) for cl in (False, True) for c in (16, 64)]
    times: dict[tuple, list[float]] = {c: [] for c in configs}
    for c in configs:
        run(*c)
    for _ in range(args.repeats):
        for c in configs:
            start = time.perf_counter()
            run(*c)
            times[c].append(time.perf_counter() - start)
    for (chunk, bf16, cl), t in times.items():
        precision = "bfloat16" if bf16 else "float32"
        layout = "channels-last" if cl else "contiguous"
        print(f"chunk {chunk:>3}  {precision:<8}  {layout:<13}  {statistics.median(t):.2f} s")


if __name__ == "__main__":
    main()
