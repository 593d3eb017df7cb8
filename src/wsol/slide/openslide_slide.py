"""Vendor whole-slide formats through OpenSlide (svs, ndpi, mrxs, scn, vms, vmu, bif, ...)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wsol.errors import SlideError
from wsol.slide.base import Level, Slide, to_rgb8


def _openslide():
    try:
        import openslide
    except ImportError as exc:  # openslide-bin ships the C library; a broken install lands here
        raise SlideError(f"OpenSlide is not usable ({exc}); pip install openslide-bin") from exc
    return openslide


def detect_vendor(path: Path) -> str | None:
    """OpenSlide's name for the file's format (``aperio``, ``generic-tiff``...), or None."""
    try:
        return _openslide().OpenSlide.detect_format(str(path))
    except Exception:  # a corrupt header is "not an OpenSlide file" here; opening says why
        return None


class OpenSlideSlide(Slide):
    backend = "openslide"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        openslide = _openslide()
        self._error = openslide.OpenSlideError
        try:
            self._osr = openslide.OpenSlide(str(path))
            dims = self._osr.level_dimensions
            downsamples = self._osr.level_downsamples
            props = dict(self._osr.properties)
        except Exception as exc:
            raise SlideError(f"{path}: OpenSlide cannot read it ({_reason(exc)})") from exc
        levels = []
        for i, ((w, h), ds) in enumerate(zip(dims, downsamples, strict=True)):
            tile = (
                int(props.get(f"openslide.level[{i}].tile-height", 512)),
                int(props.get(f"openslide.level[{i}].tile-width", 512)),
            )
            levels.append(Level((int(h), int(w)), float(ds), tile))
        if not levels or min(min(lv.shape) for lv in levels) <= 0:
            raise SlideError(f"{path}: OpenSlide reports no readable levels")
        self._levels = levels
        self._props = props
        mpp = props.get(openslide.PROPERTY_NAME_MPP_X)
        try:
            self._mpp = float(mpp) if mpp else None
        except ValueError:
            self._mpp = None
        if self._mpp is not None and not 0 < self._mpp < 1000:
            self._mpp = None
        self._vendor = props.get(openslide.PROPERTY_NAME_VENDOR, "openslide")

    def _read(self, level: int, y: int, x: int, h: int, w: int) -> np.ndarray:
        ds = self._levels[level].downsample
        try:
            image = self._osr.read_region((round(x * ds), round(y * ds)), level, (w, h))
        except Exception as exc:
            raise SlideError(
                f"{self.path}: cannot read level {level} at (y={y}, x={x}) ({_reason(exc)})"
            ) from exc
        # OpenSlide returns non-premultiplied RGBA; transparent means "no tissue scanned".
        return to_rgb8(np.asarray(image))

    def close(self) -> None:
        if not self._closed:
            self._osr.close()
        super().close()


def _reason(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
