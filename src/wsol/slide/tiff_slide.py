"""Pyramidal, OME and plain TIFF through tifffile (tiles decoded in parallel, no GIL held)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from wsol.errors import SlideError
from wsol.slide.base import Level, Slide, full_scale, to_rgb8

_RESOLUTION_UNIT_UM = {2: 25400.0, 3: 10000.0}  # inch, centimetre


class TiffSlide(Slide):
    backend = "tifffile"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        import tifffile
        import zarr

        try:
            self._tif = tifffile.TiffFile(path)
            series = max(self._tif.series, key=lambda s: _area(s.shape, s.axes))
            self._axes = series.axes
            if "Y" not in self._axes or "X" not in self._axes:
                raise SlideError(f"{path}: TIFF series has axes {self._axes!r}, no image plane")
            self._check_data_within_file(series)
            self._tif.filehandle.set_lock(True)  # zarr reads tiles from several threads
            self._arrays = [
                zarr.open_array(series.aszarr(level=i), mode="r") for i in range(len(series.levels))
            ]
            page = series.levels[0].keyframe
            self._props = _tags(page)
            self._max_value = _max_value(page, series.dtype)
            self._mpp = _mpp(self._tif, page)
        except SlideError:
            self._close_file()
            raise
        except Exception as exc:
            self._close_file()
            raise SlideError(f"{path}: not a readable TIFF ({_reason(exc)})") from exc
        y_axis, x_axis = self._axes.index("Y"), self._axes.index("X")
        levels = []
        h0, w0 = self._arrays[0].shape[y_axis], self._arrays[0].shape[x_axis]
        for level, array in zip(series.levels, self._arrays, strict=True):
            h, w = array.shape[y_axis], array.shape[x_axis]
            if h <= 0 or w <= 0:
                raise SlideError(f"{path}: TIFF level of size {h}x{w}")
            page = level.keyframe
            tile = (page.tilelength or page.rowsperstrip or 512, page.tilewidth or w)
            levels.append(Level((h, w), (h0 / h + w0 / w) / 2, (min(tile[0], h), min(tile[1], w))))
        self._levels = levels
        self._vendor = "ome-tiff" if self._tif.is_ome else "tiff"
        if self._max_value is None and np.issubdtype(series.dtype, np.floating):
            # Float pixels: [0, 1] or [0, 255], judged once from the smallest level so
            # every tile of the slide scales alike (not from each tile's own values).
            small = self._arrays[-1]
            if int(np.prod(small.shape)) <= 2**26:
                self._max_value = full_scale(np.asarray(small[...]))

    def _check_data_within_file(self, series) -> None:
        """Reject truncated files and impossible sizes up front, not tile by tile later."""
        size = self._tif.filehandle.size
        for level in series.levels:
            for page in level.pages:
                if page is None:
                    continue
                expected = int(np.prod(page.chunked))
                if expected != len(page.dataoffsets):
                    raise SlideError(
                        f"{self.path}: corrupt TIFF, a {page.imagelength}x{page.imagewidth} "
                        f"image should have {expected} tiles/strips but has "
                        f"{len(page.dataoffsets)}"
                    )
                offsets = np.asarray(page.dataoffsets, np.int64)
                counts = np.asarray(page.databytecounts, np.int64)
                if offsets.size and int((offsets + counts).max()) > size:
                    raise SlideError(
                        f"{self.path}: truncated file, image data extends past its end "
                        f"({int((offsets + counts).max())} > {size} bytes)"
                    )

    def _read(self, level: int, y: int, x: int, h: int, w: int) -> np.ndarray:
        index = []
        kept = []
        for axis in self._axes:
            if axis == "Y":
                index.append(slice(y, y + h))
                kept.append(axis)
            elif axis == "X":
                index.append(slice(x, x + w))
                kept.append(axis)
            elif axis in "SC":
                index.append(slice(None))
                kept.append(axis)
            else:  # Z, T, ... : the first plane
                index.append(0)
        try:
            pixels = np.asarray(self._arrays[level][tuple(index)])
        except Exception as exc:
            raise SlideError(
                f"{self.path}: cannot decode level {level} at (y={y}, x={x}) ({_reason(exc)})"
            ) from exc
        order = [kept.index("Y"), kept.index("X")] + [
            i for i, a in enumerate(kept) if a not in "YX"
        ]
        pixels = pixels.transpose(order)
        if pixels.ndim == 4:  # both S and C: merge into channels
            pixels = pixels.reshape(h, w, -1)
        return to_rgb8(pixels, self._max_value)

    def _close_file(self) -> None:
        tif = getattr(self, "_tif", None)
        if tif is not None:
            tif.close()

    def close(self) -> None:
        if not self._closed:
            self._close_file()
        super().close()


def _area(shape: tuple[int, ...], axes: str) -> int:
    if "Y" not in axes or "X" not in axes:
        return 0
    return int(shape[axes.index("Y")]) * int(shape[axes.index("X")])


def _tags(page) -> dict[str, str]:
    props = {}
    for tag in page.tags.values():
        if isinstance(tag.value, str | int | float) and len(str(tag.value)) < 10_000:
            props[f"tiff.{tag.name}"] = str(tag.value)
    return props


def _max_value(page, dtype: np.dtype) -> float | None:
    """The value that means full intensity: MaxSampleValue if smaller than the dtype's."""
    if not np.issubdtype(dtype, np.integer) or dtype == np.uint8:
        return None
    tag = page.tags.get("MaxSampleValue")
    top = float(np.iinfo(dtype).max)
    if tag is not None:
        value = tag.value[0] if isinstance(tag.value, tuple) else tag.value
        if 0 < float(value) < top:
            return float(value)
    return top


def _mpp(tif, page) -> float | None:
    if tif.is_ome and tif.ome_metadata:
        match = re.search(r'PhysicalSizeX="([0-9.eE+-]+)"', tif.ome_metadata)
        unit = re.search(r'PhysicalSizeXUnit="([^"]+)"', tif.ome_metadata)
        if match:
            value = float(match.group(1))
            scale = {"nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6}.get(
                unit.group(1) if unit else "µm", 1.0
            )
            if 0 < value * scale < 1000:
                return value * scale
    res = page.tags.get("XResolution")
    unit = page.tags.get("ResolutionUnit")
    if res is None or unit is None:
        return None
    num, den = res.value if isinstance(res.value, tuple) else (res.value, 1)
    per_unit = _RESOLUTION_UNIT_UM.get(int(unit.value))
    if not per_unit or not num or not den:
        return None
    mpp = per_unit * den / num
    return mpp if 0 < mpp < 1000 else None


def _reason(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return f"{type(exc).__name__}: {text.splitlines()[0][:300]}"
