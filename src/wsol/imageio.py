"""Reading plain images and masks, writing maps. Whole slides live in ``wsol.slide``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, UnidentifiedImageError

from wsol.atomic import atomic_path
from wsol.errors import ImageReadError, InputError, require_file
from wsol.slide.base import full_scale

TIFF_SUFFIXES = (".tif", ".tiff")
MAP_SUFFIXES = (".npy", ".png", ".tif", ".tiff")


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale any data to uint8 by the rule slides use (:func:`wsol.slide.full_scale`),
    so an image reads the same in ``wsol cam``, ``eval`` and ``train`` as in ``predict``
    and the app."""
    if array.dtype == np.uint8:
        return array
    scaled = np.nan_to_num(array.astype(np.float32)) * (255.0 / full_scale(array))
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


def _to_rgb(array: np.ndarray, path: Path) -> np.ndarray:
    """Grayscale, gray+alpha, RGB or RGBA ``[H, W(, C)]`` to RGB; alpha over white."""
    if array.ndim == 3 and array.shape[0] in (3, 4) and array.shape[-1] not in (3, 4):
        array = np.moveaxis(array, 0, -1)  # planar TIFF
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 2, 3, 4):
        raise ImageReadError(f"{path}: unsupported image shape {array.shape}")
    array = _to_uint8(array)
    channels = array.shape[-1]
    if channels in (2, 4):
        color = array[..., :-1].astype(np.float32)
        alpha = array[..., -1:].astype(np.float32) / 255.0
        array = np.round(color * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return np.ascontiguousarray(array)


def _read_pixels(path: Path, what: str, palette_to_rgb: bool) -> np.ndarray:
    require_file(path, what, ImageReadError)
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            return tifffile.imread(path, key=0)
        with Image.open(path) as img:
            img.load()
            if palette_to_rgb and img.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
                img = img.convert("RGBA" if "A" in img.mode or img.mode == "P" else "RGB")
            return np.array(img)
    except (
        UnidentifiedImageError,
        Image.DecompressionBombError,
        OSError,
        ValueError,
        tifffile.TiffFileError,
    ) as exc:
        raise ImageReadError(f"{path}: cannot read {what} ({exc})") from exc


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as RGB ``uint8 [H, W, 3]``.

    PNG, JPEG, BMP and other Pillow formats, and single-page TIFF through tifffile.
    Grayscale is replicated, alpha is composited on white; other bit depths are
    scaled as slides scale them (:func:`wsol.slide.base.full_scale`).
    """
    path = Path(path)
    return _to_rgb(_read_pixels(path, "image", palette_to_rgb=True), path)


def read_mask(path: str | Path) -> np.ndarray:
    """Read a mask image as ``bool [H, W]``: any nonzero colour channel (or palette
    index) is foreground. An alpha channel is opacity, not a label: a transparent
    pixel is background, and a black opaque one too."""
    path = Path(path)
    array = _read_pixels(path, "mask", palette_to_rgb=False)
    if array.ndim == 3 and array.shape[-1] in (2, 4):  # grey or RGB, then alpha
        array = array[..., :-1].any(axis=-1) & (array[..., -1] != 0)
    elif array.ndim == 3:
        array = array.any(axis=-1) if array.shape[-1] <= 4 else array.any(axis=0)
    if array.ndim != 2:
        raise ImageReadError(f"{path}: unsupported mask shape {array.shape}")
    return array != 0


def write_map(path: str | Path, heatmap: np.ndarray) -> Path:
    """Write a ``[H, W]`` map in [0, 1] atomically, by suffix.

    ``.npy`` and ``.tif``/``.tiff`` keep float32 values; ``.png`` stores 8-bit
    (value x 255).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in MAP_SUFFIXES:
        raise InputError(f"{path}: unsupported output format; use one of {', '.join(MAP_SUFFIXES)}")
    data = np.asarray(heatmap, dtype=np.float32)
    with atomic_path(path) as tmp:
        if suffix == ".npy":
            with open(tmp, "wb") as fh:
                np.save(fh, data)
        elif suffix == ".png":
            Image.fromarray(np.round(np.clip(data, 0, 1) * 255).astype(np.uint8)).save(
                tmp, format="PNG"
            )
        else:
            tifffile.imwrite(tmp, data, compression="zlib", metadata={"axes": "YX"})
    return path
