"""The ``Slide`` interface every reader implements, and the pixel conversions they share."""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from wsol.errors import SlideError

#: Largest region one ``read_region`` call may return (pixels); larger reads are a bug
#: in the caller (read tiles instead), not something to try and run out of memory on.
MAX_REGION_PIXELS = 1 << 28


@dataclass(frozen=True)
class Level:
    """One resolution of a slide."""

    shape: tuple[int, int]  # (height, width) in pixels of this level
    downsample: float  # level-0 pixels per pixel of this level
    tile: tuple[int, int]  # (height, width) of the file's tiles (read granularity)


class Slide(abc.ABC):
    """A whole-slide or plain image, read lazily region by region.

    Coordinates are ``(y, x)`` in pixels of the level read, like numpy. Pixels are
    returned as ``uint8 [h, w, 3]`` RGB: alpha is composited on white, grayscale is
    repeated, 16-bit data is scaled by its bit depth; areas outside the image are white
    (glass). Reads are thread-safe.
    """

    #: Which reader opened the file: "openslide", "tifffile" or "image".
    backend: str = ""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._closed = False

    # --- what a reader provides: these four attributes, and _read ---------------------
    _levels: list[Level]
    _mpp: float | None
    _vendor: str
    _props: Mapping[str, str]

    @property
    def levels(self) -> list[Level]:
        """Resolutions, finest first."""
        return self._levels

    @property
    def mpp(self) -> float | None:
        """Microns per pixel at level 0, when the file records it."""
        return self._mpp

    def assume_mpp(self, mpp: float) -> None:
        """Use ``mpp`` where the file does not record its pixel size (e.g. a PNG whose
        scale the user knows); a recorded one is never overridden."""
        if self._mpp is None and mpp and mpp > 0:
            self._mpp = float(mpp)

    @property
    def vendor(self) -> str:
        """Scanner vendor or file kind (``aperio``, ``ome-tiff``, ``png``, ...)."""
        return self._vendor

    @property
    def properties(self) -> Mapping[str, str]:
        """Metadata key/values as the file stores them."""
        return self._props

    @abc.abstractmethod
    def _read(self, level: int, y: int, x: int, h: int, w: int) -> np.ndarray:
        """RGB uint8 pixels of a region already clipped to the level's bounds."""

    def close(self) -> None:
        self._closed = True

    # --- shared behaviour ------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of level 0."""
        return self.levels[0].shape

    @property
    def level_count(self) -> int:
        return len(self.levels)

    def read_region(self, level: int, y: int, x: int, h: int, w: int) -> np.ndarray:
        """RGB ``uint8 [h, w, 3]`` pixels of ``level`` at ``(y, x)`` in that level's pixels.

        Parts of the region outside the image are white.
        """
        if self._closed:
            raise SlideError(f"{self.path}: slide is closed")
        if not 0 <= level < len(self.levels):
            raise ValueError(f"level {level} out of range; {self.path.name} has {len(self.levels)}")
        y, x, h, w = int(y), int(x), int(h), int(w)
        if h <= 0 or w <= 0:
            raise ValueError(f"region size must be positive, got {h}x{w}")
        if h * w > MAX_REGION_PIXELS:
            raise ValueError(f"region {h}x{w} is too large to read at once; read tiles")
        height, width = self.levels[level].shape
        y0, x0 = max(y, 0), max(x, 0)
        y1, x1 = min(y + h, height), min(x + w, width)
        if y0 >= y1 or x0 >= x1:
            return np.full((h, w, 3), 255, np.uint8)
        pixels = self._read(level, y0, x0, y1 - y0, x1 - x0)
        if (y0, x0, y1, x1) == (y, x, y + h, x + w):
            return pixels
        out = np.full((h, w, 3), 255, np.uint8)
        out[y0 - y : y1 - y, x0 - x : x1 - x] = pixels
        return out

    def best_level(self, downsample: float) -> int:
        """The coarsest level whose downsample does not exceed ``downsample`` (+1% slack)."""
        best = 0
        for i, level in enumerate(self.levels):
            if level.downsample <= downsample * 1.01:
                best = i
        return best

    def thumbnail(self, max_size: int = 2048) -> tuple[np.ndarray, float]:
        """An RGB overview whose longer side is at most ``max_size`` pixels.

        Returns the image and its downsample (level-0 pixels per thumbnail pixel). It is
        read from the best level in bands and box-averaged, so memory stays bounded
        even for slides without a pyramid.
        """
        height, width = self.shape
        target = max(height, width) / max_size
        level = self.best_level(max(target, 1.0))
        lh, lw = self.levels[level].shape
        factor = max(1, math.ceil(max(lh, lw) / max_size))
        out_h, out_w = math.ceil(lh / factor), math.ceil(lw / factor)
        out = np.empty((out_h, out_w, 3), np.uint8)
        step = max(1, 1024 // factor) * factor  # blocks of ~1024 px: small, fixed memory
        for y in range(0, lh, step):
            for x in range(0, lw, step):
                bh = math.ceil(min(step, lh - y) / factor)
                bw = math.ceil(min(step, lw - x) / factor)
                pixels = self.read_region(level, y, x, bh * factor, bw * factor)
                # torch's pooling: 4x quicker than numpy's mean over the strided axes
                # (0.3 s of a 2220 x 2967 slide's 0.8 s overview on a 2-core CPU).
                block = torch.from_numpy(pixels).permute(2, 0, 1)[None].float()
                means = F.avg_pool2d(block, factor)[0].round_().to(torch.uint8)
                oy, ox = y // factor, x // factor
                out[oy : oy + bh, ox : ox + bw] = means.permute(1, 2, 0).numpy()
        return out, self.levels[level].downsample * factor

    def pyramid(self) -> list:
        """Lazy dask arrays ``[h, w, 3]`` per level with tile-aligned chunks (for napari)."""
        import dask.array as da

        arrays = []
        for i, level in enumerate(self.levels):
            view = _LevelView(self, i)
            th, tw = level.tile
            # Chunks of at least 512 px keep napari's task count sane on small-tile files.
            chunks = (_multiple(th, 512), _multiple(tw, 512), 3)
            arrays.append(da.from_array(view, chunks=chunks, asarray=False, lock=False))
        return arrays

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mpp = f"{self.mpp:.3f}" if self.mpp else "unknown"
        shapes = ", ".join(f"{h}x{w}" for h, w in (lv.shape for lv in self.levels))
        return f"<{type(self).__name__} {self.path.name} [{shapes}] mpp={mpp} {self.vendor}>"


def _multiple(size: int, at_least: int) -> int:
    size = max(int(size), 1)
    return size * max(1, round(at_least / size))


class _LevelView:
    """Numpy-style slicing of one level, the minimal protocol dask needs."""

    def __init__(self, slide: Slide, level: int) -> None:
        self.slide, self.level = slide, level
        h, w = slide.levels[level].shape
        self.shape = (h, w, 3)
        self.dtype = np.dtype(np.uint8)
        self.ndim = 3

    def __getitem__(self, key: tuple) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        key = key + (slice(None),) * (3 - len(key))
        ys, xs, cs = key[:3]
        y0, y1, _ = ys.indices(self.shape[0])
        x0, x1, _ = xs.indices(self.shape[1])
        if y1 <= y0 or x1 <= x0:
            return np.empty((max(y1 - y0, 0), max(x1 - x0, 0), 3), np.uint8)[:, :, cs]
        return self.slide.read_region(self.level, y0, x0, y1 - y0, x1 - x0)[:, :, cs]


def full_scale(pixels: np.ndarray) -> float:
    """The value that means full intensity in an image's pixels.

    Integers: their type's maximum (65535 for the int32 arrays Pillow gives for 16-bit
    images), whatever the data, so every tile of a slide scales alike. Floats: 1.0 when
    the data stays within [0, 1], 255 within [0, 255] (8-bit values saved as floats),
    else the data's maximum. Files and in-memory images alike go through this rule.
    """
    if pixels.dtype == bool:
        return 1.0
    if np.issubdtype(pixels.dtype, np.integer):
        if pixels.dtype == np.int32:
            return 65535.0
        return float(np.iinfo(pixels.dtype).max)
    top = float(np.nanmax(pixels)) if pixels.size else 1.0
    return 1.0 if not top > 1.0 else 255.0 if top <= 255.0 else top


def to_rgb8(pixels: np.ndarray, max_value: float | None = None) -> np.ndarray:
    """Convert ``[h, w]``, ``[h, w, c]`` pixels of any dtype to RGB uint8.

    ``max_value`` is the value that maps to 255 (default :func:`full_scale` of
    ``pixels``); alpha (the 2nd or 4th channel) is composited on white; one channel is
    repeated, more than four keep the first three.
    """
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    channels = pixels.shape[-1]
    if pixels.dtype != np.uint8:
        if max_value is None:
            max_value = full_scale(pixels)
        scaled = np.nan_to_num(pixels.astype(np.float32)) * (255.0 / max_value)
        pixels = np.clip(np.round(scaled), 0, 255).astype(np.uint8)
    if channels in (2, 4) and pixels[..., -1].min() == 255:
        pixels = pixels[..., :-1]  # opaque, the common case inside a scan: nothing to blend
    elif channels in (2, 4):
        color = pixels[..., :-1].astype(np.float32)
        alpha = pixels[..., -1:].astype(np.float32) / 255.0
        pixels = np.round(color * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    elif channels > 4:
        pixels = pixels[..., :3]
    if pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    return np.ascontiguousarray(pixels)
