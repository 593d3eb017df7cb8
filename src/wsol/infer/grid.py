"""Tile geometry: where tiles are read, where their maps land, how overlaps blend."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from wsol.errors import InputError
from wsol.slide import Slide


@dataclass(frozen=True)
class TileGrid:
    """A regular grid of overlapping tiles over a slide, in three coordinate systems.

    *level-0* pixels of the slide; *analysis* pixels, the resolution the model sees
    (``downsample`` level-0 pixels each); *map* pixels of the stored heatmaps
    (``map_downsample`` analysis pixels each). Tile ``(i, j)`` starts at analysis pixel
    ``(i * stride, j * stride)``.
    """

    slide_shape: tuple[int, int]  # level-0 (height, width)
    downsample: float  # level-0 pixels per analysis pixel
    read_level: int  # slide level the tiles are read from
    read_downsample: float  # that level's downsample
    tile: int  # tile side, analysis pixels (the model's input)
    stride: int  # analysis pixels between tile origins
    map_downsample: int  # analysis pixels per map pixel
    rows: int
    cols: int

    @property
    def analysis_shape(self) -> tuple[int, int]:
        return tuple(math.ceil(s / self.downsample) for s in self.slide_shape)

    @property
    def map_shape(self) -> tuple[int, int]:
        return tuple(math.ceil(s / self.map_downsample) for s in self.analysis_shape)

    @property
    def map_tile(self) -> int:
        return self.tile // self.map_downsample

    @property
    def map_stride(self) -> int:
        return self.stride // self.map_downsample

    @property
    def map_scale(self) -> float:
        """Level-0 pixels per map pixel."""
        return self.downsample * self.map_downsample

    @property
    def read_size(self) -> int:
        """Side of the region read per tile, in read-level pixels."""
        return max(1, round(self.tile * self.downsample / self.read_downsample))

    def __len__(self) -> int:
        return self.rows * self.cols

    def read_origin(self, i: int, j: int) -> tuple[int, int]:
        f = self.downsample / self.read_downsample
        return round(i * self.stride * f), round(j * self.stride * f)

    def level0_boxes(self) -> np.ndarray:
        """``[rows * cols, 4]`` tile boxes ``(y, x, h, w)`` in level-0 pixels, row-major."""
        i, j = np.divmod(np.arange(len(self)), self.cols)
        side = self.tile * self.downsample
        return np.stack(
            [
                i * self.stride * self.downsample,
                j * self.stride * self.downsample,
                np.full(i.shape, side),
                np.full(i.shape, side),
            ],
            axis=1,
        )

    def map_origins(self) -> np.ndarray:
        """``[rows * cols, 2]`` top-left map pixel of each tile, row-major."""
        i, j = np.divmod(np.arange(len(self)), self.cols)
        return np.stack([i * self.map_stride, j * self.map_stride], axis=1)

    def blend_window(self) -> np.ndarray:
        """Per-pixel weight ``[t, t]`` of a tile's map when overlapping tiles are averaged.

        Weights ramp linearly across the overlap and are flat inside, so neighbouring
        tiles cross-fade instead of meeting at a seam; they never reach 0, so pixels that
        only one tile covers (the slide's border) keep that tile's value.
        """
        t = self.map_tile
        overlap = t - self.map_stride
        k = np.arange(t, dtype=np.float32) + 0.5
        ramp = np.minimum(1.0, np.minimum(k, t - k) / overlap) if overlap > 0 else np.ones(t)
        return np.outer(ramp, ramp).astype(np.float32)

    def to_dict(self) -> dict:
        return asdict(self)


def make_grid(
    slide: Slide,
    tile: int,
    *,
    overlap: float = 0.25,
    map_downsample: int = 4,
    mpp: float | None = None,
    level: int | None = None,
) -> TileGrid:
    """The tile grid for ``slide`` at ``mpp`` (microns per pixel) or at ``level``.

    With neither, level 0. ``overlap`` is the fraction of a tile shared with each
    neighbour (0 gives abutting tiles). Tile, stride and overlap must be multiples of
    ``map_downsample`` so tiles land on whole map pixels.
    """
    if mpp is not None and level is not None:
        raise InputError("give either mpp or level, not both")
    if mpp is not None:
        if slide.mpp is None:
            raise InputError(
                f"{slide.path}: the slide does not record its mpp; choose a level, "
                "or give its pixel size"
            )
        downsample = mpp / slide.mpp
        if downsample < 0.5:
            raise InputError(
                f"{slide.path}: {mpp} µm/px would upsample the slide ({slide.mpp:.3f} µm/px) "
                f"more than 2x"
            )
    elif level is not None:
        if not 0 <= level < slide.level_count:
            raise InputError(f"{slide.path}: level {level} out of range 0..{slide.level_count - 1}")
        downsample = slide.levels[level].downsample
    else:
        downsample = 1.0
    if not 0 <= overlap < 1:
        raise InputError(f"overlap must be in [0, 1), got {overlap}")
    d = int(map_downsample)
    if d < 1 or tile % d:
        raise InputError(f"tile {tile} must be a multiple of map_downsample {d}")
    stride = max(d, round(tile * (1 - overlap) / d) * d)
    read_level = slide.best_level(downsample)
    height, width = (math.ceil(s / downsample) for s in slide.shape)
    rows = 1 if height <= tile else math.ceil((height - tile) / stride) + 1
    cols = 1 if width <= tile else math.ceil((width - tile) / stride) + 1
    return TileGrid(
        slide_shape=tuple(slide.shape),
        downsample=float(downsample),
        read_level=read_level,
        read_downsample=float(slide.levels[read_level].downsample),
        tile=int(tile),
        stride=stride,
        map_downsample=d,
        rows=rows,
        cols=cols,
    )
