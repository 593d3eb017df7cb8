"""Exports of a finished map store: OME-TIFF masks, QuPath GeoJSON, tile-score CSV."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image
from skimage import measure

from wsol.atomic import atomic_path
from wsol.errors import InputError
from wsol.infer.store import MapStore
from wsol.region import PaintedLabels, apply_painted

#: Longest side of the map level polygons are traced on: bounds memory for any slide.
GEOJSON_MAX_SIZE = 4096
_TILE = 256


def write_mask_tiff(
    store: MapStore,
    method: str,
    path: str | Path,
    threshold: float = 0.5,
    level: int = 0,
    corrections: Sequence[PaintedLabels] = (),
) -> Path:
    """Write ``map >= threshold`` as a tiled pyramidal OME-TIFF (uint8, 255 = positive).

    Each pyramid level thresholds the map's own level, from ``level`` (0: the finest)
    down; tiles are streamed from the store, so memory does not depend on the slide's
    size. Pixel size is the map's (the slide's mpp times :meth:`MapStore.scale`) when
    the slide's mpp is known. ``corrections`` (painted pixels) override the map where
    they are set, on every level.
    """

    def convert(block, scale, rows, cols):
        mask = at_least(block, threshold)
        mask = apply_painted(mask, corrections, scale, rows, cols)
        return mask * np.uint8(255)

    return _write_pyramid(store, method, path, level, convert, np.uint8, f"{method} >= {threshold}")


def write_heatmap_tiff(store: MapStore, method: str, path: str | Path, level: int = 0) -> Path:
    """Write the map itself (float32 in [0, 1]) as a tiled pyramidal OME-TIFF."""
    return _write_pyramid(
        store, method, path, level, lambda block, *_: block.astype(np.float32), np.float32, method
    )


def write_mask_png(
    store: MapStore,
    method: str,
    path: str | Path,
    threshold: float = 0.5,
    level: int = 0,
    corrections: Sequence[PaintedLabels] = (),
) -> Path:
    """``map >= threshold`` at one map level as an 8-bit PNG (255 = positive).

    A PNG holds the whole level in memory: choose a level that fits (the app offers
    the coarser ones for large slides). ``corrections`` override the map where set.
    """
    mask = _mask(store, method, level, threshold, corrections).astype(np.uint8) * np.uint8(255)
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(mask).save(tmp, format="PNG")
    return path


def at_least(values: np.ndarray, threshold: float) -> np.ndarray:
    """``values >= threshold`` compared in float32, as the app's masks and areas are.

    Maps are stored in float16, and a Python float against a float16 array is rounded
    to float16 (NumPy's weak scalars): down onto stored values just under it, which
    would then count as positive in a file but not on screen.
    """
    return values >= np.float32(threshold)


def _level(store: MapStore, method: str, level: int):
    levels = store.levels(method)
    if not 0 <= level < len(levels):
        raise InputError(f"{store.path}: map level {level} out of range 0..{len(levels) - 1}")
    return levels[level]


def _mask(
    store: MapStore,
    method: str,
    level: int,
    threshold: float,
    corrections: Sequence[PaintedLabels],
) -> np.ndarray:
    """One whole map level thresholded, with the corrections on top (bool)."""
    values = np.asarray(_level(store, method, level)[...])
    mask = at_least(values, threshold)
    rows, cols = np.arange(mask.shape[0]), np.arange(mask.shape[1])
    return apply_painted(mask, corrections, store.scale(level), rows, cols)


def _write_pyramid(store, method, path, level, convert, dtype, name) -> Path:
    _level(store, method, level)
    levels = store.levels(method)[level:]
    path = Path(path)
    metadata = {"axes": "YX", "Name": name}
    if store.mpp:
        size = store.mpp * store.scale(level)
        metadata.update(
            PhysicalSizeX=size, PhysicalSizeY=size, PhysicalSizeXUnit="µm", PhysicalSizeYUnit="µm"
        )
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=True, ome=True) as tif:
        for k, array in enumerate(levels):
            options = dict(
                tile=(_TILE, _TILE),
                compression="zlib",
                dtype=dtype,
                shape=array.shape,
                photometric="minisblack",
            )
            tiles = _tiles(array, convert, dtype, store.scale(level + k))
            if k == 0:
                tif.write(tiles, subifds=len(levels) - 1, metadata=metadata, **options)
            else:
                tif.write(tiles, subfiletype=1, metadata=None, **options)
    return path


def _tiles(array, convert, dtype, scale: float) -> Iterator[np.ndarray]:
    """Tiles of ``convert(block, scale, rows, cols)``: the block's pixel indices on a
    level of ``scale`` level-0 px per pixel."""
    height, width = array.shape
    for y in range(0, height, _TILE):
        for x in range(0, width, _TILE):
            block = np.asarray(array[y : y + _TILE, x : x + _TILE])
            rows = np.arange(y, y + block.shape[0])
            cols = np.arange(x, x + block.shape[1])
            tile = np.zeros((_TILE, _TILE), dtype)
            tile[: block.shape[0], : block.shape[1]] = convert(block, scale, rows, cols)
            yield tile


def mask_polygons(
    mask: np.ndarray, scale: float = 1.0, min_area: float = 4.0, tolerance: float = 0.5
) -> list[list[np.ndarray]]:
    """Polygons (outer ring, then holes) of a boolean mask, as ``[N, 2]`` (x, y) rings.

    Coordinates are scaled by ``scale`` (e.g. to level-0 slide pixels), pixel ``p``
    covering ``[p * scale, (p + 1) * scale)``. Rings are closed and simplified with
    ``tolerance`` mask pixels; parts smaller than ``min_area`` mask pixels are dropped.
    """
    padded = np.pad(mask.astype(np.float32), 1)
    rings = []
    for contour in measure.find_contours(padded, 0.5, positive_orientation="high"):
        contour = measure.approximate_polygon(contour, tolerance) if tolerance else contour
        if len(contour) < 4:
            continue
        yx = contour - 1  # undo the padding
        area = _signed_area(yx[:, 1], yx[:, 0])
        if abs(area) >= min_area:
            rings.append((area, yx))
    # With positive_orientation="high" islands of the mask and holes in them wind in
    # opposite directions; which sign is which follows from the (row, col) axes.
    outers = sorted((r for r in rings if r[0] < 0), key=lambda r: abs(r[0]))
    holes = [r for r in rings if r[0] > 0]
    polygons = {id(o[1]): [o[1]] for o in outers}
    for _, hole in holes:
        for _, outer in outers:
            if measure.points_in_poly(hole[:1], outer)[0]:
                polygons[id(outer)].append(hole)
                break
    result = []
    for poly in polygons.values():
        result.append([(ring[:, ::-1] + 0.5) * scale for ring in poly])
    return result


def _signed_area(x: np.ndarray, y: np.ndarray) -> float:
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def write_geojson(
    store: MapStore,
    method: str,
    path: str | Path,
    threshold: float = 0.5,
    class_name: str | None = None,
    color: tuple[int, int, int] = (230, 60, 60),
    corrections: Sequence[PaintedLabels] = (),
) -> Path:
    """Polygons of ``map >= threshold`` as a GeoJSON FeatureCollection QuPath imports.

    Coordinates are level-0 slide pixels (QuPath's image coordinates). Traced on the
    finest map level no larger than :data:`GEOJSON_MAX_SIZE` per side. ``corrections``
    override the map where set.
    """
    levels = store.levels(method)
    k = next((k for k, a in enumerate(levels) if max(a.shape) <= GEOJSON_MAX_SIZE), len(levels) - 1)
    mask = _mask(store, method, k, threshold, corrections)
    name = class_name or _explained_class(store)
    height, width = store.grid.slide_shape
    features = polygon_features(
        mask,
        scale=store.scale(k),
        bounds=(height, width),
        name=name,
        color=color,
        properties={"name": f"{method} >= {threshold:g}", "method": method, "threshold": threshold},
    )
    return _write_features(features, path)


def polygon_features(
    mask: np.ndarray,
    *,
    scale: float = 1.0,
    offset: tuple[float, float] = (0.0, 0.0),
    name: str = "Positive",
    color: tuple[int, int, int] = (230, 60, 60),
    properties: dict | None = None,
    bounds: tuple[float, float] | None = None,
) -> list[dict]:
    """GeoJSON annotation features (QuPath's flavour) of a boolean mask.

    Mask pixel ``(r, c)`` covers level-0 pixels ``offset + [r, r + 1) * scale``;
    ``offset`` is ``(y, x)``. ``name`` becomes ``properties.classification.name``.
    ``bounds`` ``(height, width)`` clips the outlines to the slide: a map's last row and
    column of pixels can reach past its edge.
    """
    features = []
    oy, ox = offset
    for poly in mask_polygons(mask, scale=scale):
        rings = [ring + np.array([ox, oy]) for ring in poly]
        if bounds is not None:
            rings = [np.clip(ring, 0, [bounds[1], bounds[0]]) for ring in rings]
        rings = [np.round(ring, 2).tolist() for ring in rings]
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": rings},
                "properties": {
                    "objectType": "annotation",
                    "name": name,
                    "classification": {"name": name, "color": list(color)},
                    **(properties or {}),
                },
            }
        )
    return features


def _write_features(features: list[dict], path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def write_labels_geojson(
    labels: np.ndarray,
    path: str | Path,
    *,
    scale: float = 1.0,
    offset: tuple[float, float] = (0.0, 0.0),
    names: dict[int, str] | None = None,
) -> Path:
    """Polygons of every non-zero label value of an integer image, one class per value."""
    labels = np.asarray(labels)
    palette = [(230, 60, 60), (60, 120, 230), (60, 180, 90), (200, 160, 40), (150, 70, 200)]
    features = []
    for i, value in enumerate(v for v in np.unique(labels) if v != 0):
        name = (names or {}).get(int(value), f"label {int(value)}")
        features += polygon_features(
            labels == value,
            scale=scale,
            offset=offset,
            name=name,
            color=palette[i % len(palette)],
            properties={"label": int(value)},
        )
    return _write_features(features, path)


def write_labels_tiff(
    labels: np.ndarray | list,
    path: str | Path,
    *,
    pixel_size: float | None = None,
    pyramid: bool = True,
) -> Path:
    """An integer label image as a tiled (OME-)TIFF, with sub-resolution levels.

    ``labels`` is one array or a list of levels, finest first. Given one array and
    ``pyramid``, coarser levels are every second pixel (labels must not be averaged)
    down to 512 px. ``pixel_size`` (µm) is recorded as the OME physical size.
    """
    if isinstance(labels, list | tuple):
        levels = [np.asarray(level) for level in labels]
    else:
        levels = [np.asarray(labels)]
        while pyramid and max(levels[-1].shape) > 512:
            levels.append(levels[-1][::2, ::2])
    base = levels[0]
    if base.ndim != 2 or base.dtype.kind not in "iub":
        raise InputError(
            f"{path}: labels must be a 2-D integer image, got {base.dtype} {base.shape}"
        )
    dtype = np.uint8 if base.max(initial=0) < 256 and base.min(initial=0) >= 0 else np.int32
    metadata = {"axes": "YX"}
    if pixel_size:
        metadata.update(
            PhysicalSizeX=pixel_size,
            PhysicalSizeY=pixel_size,
            PhysicalSizeXUnit="µm",
            PhysicalSizeYUnit="µm",
        )
    path = Path(path)
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=True, ome=True) as tif:
        for k, level in enumerate(levels):
            options = dict(tile=(_TILE, _TILE), compression="zlib", photometric="minisblack")
            data = level.astype(dtype)
            if k == 0:
                tif.write(data, subifds=len(levels) - 1, metadata=metadata, **options)
            else:
                tif.write(data, subfiletype=1, metadata=None, **options)
    return path


def _explained_class(store: MapStore) -> str:
    target = store.settings.get("target")
    return store.class_names[target] if target is not None else "Positive"


def write_tile_csv(store: MapStore, path: str | Path) -> Path:
    """One row per computed tile: grid position, level-0 box, tissue, class probabilities."""
    grid = store.grid
    probs = store.probabilities()
    tissue = store.tile_tissue()
    boxes = grid.level0_boxes().reshape(grid.rows, grid.cols, 4)
    names = store.class_names
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            [
                "row",
                "col",
                "y",
                "x",
                "height",
                "width",
                "tissue",
                *(f"p_{n}" for n in names),
                "predicted",
            ]
        )
        for i, j in zip(*np.nonzero(~np.isnan(probs[..., 0])), strict=True):
            p = probs[i, j]
            y, x, h, w = (round(v) for v in boxes[i, j])
            writer.writerow(
                [
                    i,
                    j,
                    y,
                    x,
                    h,
                    w,
                    f"{tissue[i, j]:.3f}",
                    *(f"{v:.5f}" for v in p),
                    names[int(np.argmax(p))],
                ]
            )
    return path
