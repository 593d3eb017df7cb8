"""``wsol bench slide``: the streaming pipeline against a naive tile loop on one slide.

The naive loop is what a first script does: for each tile, read it, run the model on
it alone, write its maps and scores into zarr arrays. The pipeline is
:func:`wsol.infer.infer_slide`: a thread pool prefetches reads, tiles run in batches,
overlaps are blended in memory and whole chunks are written. Both process the same
tiles with the same model and methods; runs alternate, and the tile loop itself is
timed (store creation and tissue detection, done once by either, are not). A third
timing, the model alone on the same tiles already in memory, batched, is the floor no
pipeline can beat on the machine.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import zarr

from wsol.cams import compute_many
from wsol.infer import infer_slide, make_grid
from wsol.machine import describe as describe_machine
from wsol.model import WSOLModel, create_model
from wsol.slide import Slide, open_slide
from wsol.tissue import detect_tissue


def naive_loop(
    model: WSOLModel, slide: Slide, grid, tiles: np.ndarray, methods: list[str], out: Path
) -> float:
    """Seconds to read, infer and write ``tiles`` one at a time."""
    group = zarr.open_group(str(out), mode="w", zarr_format=2)
    t, d = grid.map_tile, grid.map_downsample
    arrays = {
        m: group.create_array(
            m, shape=grid.map_shape, chunks=(256, 256), dtype="float16", fill_value=0.0
        )
        for m in methods
    }
    scores = group.create_array(
        "scores",
        shape=(grid.rows, grid.cols, model.config.num_classes),
        chunks=(256, 256, model.config.num_classes),
        dtype="float32",
        fill_value=float("nan"),
    )
    target = 1 if model.config.num_classes == 2 else None
    start = time.perf_counter()
    for index in tiles:
        i, j = divmod(int(index), grid.cols)
        y, x = grid.read_origin(i, j)
        pixels = slide.read_region(grid.read_level, y, x, grid.read_size, grid.read_size)
        image = torch.from_numpy(pixels).permute(2, 0, 1)[None]
        result = compute_many(model, model.normalize(image), methods, target)
        probs = torch.softmax(result.logits, dim=1)[0]
        scores[i, j] = probs.numpy()
        for method in methods:
            tile_map = F.avg_pool2d(result.maps[method][None], d)[0, 0].numpy()
            y0, x0 = i * grid.map_stride, j * grid.map_stride
            h = min(t, grid.map_shape[0] - y0)
            w = min(t, grid.map_shape[1] - x0)
            arrays[method][y0 : y0 + h, x0 : x0 + w] = tile_map[:h, :w]
    return time.perf_counter() - start


def model_only(
    model: WSOLModel, tiles: list[np.ndarray], methods: list[str], batch_size: int
) -> float:
    """Seconds for the model alone on tiles already in memory, in batches: the floor."""
    target = 1 if model.config.num_classes == 2 else None
    start = time.perf_counter()
    for k in range(0, len(tiles), batch_size):
        batch = torch.from_numpy(np.stack(tiles[k : k + batch_size])).permute(0, 3, 1, 2)
        result = compute_many(model, model.normalize(batch), methods, target)
        result.logits.cpu()
    return time.perf_counter() - start


def bench_slide(
    slide_path: str | Path,
    *,
    backbone: str = "resnet18",
    methods: tuple[str, ...] = ("cam", "gradcam"),
    tiles: int = 96,
    repeats: int = 3,
    batch_size: int = 16,
    workers: int = 2,
    device: str = "cpu",
) -> dict:
    """Median tiles/s of both ways over ``repeats`` alternating rounds, and their ratio."""
    torch.manual_seed(0)
    model = create_model(backbone, 2).to(device).eval()
    slide = open_slide(slide_path)
    grid = make_grid(slide, model.config.input_size)
    fractions = detect_tissue(slide).box_fractions(grid.level0_boxes())
    chosen = np.flatnonzero(fractions >= 0.1)[:tiles]
    methods = list(methods)
    naive_s: list[float] = []
    pipe_s: list[float] = []
    floor_s: list[float] = []
    in_memory = [
        slide.read_region(
            grid.read_level,
            *grid.read_origin(*divmod(int(i), grid.cols)),
            grid.read_size,
            grid.read_size,
        )
        for i in chosen
    ]
    with tempfile.TemporaryDirectory(prefix="wsol-bench-") as tmp:
        # Warm-up of both (allocator, reader caches) before timed rounds.
        naive_loop(model, slide, grid, chosen[:batch_size], methods, Path(tmp) / "warm")
        infer_slide(
            model,
            slide,
            Path(tmp) / "warm-pipe",
            methods,
            tiles=chosen[:batch_size],
            resume=False,
            batch_size=batch_size,
            workers=workers,
        )
        for r in range(repeats):
            naive_s.append(naive_loop(model, slide, grid, chosen, methods, Path(tmp) / f"n{r}"))
            result = infer_slide(
                model,
                slide,
                Path(tmp) / f"p{r}",
                methods,
                tiles=chosen,
                resume=False,
                batch_size=batch_size,
                workers=workers,
            )
            pipe_s.append(result.seconds)
            floor_s.append(model_only(model, in_memory, methods, batch_size))
    ratios = [n / p for n, p in zip(naive_s, pipe_s, strict=True)]
    n = len(chosen)
    return {
        "slide": str(slide_path),
        "backbone": backbone,
        "methods": methods,
        "tiles": n,
        "tile": grid.tile,
        "batch_size": batch_size,
        "workers": workers,
        "device": device,
        "naive_tiles_per_s": n / statistics.median(naive_s),
        "pipeline_tiles_per_s": n / statistics.median(pipe_s),
        "model_only_tiles_per_s": n / statistics.median(floor_s),
        "speedup_median": statistics.median(ratios),
        "pipeline_over_model_only": statistics.median(
            f / p for f, p in zip(floor_s, pipe_s, strict=True)
        ),
        "speedups": ratios,
        "naive_s": naive_s,
        "pipeline_s": pipe_s,
        "model_only_s": floor_s,
        "machine": describe_machine(device),
    }
