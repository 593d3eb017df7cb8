"""The on-disk result of tiled inference: a multiscale zarr store that fills as tiles finish.

Layout (zarr format 2, OME-NGFF 0.4 ``multiscales`` metadata on each map group)::

    maps/<method>/<k>      float16 heatmap in [0, 1], level k is 2**k times coarser
    tiles/probabilities    float32 [rows, cols, classes] softmax per tile, NaN = not run
    tiles/tissue           float32 [rows, cols] tissue fraction per tile
    tissue                 uint8 tissue mask of the slide (1 = tissue), low resolution
    state/chunks           uint8 [chunk rows, chunk cols], 1 = map chunk final on disk

A chunk is marked final only after its pixels are written, so after a crash or a
cancel the store says exactly what is left to compute.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numcodecs
import numpy as np
import zarr

from wsol.errors import InputError
from wsol.infer.grid import TileGrid

FORMAT_VERSION = 1
_COMPRESSOR = numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE)


class MapStore:
    """Heatmaps, tile scores and progress of one slide's inference."""

    def __init__(self, path: Path, group: zarr.Group) -> None:
        self.path = Path(path)
        self.group = group
        meta = dict(group.attrs)["wsol"]
        self.meta = meta
        self.grid = TileGrid(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in meta["grid"].items()}
        )
        self.methods: list[str] = list(meta["methods"])
        self.class_names: list[str] = list(meta["class_names"])
        self.chunk: int = int(meta["chunk"])
        self._maps = {
            m: [group[f"maps/{m}/{k}"] for k in range(meta["map_levels"])] for m in self.methods
        }
        self.chunk_done = np.asarray(group["state/chunks"][...])

    # --- creation / opening ----------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | Path,
        *,
        grid: TileGrid,
        methods: list[str],
        class_names: list[str],
        settings: dict,
        tile_tissue: np.ndarray,
        tissue_mask: np.ndarray | None = None,
        tissue_downsample: float = 1.0,
        mpp: float | None = None,
        chunk: int = 256,
    ) -> MapStore:
        """A new, empty store (any previous one at ``path`` is removed)."""
        path = Path(path)
        if chunk < grid.map_tile or chunk & (chunk - 1):
            raise ValueError(
                f"chunk {chunk} must be a power of two >= the map tile {grid.map_tile}"
            )
        if path.exists():
            shutil.rmtree(path)
        group = zarr.open_group(str(path), mode="w", zarr_format=2)
        height, width = grid.map_shape
        shapes = [(height, width)]
        # A level-0 chunk must map to whole pixels at every level (chunk >> k >= 1).
        while max(shapes[-1]) > chunk and len(shapes) < chunk.bit_length():
            h, w = shapes[-1]
            shapes.append((math.ceil(h / 2), math.ceil(w / 2)))
        for method in methods:
            for k, shape in enumerate(shapes):
                group.create_array(
                    f"maps/{method}/{k}",
                    shape=shape,
                    chunks=(chunk, chunk),
                    dtype="float16",
                    fill_value=0.0,
                    compressors=_COMPRESSOR,
                )
            unit = {"unit": "micrometer"} if mpp else {}
            base = grid.map_scale * (mpp or 1.0)
            group[f"maps/{method}"].attrs["multiscales"] = [
                {
                    "version": "0.4",
                    "name": method,
                    "axes": [
                        {"name": "y", "type": "space", **unit},
                        {"name": "x", "type": "space", **unit},
                    ],
                    "datasets": [
                        {
                            "path": str(k),
                            "coordinateTransformations": [
                                {"type": "scale", "scale": [base * 2**k, base * 2**k]}
                            ],
                        }
                        for k in range(len(shapes))
                    ],
                }
            ]
        classes = len(class_names)
        group.create_array(
            "tiles/probabilities",
            shape=(grid.rows, grid.cols, classes),
            chunks=(min(grid.rows, 256), min(grid.cols, 256), classes),
            dtype="float32",
            fill_value=float("nan"),
            compressors=_COMPRESSOR,
        )
        tissue_array = group.create_array(
            "tiles/tissue",
            shape=(grid.rows, grid.cols),
            chunks=(min(grid.rows, 1024), min(grid.cols, 1024)),
            dtype="float32",
            fill_value=0.0,
            compressors=_COMPRESSOR,
        )
        tissue_array[...] = tile_tissue.reshape(grid.rows, grid.cols).astype(np.float32)
        if tissue_mask is not None:
            mask = group.create_array(
                "tissue",
                shape=tissue_mask.shape,
                chunks=(1024, 1024),
                dtype="uint8",
                fill_value=0,
                compressors=_COMPRESSOR,
            )
            mask[...] = tissue_mask.astype(np.uint8)
            mask.attrs["downsample"] = float(tissue_downsample)
        chunk_rows, chunk_cols = math.ceil(height / chunk), math.ceil(width / chunk)
        group.create_array(
            "state/chunks",
            shape=(chunk_rows, chunk_cols),
            chunks=(chunk_rows, chunk_cols),
            dtype="uint8",
            fill_value=0,
            compressors=_COMPRESSOR,
        )
        # Written last: a store without it was interrupted while being created.
        group.attrs["wsol"] = {
            "format": FORMAT_VERSION,
            "grid": grid.to_dict(),
            "methods": list(methods),
            "class_names": list(class_names),
            "chunk": chunk,
            "map_levels": len(shapes),
            "mpp": mpp,
            "settings": settings,
            "complete": False,
        }
        return cls(path, group)

    @classmethod
    def open(cls, path: str | Path, mode: str = "r") -> MapStore:
        """Open an existing store; ``InputError`` if it is not one."""
        path = Path(path)
        try:
            group = zarr.open_group(str(path), mode=mode, zarr_format=2)
            meta = dict(group.attrs).get("wsol")
        except Exception as exc:
            raise InputError(f"{path}: not a napari-wsol map store ({exc})") from exc
        if not meta or meta.get("format") != FORMAT_VERSION:
            raise InputError(f"{path}: not a napari-wsol map store (format {FORMAT_VERSION})")
        return cls(path, group)

    # --- reading ---------------------------------------------------------------------
    @property
    def complete(self) -> bool:
        return bool(self.meta.get("complete"))

    @property
    def settings(self) -> dict:
        return self.meta["settings"]

    @property
    def mpp(self) -> float | None:
        return self.meta.get("mpp")

    def levels(self, method: str) -> list[zarr.Array]:
        """The map's zarr arrays, finest first (level k: ``map_scale * 2**k`` level-0 px)."""
        if method not in self._maps:
            raise KeyError(f"{self.path}: no map for {method!r}; it has {self.methods}")
        return self._maps[method]

    def scale(self, level: int = 0) -> float:
        """Level-0 slide pixels per map pixel at ``level``."""
        return self.grid.map_scale * 2**level

    def probabilities(self) -> np.ndarray:
        return np.asarray(self.group["tiles/probabilities"][...])

    def tile_tissue(self) -> np.ndarray:
        return np.asarray(self.group["tiles/tissue"][...])

    def tissue(self) -> tuple[np.ndarray, float] | None:
        if "tissue" not in self.group:
            return None
        array = self.group["tissue"]
        return np.asarray(array[...]), float(array.attrs["downsample"])

    # --- writing ---------------------------------------------------------------------
    def write_chunk(self, r: int, c: int, data: np.ndarray, final: bool = True) -> None:
        """Write maps ``[methods, h, w]`` of level-0 chunk ``(r, c)`` at every level.

        Coarser levels are box averages of this chunk; the chunk side is a power of two,
        so each level's block lies inside this chunk alone and the pyramid is exact.
        """
        y, x = r * self.chunk, c * self.chunk
        for k in range(len(next(iter(self._maps.values())))):
            if k:
                data = _halve(data)
            for m, method in enumerate(self.methods):
                array = self._maps[method][k]
                yk, xk = y >> k, x >> k
                h, w = data.shape[1:]
                array[yk : yk + h, xk : xk + w] = data[m].astype(np.float16)
        if final:
            self.chunk_done[r, c] = 1
            self.group["state/chunks"][r, c] = 1

    def mark_done(self, chunks: np.ndarray) -> None:
        """Mark chunks final without writing pixels (no tissue in them)."""
        self.chunk_done[chunks] = 1
        self.group["state/chunks"][...] = self.chunk_done

    def write_probabilities(self, rows: slice, values: np.ndarray) -> None:
        self.group["tiles/probabilities"][rows] = values

    def set_complete(self, seconds: float) -> None:
        meta = dict(self.meta, complete=True, seconds=round(seconds, 2))
        self.group.attrs["wsol"] = meta
        self.meta = meta


def _halve(data: np.ndarray) -> np.ndarray:
    """2x2 box average of ``[m, h, w]``; an odd last row/column averages what exists."""
    _, h, w = data.shape
    if h % 2 or w % 2:
        data = np.pad(data, ((0, 0), (0, h % 2), (0, w % 2)), mode="edge")
    m, h2, w2 = data.shape
    return data.reshape(m, h2 // 2, 2, w2 // 2, 2).mean(axis=(2, 4))
