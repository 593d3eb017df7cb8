"""``wsol bench dense-crf``: what the dense-CRF refinement does to the maps, and its cost.

Quality: the test split of the tissue benchmark evaluated with and without
:func:`wsol.refine.dense_crf` on every map (same model, same maps), PxAP and Dice.
Cost: the median time of one refinement of a 512 x 512 tile (and of other sizes, to
show how it scales), on H&E pixels cut from the benchmark's tiles.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import torch

from wsol.checkpoint import load_model
from wsol.data import WSOLDataset
from wsol.evaluate import evaluate
from wsol.machine import describe as describe_machine
from wsol.refine import DenseCRFParams, dense_crf


def time_dense_crf(
    images: torch.Tensor,
    sizes: Sequence[int] = (256, 512, 1024),
    repeats: int = 5,
    params: DenseCRFParams | None = None,
    device: str = "cpu",
) -> dict[int, dict]:
    """Time one ``dense_crf`` call on one ``size x size`` tile per size.

    The tile is a mosaic of the given uint8 images ``[N, 3, s, s]``, the map a smooth
    blob, so the colour content (and so the bilateral grid) is realistic. Each round times
    every size once, so ``ratio_to_previous`` (the median over rounds of this size's time
    over the previous size's) is not skewed by a slow phase of a shared machine.
    """
    params = params or DenseCRFParams()
    sizes = sorted(sizes)
    inputs = {}
    for size in sizes:
        side = images.shape[-1]
        reps = -(-size // side)
        rows = [
            torch.cat(list(images[(r * reps + torch.arange(reps)) % len(images)]), -1)
            for r in range(reps)
        ]
        tile = torch.cat(rows, -2)[:, :size, :size][None].to(device)
        yy, xx = torch.meshgrid(
            torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij"
        )
        inputs[size] = (torch.exp(-(yy**2 + xx**2) * 3)[None].to(device), tile)
        dense_crf(*inputs[size], params)  # warm-up
    runs: dict[int, list[float]] = {size: [] for size in sizes}
    for _ in range(repeats):
        for size in sizes:
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            dense_crf(*inputs[size], params)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            runs[size].append(time.perf_counter() - start)
    out: dict[int, dict] = {}
    for i, size in enumerate(sizes):
        median = statistics.median(runs[size])
        out[size] = {
            "median_s": median,
            "runs": runs[size],
            "pixels": size * size,
            "ns_per_pixel": median / (size * size) * 1e9,
        }
        if i:
            prev = sizes[i - 1]
            ratios = [a / b for a, b in zip(runs[size], runs[prev], strict=True)]
            out[size]["ratio_to_previous"] = statistics.median(ratios)
            out[size]["pixel_ratio_to_previous"] = (size / prev) ** 2
    return out


def bench_dense_crf(
    data: str | Path,
    checkpoint: str | Path,
    *,
    methods: Sequence[str] = ("cam", "fcam", "pixelcam"),
    sizes: Sequence[int] = (256, 512, 1024),
    repeats: int = 5,
    device: str = "cpu",
    log: Callable[[str], None] = print,
) -> dict:
    data = Path(data)
    model = load_model(checkpoint)
    test = WSOLDataset(data / "test", model.config.class_names)
    params = DenseCRFParams()
    rows: dict[str, dict] = {}
    for refine in (None, params):
        report = evaluate(model, test, list(methods), batch_size=32, boxes=False, refine=refine)
        key = "dense_crf" if refine else "plain"
        rows[key] = {
            m: {"pxap": e["pxap"], "dice_fg": e["best"]["dice_fg"], "tau": e["best"]["tau"]}
            for m, e in report["methods"].items()
        }
        log(f"{key}: " + ", ".join(f"{m} Dice {r['dice_fg']:.1f}" for m, r in rows[key].items()))
    images = torch.cat([b.images for b in test.batches(64, model.config.input_size)][:1])
    timing = time_dense_crf(images, sizes, repeats, params, device)
    return {
        "data": str(data),
        "checkpoint": str(checkpoint),
        "params": asdict(params),
        "quality": rows,
        "timing": {str(k): v for k, v in timing.items()},
        "device": device,
        "threads": torch.get_num_threads(),
        "machine": describe_machine(device),
    }


def markdown_tables(report: dict) -> str:
    plain, crf = report["quality"]["plain"], report["quality"]["dense_crf"]
    lines = [
        "| method | PxAP | PxAP + dense CRF | Dice (fg) | Dice (fg) + dense CRF |",
        "|---|---|---|---|---|",
    ]
    for m in plain:
        lines.append(
            f"| {m} | {plain[m]['pxap']:.1f} | {crf[m]['pxap']:.1f} "
            f"| {plain[m]['dice_fg']:.1f} | {crf[m]['dice_fg']:.1f} |"
        )
    lines += [
        "",
        "| tile | median time | ns per pixel | time / previous size | pixels / previous size |",
        "|---|---|---|---|---|",
    ]
    for size, t in report["timing"].items():
        ratio = f"{t['ratio_to_previous']:.2f}×" if "ratio_to_previous" in t else ""
        pixels = f"{t['pixel_ratio_to_previous']:.0f}×" if ratio else ""
        lines.append(
            f"| {size}² | {t['median_s'] * 1000:.0f} ms | {t['ns_per_pixel']:.0f} "
            f"| {ratio} | {pixels} |"
        )
    return "\n".join(lines)


__all__ = ["bench_dense_crf", "markdown_tables", "time_dense_crf"]
