"""A region of a slide at the model's working resolution: what the app edits and retrains on.

Whole-slide maps live in a :class:`wsol.infer.MapStore`; pseudo-labels and corrections
need a single-scale array the user can paint on. A :class:`Region` is a level-0 box plus
the resolution the model sees it at (its training mpp), and the functions here read
its pixels, derive pseudo-labels the way the training stages sample seeds, flip a
connected region of labels, and fine-tune the heads on it.

Label values follow napari's Labels convention and ``TrainData.from_dataset``:
``0`` = none / ignore, ``1`` = background, ``2`` = foreground.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from wsol.cams import compute_many
from wsol.errors import InputError
from wsol.infer.grid import TileGrid
from wsol.model import WSOLModel
from wsol.pseudo import IGNORE, TRIMAP_BG, TRIMAP_FG, trimap
from wsol.slide import Slide
from wsol.train import (
    RoundCache,
    TrainConfig,
    TrainData,
    TrainProgress,
    TrainResult,
    train,
)

NONE, BACKGROUND, FOREGROUND = 0, 1, 2

#: Longest side (analysis pixels) of a region one can label and fine-tune on: a
#: fine-tuning round encodes the whole region, and the app promises rounds of seconds.
MAX_EDIT_SIZE = 1536


@dataclass(frozen=True)
class Region:
    """A level-0 box ``(y, x, h, w)`` seen at ``downsample`` level-0 px per analysis px."""

    y: int
    x: int
    h: int
    w: int
    downsample: float = 1.0

    @property
    def shape(self) -> tuple[int, int]:
        """Size in analysis pixels (the model's working resolution)."""
        return max(1, round(self.h / self.downsample)), max(1, round(self.w / self.downsample))

    @property
    def box(self) -> tuple[int, int, int, int]:
        return self.y, self.x, self.h, self.w

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Region:
        return cls(**{k: data[k] for k in ("y", "x", "h", "w", "downsample")})

    def key(self) -> str:
        """A file-name-safe identity, e.g. for the corrections of this region."""
        return f"y{self.y}_x{self.x}_h{self.h}_w{self.w}_d{self.downsample:g}"

    @classmethod
    def from_key(cls, key: str) -> Region:
        """The region :meth:`key` names (InputError for any other text)."""
        found = re.fullmatch(r"y(-?\d+)_x(-?\d+)_h(\d+)_w(\d+)_d([0-9.e+-]+)", key)
        if found is None:
            raise InputError(f"{key!r} does not name a region (y<Y>_x<X>_h<H>_w<W>_d<D>)")
        y, x, h, w = (int(v) for v in found.groups()[:4])
        return cls(y, x, h, w, float(found.group(5)))


def analysis_downsample(slide: Slide, model_mpp: float | None) -> float:
    """Level-0 pixels per model pixel: the model's mpp over the slide's, else 1.

    The same rule :func:`wsol.infer.infer_slide` applies by default.
    """
    if model_mpp and slide.mpp:
        return float(model_mpp / slide.mpp)
    return 1.0


def clip_region(
    slide: Slide,
    y: float,
    x: float,
    h: float,
    w: float,
    downsample: float = 1.0,
    multiple: int = 1,
) -> Region:
    """The part of a level-0 box inside the slide; :class:`InputError` when none is.

    With ``multiple``, the box grows (inside the slide where it can) so that its size
    at the analysis resolution is a multiple of it, e.g. the encoder's output stride.
    Where the slide is too short for that, the box spans the slide's whole side: the
    model calls here pad such a region (:func:`pad_to_grid`), and the user can label
    up to the slide's edge.
    """
    H, W = slide.shape
    y0, x0 = max(0, int(np.floor(y))), max(0, int(np.floor(x)))
    y1, x1 = min(H, int(np.ceil(y + h))), min(W, int(np.ceil(x + w)))
    if y1 - y0 < 1 or x1 - x0 < 1:
        raise InputError(
            f"{slide.path}: the region ({y:.0f}, {x:.0f}, {h:.0f} x {w:.0f}) lies outside the slide"
        )
    starts, sizes = [], []
    for start, end, limit in ((y0, y1, H), (x0, x1, W)):
        size = end - start
        if multiple > 1:
            cells = max(1, int(np.ceil(size / downsample / multiple)))
            size = min(limit, round(cells * multiple * downsample))
            start = min(start, limit - size)
        starts.append(start)
        sizes.append(size)
    return Region(starts[0], starts[1], sizes[0], sizes[1], float(downsample))


def read_region_rgb(slide: Slide, region: Region) -> np.ndarray:
    """The region's pixels at its analysis resolution, uint8 ``[h, w, 3]``.

    Read from the coarsest level not coarser than needed, then resized (area-averaged).
    """
    level = slide.best_level(region.downsample)
    ds = slide.levels[level].downsample
    ly, lx = int(region.y / ds), int(region.x / ds)
    lh, lw = max(1, round(region.h / ds)), max(1, round(region.w / ds))
    pixels = slide.read_region(level, ly, lx, lh, lw)
    shape = region.shape
    if pixels.shape[:2] == shape:
        return pixels
    x = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)[None].float()
    x = F.interpolate(x, size=shape, mode="bilinear", antialias=True, align_corners=False)
    return x[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def tiles_in_box(grid: TileGrid, y: int, x: int, h: int, w: int) -> np.ndarray:
    """Row-major indices of the grid's tiles whose level-0 box meets ``(y, x, h, w)``."""
    boxes = grid.level0_boxes()  # [N, 4]: y, x, h, w
    hit = (
        (boxes[:, 0] < y + h)
        & (boxes[:, 0] + boxes[:, 2] > y)
        & (boxes[:, 1] < x + w)
        & (boxes[:, 1] + boxes[:, 3] > x)
    )
    return np.flatnonzero(hit)


def check_editable(region: Region) -> Region:
    """``region`` if it is small enough to label and fine-tune on, else InputError."""
    if max(region.shape) > MAX_EDIT_SIZE:
        h, w = region.shape
        raise InputError(
            f"the region is {w} x {h} px at the model's resolution; label and fine-tune "
            f"on at most {MAX_EDIT_SIZE} x {MAX_EDIT_SIZE} (zoom in or draw a smaller region)"
        )
    return region


def pad_to_grid(model: WSOLModel, array: np.ndarray, fill: int | None = None) -> np.ndarray:
    """``array`` (``[H, W, ...]``) grown at the bottom and right to whole cells of the
    encoder's coarsest grid, mirrored (or ``fill``-ed: e.g. labels left unpainted).

    The encoder's feature maps then line up with the pixels, as the ``heads`` stage's
    windows and the maps' upsampling assume; a region that spans a slide's side up to
    its edge is not such a multiple (:func:`clip_region`).
    """
    grid = max(model.feature_reductions)
    h, w = array.shape[:2]
    pad = [(0, -h % grid), (0, -w % grid)] + [(0, 0)] * (array.ndim - 2)
    if not (pad[0][1] or pad[1][1]):
        return array
    if fill is not None:
        return np.pad(array, pad, constant_values=fill)
    # Mirror what is there; a side shorter than its padding repeats its edge instead.
    mode = "reflect" if pad[0][1] < h and pad[1][1] < w else "edge"
    return np.pad(array, pad, mode=mode)


def _as_batch(model: WSOLModel, rgb: np.ndarray) -> torch.Tensor:
    image = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None]
    return model.normalize(image.to(model.device))


def seed_map(model: WSOLModel, rgb: np.ndarray, method: str, target: int) -> torch.Tensor:
    """``[H, W]`` map the seeds are drawn from: ``method`` on the whole region at once.

    The ``heads`` training stage computes its seed maps exactly this way, so the
    pseudo-labels the user sees are the ones the fine-tuning samples from.
    """
    model.eval()
    h, w = rgb.shape[:2]
    result = compute_many(model, _as_batch(model, pad_to_grid(model, rgb)), [method], [target])
    return result.maps[method][0, :h, :w].detach().float().cpu()


def pseudo_labels(map_: torch.Tensor, bg_fraction: float = 0.5, erode: int = 0) -> np.ndarray:
    """uint8 ``[H, W]`` in napari values: 2 = Otsu foreground, 1 = lowest
    ``bg_fraction`` of the map, 0 = ignored (where no seed is ever drawn)."""
    tri = trimap(map_[None], bg_fraction=bg_fraction, erode=erode)[0].numpy()
    out = np.zeros(tri.shape, np.uint8)
    out[tri == TRIMAP_BG] = BACKGROUND
    out[tri == TRIMAP_FG] = FOREGROUND
    return out


def effective_labels(pseudo: np.ndarray, corrections: np.ndarray) -> np.ndarray:
    """Pseudo-labels with the user's corrections on top (corrections win)."""
    return np.where(corrections != NONE, corrections, pseudo).astype(np.uint8)


def resample_labels(labels: np.ndarray, src: Region, dst: Region) -> np.ndarray:
    """``labels`` painted on region ``src``, carried onto the pixels of region ``dst``.

    Both regions are boxes of the same slide, each at its own analysis resolution (e.g.
    before and after the image's pixel size was set). A ``dst`` pixel no larger than a
    ``src`` pixel takes the label under its centre; a larger one takes the label painted
    on most of the ``src`` pixels it covers (foreground on a tie), so a stroke thinner
    than a ``dst`` pixel is kept. Parts of ``dst`` outside ``src`` are unpainted (0).
    """
    if labels.shape != src.shape:
        raise InputError(f"labels {labels.shape} do not fit the region {src.shape}")
    (sh, sw), (dh, dw) = src.shape, dst.shape
    if dst.h / dh <= src.h / sh and dst.w / dw <= src.w / sw:
        rows = np.floor((dst.y + (np.arange(dh) + 0.5) * dst.h / dh - src.y) * sh / src.h)
        cols = np.floor((dst.x + (np.arange(dw) + 0.5) * dst.w / dw - src.x) * sw / src.w)
        inside = ((rows >= 0) & (rows < sh))[:, None] & ((cols >= 0) & (cols < sw))[None, :]
        rows, cols = np.clip(rows, 0, sh - 1).astype(int), np.clip(cols, 0, sw - 1).astype(int)
        return np.where(inside, labels[np.ix_(rows, cols)], NONE).astype(np.uint8)

    def covered(start: int, length: int, n: int, s_start: int, s_length: int, s_n: int):
        # The src pixels [lo, hi) each dst pixel overlaps (empty outside src).
        edges = (start + np.arange(n + 1) * length / n - s_start) * s_n / s_length
        lo = np.clip(np.floor(edges[:-1] + 1e-6), 0, s_n).astype(int)
        hi = np.clip(np.ceil(edges[1:] - 1e-6), 0, s_n).astype(int)
        return lo, np.maximum(hi, lo)

    y_lo, y_hi = covered(dst.y, dst.h, dh, src.y, src.h, sh)
    x_lo, x_hi = covered(dst.x, dst.w, dw, src.x, src.w, sw)
    counts = []
    for value in (BACKGROUND, FOREGROUND):
        # Summed-area table: the painted pixels of any box in four lookups.
        table = np.zeros((sh + 1, sw + 1), np.int64)
        table[1:, 1:] = (labels == value).cumsum(0).cumsum(1)
        counts.append(
            table[np.ix_(y_hi, x_hi)]
            - table[np.ix_(y_lo, x_hi)]
            - table[np.ix_(y_hi, x_lo)]
            + table[np.ix_(y_lo, x_lo)]
        )
    bg, fg = counts
    out = np.where(fg >= bg, FOREGROUND, BACKGROUND)
    return np.where((fg + bg) > 0, out, NONE).astype(np.uint8)


def honour_corrections(mask: np.ndarray, corrections: np.ndarray) -> np.ndarray:
    """A binary mask with the user's corrections on top: painted pixels take their label.

    What the user painted is what they know; a mask they export or measure keeps it
    even where the fine-tuned heads do not follow a stroke. ``corrections`` holds
    napari's label values (:data:`BACKGROUND`, :data:`FOREGROUND`, :data:`NONE`) on the
    mask's grid. Returns a new array of the mask's dtype (1 = positive).
    """
    if corrections.shape != mask.shape:
        raise ValueError(
            f"corrections {tuple(corrections.shape)} do not match the mask {tuple(mask.shape)}"
        )
    out = mask.astype(bool, copy=True)
    out[corrections == FOREGROUND] = True
    out[corrections == BACKGROUND] = False
    return out.astype(mask.dtype, copy=False)


def apply_painted(
    mask: np.ndarray, painted: Sequence[PaintedLabels], scale: float, rows, cols
) -> np.ndarray:
    """``mask`` with each region's corrections on top, in order (later ones win)."""
    for labels in painted:
        mask = labels.apply(mask, scale, rows, cols)
    return mask


class PaintedLabels:
    """Corrections painted on a region, laid on the grids of a map's levels.

    A map level of ``scale`` level-0 px per pixel has pixel ``(i, j)`` cover level-0
    ``[i * scale, (i + 1) * scale)``; :meth:`apply` puts the corrections on a block of
    such a level. A map pixel larger than a label pixel takes the label painted on most
    of the painted pixels under it, so a stroke thinner than a map pixel still shows.
    Each level's share of the corrections (the region's box on it, through
    :func:`resample_labels`) is computed once, so a mask read many times (a threshold
    drag) pays one lookup per read.
    """

    def __init__(self, labels: np.ndarray, region: Region) -> None:
        if labels.shape != region.shape:
            raise InputError(f"labels {labels.shape} do not fit the region {region.shape}")
        self.labels = labels
        self.region = region
        self.any = bool((labels != NONE).any())
        self._grids: dict[float, tuple[int, int, np.ndarray]] = {}

    def outside(self, box: Region) -> PaintedLabels:
        """These corrections without the pixels whose centres lie in ``box`` (a level-0
        box): where another region is being edited, what shows there is its own."""
        r = self.region
        (h, w) = self.labels.shape
        ys = r.y + (np.arange(h) + 0.5) * r.h / h
        xs = r.x + (np.arange(w) + 0.5) * r.w / w
        rows = (ys >= box.y) & (ys < box.y + box.h)
        cols = (xs >= box.x) & (xs < box.x + box.w)
        if not rows.any() or not cols.any():
            return self
        labels = self.labels.copy()
        labels[np.ix_(rows, cols)] = NONE
        return PaintedLabels(labels, r)

    def on_grid(self, scale: float) -> tuple[int, int, np.ndarray]:
        """``(row0, col0, labels)``: the painted part of the region on a grid of ``scale``
        level-0 px per pixel (the bounding box of its strokes, which is usually small)."""
        if scale not in self._grids:
            r = self.region
            r0, c0 = int(np.floor(r.y / scale)), int(np.floor(r.x / scale))
            r1, c1 = int(np.ceil((r.y + r.h) / scale)), int(np.ceil((r.x + r.w) / scale))
            dst = Region(r0 * scale, c0 * scale, (r1 - r0) * scale, (c1 - c0) * scale, scale)
            grid = resample_labels(self.labels, self.region, dst)
            ys, xs = np.nonzero((grid != NONE).any(1))[0], np.nonzero((grid != NONE).any(0))[0]
            if len(ys):
                grid = grid[ys[0] : ys[-1] + 1, xs[0] : xs[-1] + 1]
                r0, c0 = r0 + int(ys[0]), c0 + int(xs[0])
            self._grids[scale] = (r0, c0, grid)
        return self._grids[scale]

    def apply(self, mask: np.ndarray, scale: float, rows: np.ndarray, cols: np.ndarray):
        """``mask`` (the level's pixels at ``rows`` x ``cols``) with the corrections on top."""
        if not self.any:
            return mask
        r0, c0, grid = self.on_grid(scale)
        span = (
            _overlap(np.asarray(rows) - r0, grid.shape[0]),
            _overlap(np.asarray(cols) - c0, grid.shape[1]),
        )
        if span[0] is None or span[1] is None:
            return mask
        (dst_r, src_r), (dst_c, src_c) = span
        if not (isinstance(dst_r, slice) and isinstance(dst_c, slice)):
            # Steps or scattered indices: one axis may be a slice, the other an array.
            dst_r, dst_c = np.ix_(np.arange(mask.shape[0])[dst_r], np.arange(mask.shape[1])[dst_c])
            src_r, src_c = np.ix_(np.arange(grid.shape[0])[src_r], np.arange(grid.shape[1])[src_c])
        out = mask.copy()
        out[dst_r, dst_c] = honour_corrections(mask[dst_r, dst_c], grid[src_r, src_c])
        return out


def _overlap(index: np.ndarray, n: int):
    """Where the indices ``index`` fall in ``[0, n)``: ``(positions in index, values)``,
    as slices when ``index`` is a run of consecutive integers (what napari's views ask
    for), else as index arrays; None when none does."""
    if not len(index):
        return None
    if (np.diff(index) == 1).all():
        lo, hi = max(0, -int(index[0])), min(len(index), n - int(index[0]))
        if lo >= hi:
            return None
        return slice(lo, hi), slice(int(index[0]) + lo, int(index[0]) + hi)
    inside = np.nonzero((index >= 0) & (index < n))[0]
    if not len(inside):
        return None
    return inside, index[inside]


def flip_component(labels: np.ndarray, row: int, col: int) -> tuple[np.ndarray, int] | None:
    """The 4-connected region of ``labels`` containing ``(row, col)`` and its flipped value.

    Returns ``(indices, value)`` (``np.nonzero``-style indices, the opposite of
    foreground/background), or None where the pixel is outside or unlabelled.
    """
    if not (0 <= row < labels.shape[0] and 0 <= col < labels.shape[1]):
        return None
    value = int(labels[row, col])
    if value not in (BACKGROUND, FOREGROUND):
        return None
    components, _ = ndimage.label(labels == value)
    indices = np.nonzero(components == components[row, col])
    return indices, FOREGROUND if value == BACKGROUND else BACKGROUND


def fine_tune(
    model: WSOLModel,
    rgb: np.ndarray,
    target: int,
    corrections: np.ndarray | None,
    config: TrainConfig,
    *,
    progress: Callable[[TrainProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    guide: bool = False,
    cache: RoundCache | None = None,
) -> TrainResult:
    """One round of the ``heads`` stage on one region, in place on ``model``.

    ``corrections`` are napari values (0 none, 1 bg, 2 fg) on the region's grid;
    ``config`` carries the seeder (``cam_method``, ``bg_fraction``, ``erode``,
    ``seeds_per_class``) and the heads, steps and learning rate.

    With ``guide`` the round then also runs the ``guided`` stage for as many steps as
    the heads round took: the corrections act on the classifier's own CAM, so the
    encoder (and every map) changes. It needs painted corrections and costs a full
    forward and backward through the encoder per step.

    ``cache``: the same :class:`wsol.train.RoundCache` for every round on this region
    (the app keeps one), so a round reuses the encoder features and the heads' maps of
    the round before instead of recomputing them.
    """
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise InputError(f"region pixels must be [H, W, 3], got {rgb.shape}")
    check_editable(Region(0, 0, *rgb.shape[:2]))
    image = torch.from_numpy(np.ascontiguousarray(pad_to_grid(model, rgb))).permute(2, 0, 1)[None]
    painted = None
    if corrections is not None:
        if corrections.shape != rgb.shape[:2]:
            raise InputError(
                f"corrections {corrections.shape} do not match the region {rgb.shape[:2]}"
            )
        corrections = pad_to_grid(model, corrections, fill=NONE)
        painted = torch.from_numpy(corrections.astype(np.int64))[None] - 1
        painted[painted < 0] = IGNORE
    if guide and (painted is None or not (painted != IGNORE).any()):
        raise InputError("guiding the CAM needs corrections: paint some pixels first")
    data = TrainData(image, torch.tensor([int(target)]), painted)
    result = train(
        model, data, "heads", config, progress=progress, should_stop=should_stop, cache=cache
    )
    if not guide or result.cancelled:
        return result
    # One image: an epoch is one step. No augmentation, as in the heads stage, and
    # all of the region in every step; as many steps as the heads round took, which a
    # time limit may have cut on a slow machine.
    guided_config = replace(config, epochs=result.steps_done, batch_size=1, augment=False)
    guided = train(model, data, "guided", guided_config, progress=progress, should_stop=should_stop)
    return TrainResult(
        "heads+guided",
        guided.epochs_done,
        result.steps_done + guided.steps_done,
        result.seconds + guided.seconds,
        guided.cancelled,
        result.history + guided.history,
        result.kept_step,
    )


def view_faithfulness(
    model: WSOLModel,
    rgb: np.ndarray,
    methods: list[str],
    target: int,
    *,
    curves: bool = True,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, dict]:
    """Faithfulness of each method's maps on a region, tile by tile.

    The region (at the model's resolution) is cut into the model's ``input_size``
    tiles (the last row and column flush with the edge), each map explains ``target``,
    and :class:`wsol.faithfulness.FaithfulnessMetrics` averages over the tiles.
    """
    from wsol.faithfulness import FaithfulnessMetrics

    size = model.config.input_size
    h, w = rgb.shape[:2]
    if h < size or w < size:
        raise InputError(f"the region ({w} x {h} px) is smaller than one {size} px tile")
    ys = sorted({*range(0, h - size + 1, size), h - size})
    xs = sorted({*range(0, w - size + 1, size), w - size})
    image = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)
    tiles = torch.stack([image[:, y : y + size, x : x + size] for y in ys for x in xs])
    metrics = {m: FaithfulnessMetrics(curves=curves) for m in methods}
    for start in range(0, len(tiles), 16):
        if should_stop is not None and should_stop():
            break
        x = model.normalize(tiles[start : start + 16])
        targets = torch.full((len(x),), int(target), device=model.device)
        result = compute_many(model, x, methods, targets)
        for method, maps in result.maps.items():
            metrics[method].update(model, x, maps, targets)
    return {m: metric.summary() for m, metric in metrics.items()}
