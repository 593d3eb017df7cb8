"""``wsol bench slide``: the streaming pipeline against a naive tile loop on one slide.

The naive loop is what a first script does: for each tile, read it, run the model on
it alone, write its maps and scores into zarr arrays. The pipeline is
:func:`wsol.infer.infer_slide`: a thread pool prefetches reads, tiles run in batches,
overlaps are blended in memory and whole chunks are written. Both process the same
tiles with the same model and methods; runs alternate, and the tile loop itself is
timed (store creation and tissue detection, done once by either, are not). A third
timing, the model alone on the same tiles already in memory, batched, is the floor no
pipeline can beat on the machine.

The naive loop runs in float32, as a first script would. The pipeline runs in the
precision it picks by default (``precision="auto"``: bfloat16 on a CPU with native
bfloat16, float16 on CUDA), and the model-only floor in the same one. When that is not
float32, each round also times the pipeline in float32, so the share of the speed-up
that comes from the precision is measured in the same run, and the two pipelines'
stored maps are compared.
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
from wsol.infer import InferenceResult, MapStore, infer_slide, make_grid
from wsol.machine import describe as describe_machine
from wsol.model import WSOLModel, create_model
from wsol.precision import autocast_dtype, dtype_name
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
        scores[i, j] = probs.cpu().numpy()
        for method in methods:
            tile_map = F.avg_pool2d(result.maps[method][None], d)[0, 0].cpu().numpy()
            y0, x0 = i * grid.map_stride, j * grid.map_stride
            h = min(t, grid.map_shape[0] - y0)
            w = min(t, grid.map_shape[1] - x0)
            arrays[method][y0 : y0 + h, x0 : x0 + w] = tile_map[:h, :w]
    return time.perf_counter() - start


def model_only(
    model: WSOLModel,
    tiles: list[np.ndarray],
    methods: list[str],
    batch_size: int,
    dtype: torch.dtype | None = None,
) -> float:
    """Seconds for the model alone on tiles already in memory, in batches: the floor."""
    target = 1 if model.config.num_classes == 2 else None
    device = model.device.type
    start = time.perf_counter()
    for k in range(0, len(tiles), batch_size):
        batch = torch.from_numpy(np.stack(tiles[k : k + batch_size])).permute(0, 3, 1, 2)
        with torch.autocast(device, dtype=dtype, enabled=dtype is not None):
            result = compute_many(model, model.normalize(batch.to(model.device)), methods, target)
        result.logits.cpu()
    return time.perf_counter() - start


def map_difference(a: MapStore, b: MapStore) -> dict[str, dict[str, float]]:
    """Per method, the largest and the mean absolute difference of two stores' maps."""
    out = {}
    for method in a.methods:
        x = np.asarray(a.levels(method)[0][...], np.float32)
        y = np.asarray(b.levels(method)[0][...], np.float32)
        diff = np.abs(x - y)
        out[method] = {"max": float(diff.max()), "mean": float(diff.mean())}
    return out


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
    dtype = autocast_dtype(device)
    torch.manual_seed(0)
    model = create_model(backbone, 2).to(device).eval()
    slide = open_slide(slide_path)
    grid = make_grid(slide, model.config.input_size)
    fractions = detect_tissue(slide).box_fractions(grid.level0_boxes())
    chosen = np.flatnonzero(fractions >= 0.1)[:tiles]
    methods = list(methods)
    naive_s: list[float] = []
    pipe_s: list[float] = []
    pipe32_s: list[float] = []
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

        def run(out: Path, precision: str, some: np.ndarray = chosen) -> InferenceResult:
            return infer_slide(
                model,
                slide,
                out,
                methods,
                tiles=some,
                resume=False,
                batch_size=batch_size,
                workers=workers,
                precision=precision,
            )

        run(Path(tmp) / "warm-pipe", "auto", chosen[:batch_size])
        if dtype is not None:
            run(Path(tmp) / "warm-pipe32", "float32", chosen[:batch_size])
        for r in range(repeats):
            naive_s.append(naive_loop(model, slide, grid, chosen, methods, Path(tmp) / f"n{r}"))
            pipe_s.append(run(Path(tmp) / f"p{r}", "auto").seconds)
            if dtype is not None:
                pipe32_s.append(run(Path(tmp) / f"f{r}", "float32").seconds)
            floor_s.append(model_only(model, in_memory, methods, batch_size, dtype))
        difference = None
        if dtype is not None:
            stores = [MapStore.open(Path(tmp) / f"{k}{repeats - 1}") for k in "pf"]
            difference = map_difference(*stores)
    ratios = [n / p for n, p in zip(naive_s, pipe_s, strict=True)]
    n = len(chosen)
    report = {
        "slide": str(slide_path),
        "backbone": backbone,
        "methods": methods,
        "tiles": n,
        "tile": grid.tile,
        "batch_size": batch_size,
        "workers": workers,
        "device": device,
        "precision": dtype_name(dtype),
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
    if dtype is not None:
        report.update(
            pipeline_float32_tiles_per_s=n / statistics.median(pipe32_s),
            speedup_float32_median=statistics.median(
                nv / p for nv, p in zip(naive_s, pipe32_s, strict=True)
            ),
            precision_gain_median=statistics.median(
                f / p for f, p in zip(pipe32_s, pipe_s, strict=True)
            ),
            pipeline_float32_s=pipe32_s,
            map_difference=difference,
        )
    return report
