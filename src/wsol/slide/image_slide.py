"""Plain images (png, jpg, bmp, single-page tif) as one-level slides, held in memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from wsol.errors import SlideError
from wsol.slide.base import Level, Slide, to_rgb8

#: Plain images are decoded whole; beyond this many pixels use a tiled (pyramidal) TIFF.
MAX_IMAGE_PIXELS = 1 << 28


class ImageSlide(Slide):
    backend = "image"

    def __init__(self, path: Path, kind: str) -> None:
        super().__init__(path)
        try:
            with Image.open(path) as img:
                if img.width * img.height > MAX_IMAGE_PIXELS:
                    raise SlideError(
                        f"{path}: {img.width}x{img.height} is too large for a plain image; "
                        "convert it to a tiled pyramidal TIFF"
                    )
                img.load()
                info = {k: str(v) for k, v in img.info.items() if isinstance(v, str | int | float)}
                if img.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "1"):
                    img = img.convert(
                        "RGBA" if "A" in img.mode or "transparency" in img.info else "RGB"
                    )
                pixels = np.asarray(img)
        except SlideError:
            raise
        except Exception as exc:
            raise SlideError(f"{path}: not a readable {kind.upper()} image ({exc})") from exc
        if pixels.ndim not in (2, 3) or min(pixels.shape[:2]) == 0:
            raise SlideError(f"{path}: unsupported image shape {pixels.shape}")
        self._pixels = to_rgb8(pixels)  # 16-bit PNGs arrive as int32: see full_scale
        h, w = self._pixels.shape[:2]
        self._levels = [Level((h, w), 1.0, (min(h, 512), min(w, 512)))]
        self._vendor, self._mpp = kind, None
        self._props = info

    @classmethod
    def from_array(
        cls, pixels: np.ndarray, path: str | Path = "<array>", mpp: float | None = None
    ) -> ImageSlide:
        """Wrap an in-memory image (e.g. a napari layer's data) as a slide."""
        self = cls.__new__(cls)
        Slide.__init__(self, Path(path))
        self._pixels = to_rgb8(np.asarray(pixels))
        h, w = self._pixels.shape[:2]
        self._levels = [Level((h, w), 1.0, (min(h, 512), min(w, 512)))]
        self._vendor, self._mpp = "array", mpp
        self._props = {}
        return self

    def _read(self, level: int, y: int, x: int, h: int, w: int) -> np.ndarray:
        return self._pixels[y : y + h, x : x + w].copy()
