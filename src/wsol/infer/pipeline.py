"""Streaming tiled inference over a slide: prefetched reads, batched maps, blended writes."""

from __future__ import annotations

import hashlib
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from wsol.cams import CAM_METHODS, METHODS, compute_many
from wsol.checkpoint import model_fingerprint
from wsol.errors import InputError
from wsol.infer.grid import TileGrid, make_grid
from wsol.infer.store import MapStore
from wsol.model import WSOLModel
from wsol.precision import autocast_dtype, dtype_name
from wsol.refine import DenseCRFParams, dense_crf
from wsol.slide import Slide
from wsol.tissue import TissueMask, detect_tissue

Progress = Callable[[int, int], None]


@dataclass
class InferenceResult:
    store: MapStore
    tiles_total: int  # tiles over tissue
    tiles_run: int  # tiles computed in this call (less than total when resumed)
    seconds: float
    cancelled: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    tissue_mask: TissueMask | None = None  # the slide's, as given or detected
    # ``tissue`` left to its default on a slide whose detection found no tissue at all (a
    # grayscale or unstained image): every tile was run instead of none.
    no_tissue_found: bool = False

    @property
    def tiles_per_second(self) -> float:
        return self.tiles_run / self.seconds if self.seconds > 0 else 0.0


def infer_slide(
    model: WSOLModel,
    slide: Slide,
    out: str | Path,
    methods: Sequence[str],
    *,
    tile: int | None = None,
    overlap: float = 0.25,
    map_downsample: int = 4,
    mpp: float | None = None,
    level: int | None = None,
    target: int | None = None,
    tissue: bool | None = None,
    min_tissue: float = 0.1,
    roi: tuple[float, float, float, float] | None = None,
    batch_size: int = 16,
    workers: int = 2,
    precision: str = "auto",
    resume: bool = True,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    tiles: np.ndarray | None = None,
    refine: DenseCRFParams | None = None,
    tissue_mask: TissueMask | None = None,
    **cam_options: object,
) -> InferenceResult:
    """Compute ``methods`` over a slide and stream the maps into a zarr store at ``out``.

    Parameters
    ----------
    model : WSOLModel
        Runs on its own device.
    slide : Slide
        Any reader from :func:`wsol.slide.open_slide`.
    out : path
        The zarr store (a folder). An unfinished store made with the same settings and
        model is resumed; one made otherwise is replaced.
    methods : sequence of str
        CAM-family and head methods (:data:`wsol.cams.METHODS`).
    tile : int
        Tile side in analysis pixels; default the model's ``input_size``.
    overlap : float
        Fraction of a tile shared with each neighbour; overlapping maps cross-fade.
    map_downsample : int
        Analysis pixels per heatmap pixel.
    mpp, level : float, int
        Resolution the model sees: microns per pixel (read from the nearest finer
        level and resized) or a slide level. Default: the model's training mpp when
        both it and the slide's are known, else level 0.
    target : int, optional
        Class the maps explain. Default: class 1 for two-class models (the positive
        class), otherwise each tile's predicted class.
    tissue : bool, optional
        Skip tiles over glass. Default: on for slides, off for plain images.
    min_tissue : float
        Tiles with a smaller tissue fraction are skipped.
    roi : (y, x, h, w), optional
        Level-0 region (e.g. the viewport) computed first; its map is written as soon
        as its tiles are done, ahead of the rest of the slide.
    precision : str
        ``"auto"`` (default): autocast to float16 on CUDA and to bfloat16 on a CPU with
        native bfloat16 (:func:`wsol.precision.autocast_dtype`), else float32;
        ``"float32"``, ``"bfloat16"`` or ``"float16"`` force one. Part of the store's
        settings: a store is resumed only in the precision it was started in.
        On the CPU, ``"auto"`` also scores Score-CAM's masked images in int8
        (``scorecam_int8=True`` unless ``cam_options`` says otherwise).
    resume : bool
        Continue an unfinished store with identical settings (default); False starts
        over.
    progress : callable(done, total), optional
        Called once the store exists, before the first tile (``done`` counts tiles a
        resumed store already had), then after every batch.
    should_stop : callable() -> bool, optional
        Checked between batches; when it returns True the run stops, keeps everything
        finished so far, and returns with ``cancelled=True``.
    tiles : int array, optional
        Only these tile indices (row-major), e.g. for benchmarks.
    refine : DenseCRFParams, optional
        Refine every tile's maps with the dense CRF on the tile's pixels
        (:func:`wsol.refine.dense_crf`) before they are blended and stored.
    tissue_mask : TissueMask, optional
        This slide's tissue mask, from :func:`wsol.tissue.detect_tissue` or an earlier
        result's ``tissue_mask``: a caller that runs the slide again (the app, after each
        fine-tuning round) saves reading and thresholding its overview, about a second
        for a small slide on a 2-core CPU. Default: detected when a store is made.
    **cam_options
        Passed to :func:`wsol.cams.compute_many`.

    Notes
    -----
    CAM-family maps are min-max normalized per tile, as the methods define them, and
    multiplied by the tile's probability of the explained class, so tiles the
    classifier calls negative stay dark instead of being stretched to full scale.
    F-CAM and PixelCAM maps are the heads' foreground probabilities.
    """
    methods = list(dict.fromkeys(methods))
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise InputError(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    config = model.config
    tile = int(tile or config.input_size)
    if mpp is None and level is None and config.mpp and slide.mpp:
        mpp = config.mpp
    grid = make_grid(
        slide, tile, overlap=overlap, map_downsample=map_downsample, mpp=mpp, level=level
    )
    if target is None and config.num_classes == 2:
        target = 1
    if target is not None and not 0 <= target < config.num_classes:
        raise InputError(f"target {target} out of range for {config.num_classes} classes")
    no_tissue_found = False
    if tissue is None:
        tissue = slide.backend != "image"
        if tissue:
            tissue_mask = tissue_mask if tissue_mask is not None else detect_tissue(slide)
            # The detector looks for stain: where it finds none anywhere it does not
            # apply, and skipping every tile would leave the user with nothing.
            no_tissue_found = not tissue_mask.mask.any()
            if no_tissue_found:
                tissue, tissue_mask = False, None

    dtype = autocast_dtype(model.device, precision)
    if precision == "auto" and model.device.type == "cpu" and "scorecam" in methods:
        cam_options.setdefault("scorecam_int8", True)
    settings = {
        "slide": {
            "name": slide.path.name,
            "shape": list(slide.shape),
            "size": _file_size(slide.path),
        },
        "model": model_fingerprint(model),
        "methods": methods,
        "target": target,
        "tissue": bool(tissue),
        "min_tissue": min_tissue,
        "cam_options": {k: v for k, v in sorted(cam_options.items())},
        "tiles": None if tiles is None else hashlib.sha1(np.asarray(tiles).tobytes()).hexdigest(),
        "refine": None if refine is None else asdict(refine),
        "precision": dtype_name(dtype),
    }
    store, tissue_mask = _open_or_create(
        Path(out),
        grid,
        methods,
        list(config.class_names),
        settings,
        slide,
        tissue,
        resume,
        tissue_mask,
    )
    tile_tissue = store.tile_tissue().reshape(-1)
    selected = tile_tissue >= (min_tissue if tissue else 0.0)
    if tiles is not None:
        keep = np.zeros_like(selected)
        keep[np.asarray(tiles, dtype=np.intp)] = True
        selected &= keep
    total = int(selected.sum())
    if store.complete:
        return InferenceResult(
            store, total, 0, 0.0, tissue_mask=tissue_mask, no_tissue_found=no_tissue_found
        )
    plan = _Plan(grid, store, np.flatnonzero(selected), roi)
    if not len(plan.order):
        store.set_complete(0.0)
        return InferenceResult(
            store, total, 0, 0.0, tissue_mask=tissue_mask, no_tissue_found=no_tissue_found
        )

    runner = _Runner(model, slide, grid, methods, target, dtype, cam_options, refine)
    done = total - len(plan.order)
    cancelled = False
    if progress is not None:
        progress(done, total)  # the store exists: a viewer can show it before tiles arrive
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="wsol-read") as pool:
        pending: deque = deque()
        order = iter(plan.order)
        in_roi_left = plan.roi_count

        def fill() -> None:
            while len(pending) < batch_size * 3:
                index = next(order, None)
                if index is None:
                    return
                pending.append((index, pool.submit(runner.read, int(index))))

        fill()
        try:
            while pending:
                batch = [pending.popleft() for _ in range(min(batch_size, len(pending)))]
                fill()
                indices = np.array([i for i, _ in batch])
                pixels = [f.result() for _, f in batch]
                maps, probs = runner.compute(pixels)
                for k, index in enumerate(indices):
                    plan.accumulate(int(index), maps[:, k], runner.window)
                plan.record_probabilities(indices, probs)
                plan.flush_ready(store)
                done += len(indices)
                if in_roi_left > 0:
                    in_roi_left -= len(indices)
                    if in_roi_left <= 0:
                        plan.flush_partial(store)  # show the ROI now; finished later
                if progress is not None:
                    progress(done, total)
                if should_stop is not None and pending and should_stop():
                    cancelled = True
                    break
        finally:
            for _, future in pending:
                future.cancel()
            plan.save_probabilities(store)
        if cancelled:
            # Keep what ran on screen: unfinished chunks are written as they stand, not
            # marked final, so a resumed run computes them again.
            plan.flush_partial(store)
    seconds = time.perf_counter() - start
    if not cancelled:
        store.set_complete(seconds)
    return InferenceResult(
        store,
        total,
        done - (total - len(plan.order)),
        seconds,
        cancelled,
        runner.timings,
        tissue_mask,
        no_tissue_found,
    )


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _open_or_create(
    path: Path,
    grid: TileGrid,
    methods: list[str],
    class_names: list[str],
    settings: dict,
    slide: Slide,
    tissue: bool,
    resume: bool,
    mask: TissueMask | None,
) -> tuple[MapStore, TissueMask | None]:
    """The store to write, resumed or new, and the slide's tissue mask: ``mask`` as
    given, or detected for a new store (None where tissue is not detected)."""
    if resume and path.exists():
        try:
            store = MapStore.open(path, mode="r+")
        except InputError:
            store = None  # interrupted while being created, or not ours: start over
        if store is not None and store.settings == settings and store.grid == grid:
            return store, mask
    if path.exists() and not (path / ".zgroup").exists():
        raise InputError(f"{path}: exists and is not a zarr store; choose another output")
    if not tissue:
        mask = None
        fractions = np.ones(len(grid), np.float32)
    else:
        mask = mask if mask is not None else detect_tissue(slide)
        fractions = mask.box_fractions(grid.level0_boxes())
    store = MapStore.create(
        path,
        grid=grid,
        methods=methods,
        class_names=class_names,
        settings=settings,
        tile_tissue=fractions,
        tissue_mask=None if mask is None else mask.mask,
        tissue_downsample=1.0 if mask is None else mask.downsample,
        mpp=slide.mpp,
    )
    return store, mask


class _Runner:
    """Reads tiles and turns batches into blended-ready map tiles."""

    def __init__(self, model, slide, grid, methods, target, dtype, cam_options, refine) -> None:
        self.model, self.slide, self.grid, self.refine = model, slide, grid, refine
        self.methods, self.target, self.cam_options = methods, target, cam_options
        self.device = model.device
        self.dtype = dtype  # autocast dtype; None: float32
        self.cam_rows = [k for k, m in enumerate(methods) if m in CAM_METHODS]
        self.window = grid.blend_window()
        self.timings = {"read": 0.0, "compute": 0.0}

    def read(self, index: int) -> np.ndarray:
        start = time.perf_counter()
        i, j = divmod(index, self.grid.cols)
        y, x = self.grid.read_origin(i, j)
        size = self.grid.read_size
        pixels = self.slide.read_region(self.grid.read_level, y, x, size, size)
        self.timings["read"] += time.perf_counter() - start
        return pixels

    def compute(self, pixels: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Maps ``[methods, B, t, t]`` (map resolution) and probabilities ``[B, classes]``."""
        start = time.perf_counter()
        batch = torch.from_numpy(np.stack(pixels)).to(self.device, non_blocking=True)
        x = batch.permute(0, 3, 1, 2).float()
        if x.shape[-1] != self.grid.tile:
            x = F.interpolate(
                x,
                size=(self.grid.tile, self.grid.tile),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            )
        rgb = x
        x = self.model.normalize(x / 255.0)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            result = compute_many(self.model, x, self.methods, self.target, **self.cam_options)
        probs = self.model.probabilities(result.logits.float())
        maps = torch.stack([result.maps[m].float() for m in self.methods])  # [M, B, T, T]
        if self.refine is not None:
            methods, batch = maps.shape[:2]
            images = (rgb / 255.0).clamp(0, 1).repeat(methods, 1, 1, 1)
            maps = dense_crf(maps.flatten(0, 1), images, self.refine).view_as(maps)
        if self.cam_rows:
            weight = probs.gather(1, result.targets[:, None])[:, 0]
            maps[self.cam_rows] = maps[self.cam_rows] * weight.view(1, -1, 1, 1)
        d = self.grid.map_downsample
        if d > 1:
            maps = F.avg_pool2d(maps, d)
        out = maps.clamp_(0, 1).cpu().numpy(), probs.cpu().numpy()
        self.timings["compute"] += time.perf_counter() - start
        return out


class _Plan:
    """Which tiles to run in what order, and blending accumulators per map chunk.

    Tiles run chunk by chunk (row-major over chunks), so a chunk is complete — every
    tile touching it has run — soon after it starts, and only a thin band of
    accumulators is held at any time: memory grows with the slide's width in chunks at
    most, not with its area.
    """

    def __init__(self, grid: TileGrid, store: MapStore, selected: np.ndarray, roi) -> None:
        self.grid, self.chunk = grid, store.chunk
        self.map_shape = grid.map_shape
        origins = grid.map_origins()[selected]
        t = grid.map_tile
        c = self.chunk
        r0, c0 = origins[:, 0] // c, origins[:, 1] // c
        r1 = (np.minimum(origins[:, 0] + t, self.map_shape[0]) - 1) // c
        c1 = (np.minimum(origins[:, 1] + t, self.map_shape[1]) - 1) // c
        done = store.chunk_done.astype(bool)
        needed = ~(done[r0, c0] & done[r0, c1] & done[r1, c0] & done[r1, c1])
        self.remaining = np.zeros_like(store.chunk_done, dtype=np.int64)
        for rr, cc in ((r0, c0), (r0, c1), (r1, c0), (r1, c1)):
            distinct = np.ones(len(rr), bool)
            if rr is r1:
                distinct &= r1 != r0
            if cc is c1:
                distinct &= c1 != c0
            np.add.at(self.remaining, (rr[needed & distinct], cc[needed & distinct]), 1)
        # Chunks no tissue tile touches are final as they are (zeros).
        empty = (self.remaining == 0) & ~done
        if empty.any():
            store.mark_done(empty)
        self.done = store.chunk_done.astype(bool)
        run = selected[needed]
        key_roi = np.zeros(len(run), bool)
        if roi is not None:
            boxes = grid.level0_boxes()[run]
            y, x, h, w = roi
            key_roi = ~(
                (boxes[:, 0] < y + h)
                & (boxes[:, 0] + boxes[:, 2] > y)
                & (boxes[:, 1] < x + w)
                & (boxes[:, 1] + boxes[:, 3] > x)
            )
        self.roi_count = int((~key_roi).sum()) if roi is not None else 0
        rows, cols = np.divmod(run, grid.cols)
        self.order = run[np.lexsort((cols, rows, c0[needed], r0[needed], key_roi))]
        self.acc: dict[tuple[int, int], np.ndarray] = {}
        self.weight: dict[tuple[int, int], np.ndarray] = {}
        self.probs: dict[int, np.ndarray] = {}

    def _chunk_shape(self, r: int, c: int) -> tuple[int, int]:
        h = min(self.chunk, self.map_shape[0] - r * self.chunk)
        w = min(self.chunk, self.map_shape[1] - c * self.chunk)
        return h, w

    def accumulate(self, index: int, maps: np.ndarray, window: np.ndarray) -> None:
        """Add one tile's weighted maps ``[M, t, t]`` into the chunks it overlaps."""
        i, j = divmod(index, self.grid.cols)
        y0, x0 = i * self.grid.map_stride, j * self.grid.map_stride
        t, c = self.grid.map_tile, self.chunk
        y1, x1 = min(y0 + t, self.map_shape[0]), min(x0 + t, self.map_shape[1])
        for r in range(y0 // c, (y1 - 1) // c + 1):
            for cc in range(x0 // c, (x1 - 1) // c + 1):
                if self.done[r, cc]:
                    continue
                key = (r, cc)
                if key not in self.acc:
                    h, w = self._chunk_shape(r, cc)
                    self.acc[key] = np.zeros((maps.shape[0], h, w), np.float32)
                    self.weight[key] = np.zeros((h, w), np.float32)
                ys, ye = max(y0, r * c), min(y1, (r + 1) * c)
                xs, xe = max(x0, cc * c), min(x1, (cc + 1) * c)
                tile_part = (slice(ys - y0, ye - y0), slice(xs - x0, xe - x0))
                dst = (slice(ys - r * c, ye - r * c), slice(xs - cc * c, xe - cc * c))
                w = window[tile_part]
                self.acc[key][(slice(None), *dst)] += maps[(slice(None), *tile_part)] * w
                self.weight[key][dst] += w
                self.remaining[r, cc] -= 1

    def _blended(self, key: tuple[int, int]) -> np.ndarray:
        weight = self.weight[key]
        return np.divide(self.acc[key], weight, out=np.zeros_like(self.acc[key]), where=weight > 0)

    def flush_ready(self, store: MapStore) -> None:
        """Write and free every chunk whose tiles have all run."""
        ready = [key for key in self.acc if self.remaining[key] == 0]
        if ready:
            self.save_probabilities(store)  # tile scores are on disk before chunks are final
        for key in ready:
            store.write_chunk(*key, self._blended(key), final=True)
            self.done[key] = True
            del self.acc[key], self.weight[key]

    def flush_partial(self, store: MapStore) -> None:
        """Write unfinished chunks as they stand, not marked final (ROI preview)."""
        for key in self.acc:
            store.write_chunk(*key, self._blended(key), final=False)

    def record_probabilities(self, indices: np.ndarray, probs: np.ndarray) -> None:
        for index, p in zip(indices, probs, strict=True):
            self.probs[int(index)] = p

    def save_probabilities(self, store: MapStore) -> None:
        """Write buffered tile probabilities (rows they span) to the store."""
        if not self.probs:
            return
        indices = np.fromiter(self.probs, np.int64)
        rows = indices // self.grid.cols
        lo, hi = int(rows.min()), int(rows.max()) + 1
        array = store.group["tiles/probabilities"]
        block = np.asarray(array[lo:hi])
        for index, p in self.probs.items():
            i, j = divmod(index, self.grid.cols)
            block[i - lo, j] = p
        store.write_probabilities(slice(lo, hi), block)
        self.probs.clear()
