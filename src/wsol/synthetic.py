"""Generated pyramidal slides of any size, for tests and scale benchmarks.

Tiles are produced and written one at a time, so a 50,000 x 50,000 slide needs no more
memory than a small one. The picture is H&E-like: smooth tissue islands on white glass,
pink stroma and purple cellular areas with blocky texture; it exercises tissue detection,
JPEG decoding and every pyramid level, and carries no meaning beyond that.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage

from wsol.atomic import atomic_path

_GLASS = np.array([243, 242, 245], np.float32)
_STROMA = np.array([232, 160, 200], np.float32)
_CELLS = np.array([120, 70, 160], np.float32)


class _Fields:
    """Smooth random fields over the slide: tissue presence and cellularity."""

    def __init__(self, shape: tuple[int, int], feature: float, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.feature = feature
        grid = (math.ceil(shape[0] / feature) + 3, math.ceil(shape[1] / feature) + 3)
        self.tissue = ndimage.gaussian_filter(rng.random(grid), 0.8)
        self.cells = ndimage.gaussian_filter(rng.random(grid), 0.6)

    def sample(self, field: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        yy, xx = np.meshgrid(ys / self.feature + 1, xs / self.feature + 1, indexing="ij")
        return ndimage.map_coordinates(field, [yy, xx], order=1, mode="nearest")


def tissue_threshold(fields: _Fields, fraction: float) -> float:
    """Field level above which ``fraction`` of the slide is tissue."""
    return float(np.quantile(fields.tissue[1:-2, 1:-2], 1 - fraction))


def _tiles(
    fields: _Fields, threshold: float, shape: tuple[int, int], scale: int, tile: int, seed: int
) -> Iterator[np.ndarray]:
    height, width = shape
    block = 16  # texture and fields are evaluated per 16 x 16 pixel block
    n = tile // block
    for y in range(0, height, tile):
        for x in range(0, width, tile):
            ys = (y + (np.arange(n) + 0.5) * block) * scale
            xs = (x + (np.arange(n) + 0.5) * block) * scale
            tissue = fields.sample(fields.tissue, ys, xs)
            cells = fields.sample(fields.cells, ys, xs)
            alpha = np.clip((tissue - threshold) * 40, 0, 1)[..., None]
            mix = np.clip((cells - 0.35) * 4, 0, 1)[..., None]
            rng = np.random.default_rng((seed, scale, y, x))
            texture = rng.normal(0, 18, (n, n, 1)).astype(np.float32)
            color = _STROMA * (1 - mix) + _CELLS * mix + texture
            rgb = _GLASS * (1 - alpha) + color * alpha
            rgb = np.clip(rgb, 0, 255).astype(np.uint8)
            yield np.repeat(np.repeat(rgb, block, axis=0), block, axis=1)


def write_synthetic_slide(
    path: str | Path,
    size: int | tuple[int, int],
    *,
    tissue_fraction: float = 0.3,
    mpp: float = 0.25,
    tile: int = 512,
    feature: float = 3000.0,
    seed: int = 0,
    compression: str = "jpeg",
) -> Path:
    """Write a tiled, pyramidal OME-TIFF of ``size`` (height, width) level-0 pixels.

    Levels halve until the longer side is at most 2 tiles. ``feature`` is the typical
    size (level-0 px) of tissue islands; ``tissue_fraction`` of the area is tissue.
    """
    height, width = (size, size) if isinstance(size, int) else size
    fields = _Fields((height, width), feature, seed)
    threshold = tissue_threshold(fields, tissue_fraction)
    shapes = [(height, width)]
    while max(shapes[-1]) > 2 * tile:
        h, w = shapes[-1]
        shapes.append((math.ceil(h / 2), math.ceil(w / 2)))
    path = Path(path)
    metadata = {
        "axes": "YXS",
        "PhysicalSizeX": mpp,
        "PhysicalSizeY": mpp,
        "PhysicalSizeXUnit": "µm",
        "PhysicalSizeYUnit": "µm",
    }
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=True, ome=True) as tif:
        for k, shape in enumerate(shapes):
            options = dict(
                shape=(*shape, 3),
                dtype=np.uint8,
                tile=(tile, tile),
                compression=compression,
                photometric="rgb",
            )
            tiles = _tiles(fields, threshold, shape, 2**k, tile, seed)
            if k == 0:
                tif.write(
                    tiles,
                    subifds=len(shapes) - 1,
                    metadata=metadata,
                    resolution=(1e4 / mpp, 1e4 / mpp),
                    resolutionunit="CENTIMETER",
                    **options,
                )
            else:
                tif.write(tiles, subfiletype=1, metadata=None, **options)
    return path
