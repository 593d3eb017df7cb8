"""Exports of a finished map store: OME-TIFF masks, QuPath GeoJSON, tile-score CSV."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tifffile
from skimage import measure

from wsol.atomic import atomic_path
from wsol.infer.store import MapStore

#: Longest side of the map level polygons are traced on: bounds memory for any slide.
GEOJSON_MAX_SIZE = 4096
_TILE = 256


def write_mask_tiff(
    store: MapStore,
    method: str,
    path: str | Path,
    threshold: float = 0.5,
) -> Path:
    """Write ``map >= threshold`` as a tiled pyramidal OME-TIFF (uint8, 255 = positive).

    Each pyramid level thresholds the map's own level; tiles are streamed from the store,
    so memory does not depend on the slide's size. Pixel size is the map's (the slide's
    mpp times :meth:`MapStore.scale`) when the slide's mpp is known.
    """
    levels = store.levels(method)
    path = Path(path)
    metadata = {"axes": "YX", "Name": f"{method} >= {threshold}"}
    if store.mpp:
        size = store.mpp * store.scale(0)
        metadata.update(
            PhysicalSizeX=size, PhysicalSizeY=size, PhysicalSizeXUnit="µm", PhysicalSizeYUnit="µm"
        )
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=True, ome=True) as tif:
        for k, array in enumerate(levels):
            options = dict(
                tile=(_TILE, _TILE),
                compression="zlib",
                dtype=np.uint8,
                shape=array.shape,
                photometric="minisblack",
            )
            if k == 0:
                tif.write(
                    _mask_tiles(array, threshold),
                    subifds=len(levels) - 1,
                    metadata=metadata,
                    **options,
                )
            else:
                tif.write(_mask_tiles(array, threshold), subfiletype=1, metadata=None, **options)
    return path


def _mask_tiles(array, threshold: float) -> Iterator[np.ndarray]:
    height, width = array.shape
    for y in range(0, height, _TILE):
        for x in range(0, width, _TILE):
            block = np.asarray(array[y : y + _TILE, x : x + _TILE])
            tile = np.zeros((_TILE, _TILE), np.uint8)
            tile[: block.shape[0], : block.shape[1]] = (block >= threshold) * np.uint8(255)
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
) -> Path:
    """Polygons of ``map >= threshold`` as a GeoJSON FeatureCollection QuPath imports.

    Coordinates are level-0 slide pixels (QuPath's image coordinates). Traced on the
    finest map level no larger than :data:`GEOJSON_MAX_SIZE` per side.
    """
    levels = store.levels(method)
    k = next((k for k, a in enumerate(levels) if max(a.shape) <= GEOJSON_MAX_SIZE), len(levels) - 1)
    mask = np.asarray(levels[k][...]) >= threshold
    name = class_name or _explained_class(store)
    features = []
    for poly in mask_polygons(mask, scale=store.scale(k)):
        rings = [np.round(ring, 2).tolist() for ring in poly]
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": rings},
                "properties": {
                    "objectType": "annotation",
                    "name": f"{method} >= {threshold:g}",
                    "classification": {"name": name, "color": list(color)},
                    "method": method,
                    "threshold": threshold,
                },
            }
        )
    collection = {"type": "FeatureCollection", "features": features}
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(collection))
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
