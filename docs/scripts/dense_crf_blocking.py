"""Dense-CRF time per tile size before and after cache blocking (docs/BENCHMARKS.md).

Loads ``src/wsol/refine.py`` as of a given commit (default 0b3a87c, whole-image splat,
blur and slice) beside the installed ``wsol.refine`` and times both on the same H&E
mosaic tiles, in turn within each round, one thread unless told otherwise.

Run: python docs/scripts/dense_crf_blocking.py BENCHMARK_DIR [--commit REV] [--threads N]
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from wsol import refine
from wsol.data import WSOLDataset


def load_old(commit: str) -> object:
    root = Path(__file__).resolve().parents[2]
    source = subprocess.run(
        ["git", "show", f"{commit}:src/wsol/refine.py"],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "refine_old.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("refine_old", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["refine_old"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def mosaic(images: torch.Tensor, size: int) -> torch.Tensor:
    reps = -(-size // images.shape[-1])
    rows = [
        torch.cat(list(images[(r * reps + torch.arange(reps)) % len(images)]), -1)
        for r in range(reps)
    ]
    return torch.cat(rows, -2)[:, :size, :size][None]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("benchmark", help="a `wsol make-benchmark` directory")
    parser.add_argument("--commit", default="0b3a87c")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sizes", default="256,512,1024,2048")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    old = load_old(args.commit)
    test = WSOLDataset(Path(args.benchmark) / "test")
    images = next(iter(test.batches(64, 128))).images
    sizes = [int(s) for s in args.sizes.split(",")]
    impls = {"before": old.dense_crf, "after": refine.dense_crf}
    times: dict[tuple[str, int], list[float]] = {}
    for size in sizes:
        tile = mosaic(images, size)
        yy, xx = torch.meshgrid(
            torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij"
        )
        heat = torch.exp(-(yy**2 + xx**2) * 3)[None]
        gap = (impls["before"](heat, tile) - impls["after"](heat, tile)).abs().max()
        print(f"{size}²: largest difference between the two {gap:.1e}", flush=True)
        for _ in range(args.repeats):
            for name, crf in impls.items():
                start = time.perf_counter()
                crf(heat, tile)
                times.setdefault((name, size), []).append(time.perf_counter() - start)
    for name in impls:
        med = [statistics.median(times[(name, s)]) for s in sizes]
        ratios = " ".join(f"{b / a:.2f}x" for a, b in itertools.pairwise(med))
        cells = " ".join(f"{s}²: {m * 1000:.0f} ms" for s, m in zip(sizes, med, strict=True))
        print(f"{name}: {cells}; time per 4x pixels: {ratios}")


if __name__ == "__main__":
    sys.exit(main())
