"""Lazy array views that napari layers display: thresholds and differences of stored maps.

napari slices a layer's arrays for the visible part of the visible level only. These
wrappers compute a threshold or a difference on exactly that slice, so dragging a
threshold costs the pixels on screen, not the slide. Levels of a finished map that are
small enough are kept in memory (float16) after the first read, since a slider drag
re-reads the same pixels many times; a new run gets new levels.
"""

from __future__ import annotations

import numpy as np

from wsol.region import apply_painted

#: Levels up to this many pixels are kept in memory once read (float16: 32 MB each).
CACHE_PIXELS = 4096 * 4096


class _LazyArray:
    """The array protocol napari needs: shape, dtype, ndim, size, slicing, ``__array__``."""

    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __getitem__(self, key) -> np.ndarray:
        raise NotImplementedError

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[...]
        return out if dtype is None else out.astype(dtype)


class MapLevel(_LazyArray):
    """One level of a stored map (a zarr array) as a float32 array-like for napari.

    A read that fails (a chunk being written by the inference thread) gives zeros for
    this draw instead of an error in the viewer; the next refresh reads it again.
    """

    def __init__(self, array) -> None:
        self.array = array
        self.shape = tuple(array.shape)
        self.dtype = np.dtype(np.float32)
        self._cache: np.ndarray | None = None
        self.frozen = False  # True once the map is complete: cache whole levels

    def take(self, other: MapLevel) -> None:
        """Show ``other``'s map from now on (same shape), in this object.

        For a layer that shows a new run: napari resets a layer given new data to its
        coarsest level and draws it twice (coarse, then the level the view needs). The
        levels a layer already holds, pointed at the new map, keep their level and
        take one refresh and one frame; threshold and difference views over them
        follow too.
        """
        if other.shape != self.shape:
            raise ValueError(f"a map of shape {other.shape} cannot replace {self.shape}")
        self.array, self._cache, self.frozen = other.array, other._cache, other.frozen

    def values(self) -> np.ndarray:
        """The whole level (cached when small and complete)."""
        return self[...]

    def __getitem__(self, key) -> np.ndarray:
        if self._cache is None and self.frozen and self.size <= CACHE_PIXELS:
            try:
                self._cache = np.asarray(self.array[...], dtype=np.float16)
            except Exception:
                return self._zeros(key)
        if self._cache is not None:
            return self._cache[key].astype(np.float32)
        try:
            return np.asarray(self.array[key], dtype=np.float32)
        except Exception:
            return self._zeros(key)

    def _zeros(self, key) -> np.ndarray:
        # np.empty of the level's shape only reserves address space; indexing it gives
        # the slice's shape without reading anything.
        return np.zeros_like(np.empty(self.shape, np.float32)[key])


class ThresholdView(_LazyArray):
    """``level >= threshold`` as uint8 labels (1 = positive); the threshold is mutable.

    ``painted`` (the user's corrections, a sequence of :class:`wsol.region.PaintedLabels`,
    later ones winning) override the threshold where set; ``scale`` is the level's
    level-0 px per pixel. ``painted`` is mutable too: a new stroke replaces it, then the
    layer is refreshed.
    """

    def __init__(self, level: MapLevel, threshold: float = 0.5, scale: float = 1.0) -> None:
        self.level = level
        self.threshold = float(threshold)
        self.scale = float(scale)
        self.painted: tuple = ()
        self.shape = level.shape
        self.dtype = np.dtype(np.uint8)

    def __getitem__(self, key) -> np.ndarray:
        mask = (self.level[key] >= self.threshold).astype(np.uint8)
        if not self.painted:
            return mask
        rows, cols = _axes(key, self.shape)
        if rows is None:  # an index napari does not use: fall back on the whole level
            return self[:, :][key]
        return apply_painted(mask, self.painted, self.scale, rows, cols)


def _axes(key, shape: tuple[int, int]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Row and column indices a 2-D key of slices selects (None, None for other keys)."""
    if key is Ellipsis:
        key = (slice(None), slice(None))
    if not isinstance(key, tuple):
        key = (key,)
    if len(key) > 2 or not all(isinstance(k, slice) for k in key):
        return None, None
    key = key + (slice(None),) * (2 - len(key))
    return np.arange(shape[0])[key[0]], np.arange(shape[1])[key[1]]


class DifferenceView(_LazyArray):
    """``|a - b|`` of two map levels of the same shape."""

    def __init__(self, a: MapLevel, b: MapLevel) -> None:
        if a.shape != b.shape:
            raise ValueError(f"maps of different shapes: {a.shape} and {b.shape}")
        self.a, self.b = a, b
        self.shape = a.shape
        self.dtype = np.dtype(np.float32)

    def __getitem__(self, key) -> np.ndarray:
        return np.abs(self.a[key] - self.b[key])
