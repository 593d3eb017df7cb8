"""Heatmaps as pictures: a perceptual colormap and alpha blending over the image."""

from __future__ import annotations

import numpy as np

# Nine evenly spaced samples of matplotlib's "inferno" (dark = low, bright = high).
_INFERNO = np.array(
    [
        [0, 0, 4],
        [31, 12, 72],
        [85, 15, 109],
        [136, 34, 106],
        [186, 54, 85],
        [227, 89, 51],
        [249, 140, 10],
        [249, 201, 50],
        [252, 255, 164],
    ],
    dtype=np.float32,
)


def colorize(heatmap: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] ``[H, W]`` to RGB ``uint8 [H, W, 3]`` with inferno."""
    v = np.clip(np.asarray(heatmap, dtype=np.float32), 0, 1) * (len(_INFERNO) - 1)
    lo = np.floor(v).astype(np.int64).clip(0, len(_INFERNO) - 2)
    frac = (v - lo)[..., None]
    rgb = _INFERNO[lo] * (1 - frac) + _INFERNO[lo + 1] * frac
    return np.round(rgb).astype(np.uint8)


def blend(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Colorized heatmap over an RGB ``uint8`` image of the same height and width."""
    if image.shape[:2] != heatmap.shape:
        raise ValueError(f"image {image.shape[:2]} and heatmap {heatmap.shape} differ in size")
    mixed = (1 - alpha) * image.astype(np.float32) + alpha * colorize(heatmap).astype(np.float32)
    return np.round(mixed).astype(np.uint8)
