"""Where does exact Score-CAM's time go? (docs/BENCHMARKS.md, issue 2)

One 224-px crop of the sample H&E tile, resnet18 (random init), exact Score-CAM through
``compute_many``, in float32 and under bfloat16 autocast. Prints, for each precision:

- the share of the run's CPU time per operator (``torch.profiler``, one run after a
  warm-up), convolutions first;
- one chunk of 16 masked images against a plain forward of 16 unmasked crops, and the
  mask arithmetic of that chunk (medians of ``--repeats``): if a masked forward costs
  what a plain one costs, Score-CAM sits at the forward floor of the images it must
  score.

Run: python docs/scripts/scorecam_profile.py
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import torch
import torch.nn.functional as F
from torch.profiler import profile

from wsol.bench import tissue_batch
from wsol.cams import compute_many
from wsol.model import create_model


def _median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = create_model("resnet18", 2).eval()
    x = model.normalize(tissue_batch(1, 224, 0))
    batch = model.normalize(tissue_batch(16, 224, 0))
    with torch.no_grad():
        acts = model.forward_features(x)[model.cam_tap][0, :16]

    def masked() -> torch.Tensor:
        masks = F.interpolate(acts[:, None], size=(224, 224), mode="bilinear", align_corners=True)
        flat = masks.flatten(1)
        lo = flat.amin(1).view(-1, 1, 1, 1)
        hi = flat.amax(1).view(-1, 1, 1, 1)
        return x * (masks - lo) / (hi - lo + 1e-8)

    for name, bf16 in (("float32", False), ("bfloat16", True)):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16), torch.no_grad():
            compute_many(model, x, ["scorecam"])
            with profile() as prof:
                compute_many(model, x, ["scorecam"])
            events = prof.key_averages()
            total = sum(e.self_cpu_time_total for e in events)
            print(f"{name}: exact Score-CAM, {total / 1e6:.2f} s of CPU time profiled")
            for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:6]:
                print(f"  {e.key:<32} {100 * e.self_cpu_time_total / total:5.1f}%")
            prep = _median_ms(masked, args.repeats)
            score = _median_ms(partial(model, masked()), args.repeats)
            plain = _median_ms(partial(model, batch), args.repeats)
            print(
                f"  16 masked images: masks {prep:.1f} ms, forward {score:.0f} ms; "
                f"16 plain crops: forward {plain:.0f} ms"
            )


if __name__ == "__main__":
    main()
