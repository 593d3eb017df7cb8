"""Would an inference-optimized encoder make the slide pipeline much faster on CPU?

Times the resnet18 encoder (random init, batch 16, 224 px, channels-last, inference
mode) as the model runs it, with BatchNorm folded into the convolutions
(``torch.fx.experimental.optimization.fuse``), as a frozen TorchScript trace after
``torch.jit.optimize_for_inference``, and under bfloat16 autocast (what
``infer_slide``'s ``precision="auto"`` picks on a CPU with native bfloat16). Prints the
median of ``--repeats`` runs of each and its speed-up over the plain encoder, and how far
the outputs are from the plain encoder's.

    .venv/bin/python docs/scripts/encoder_inference_speed.py
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings

import torch
from torch.fx.experimental.optimization import fuse

import wsol


def _median_seconds(run, x: torch.Tensor, repeats: int) -> float:
    with torch.inference_mode():
        run(x)  # warm-up: oneDNN picks and caches its kernels
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run(x)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    encoder = wsol.create_model(args.backbone, num_classes=2).eval().encoder
    x = torch.randn(16, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    folded = fuse(copy.deepcopy(encoder))

    def bf16(images: torch.Tensor) -> list[torch.Tensor]:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return encoder(images)

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's tracer warnings
        traced = torch.jit.optimize_for_inference(
            torch.jit.freeze(torch.jit.trace(copy.deepcopy(encoder), x, strict=False))
        )
        reference = encoder(x)
        variants = (
            ("BatchNorm folded", folded),
            ("optimize_for_inference", traced),
            ("bfloat16 autocast", bf16),
        )
        for name, other in variants:
            pairs = zip(reference, other(x), strict=True)
            worst = max(float((a - b.float()).abs().max() / a.abs().max()) for a, b in pairs)
            print(f"{name}: largest difference from the plain encoder {worst:.2e} (relative)")
    plain = _median_seconds(encoder, x, args.repeats)
    print(f"plain encoder: {plain:.3f} s")
    for name, run in variants:
        seconds = _median_seconds(run, x, args.repeats)
        print(f"{name}: {seconds:.3f} s ({plain / seconds:.2f}x)")


if __name__ == "__main__":
    main()
