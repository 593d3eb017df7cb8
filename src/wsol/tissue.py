"""Low-resolution tissue detection, so tiled inference skips glass."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy import ndimage
from skimage import filters, morphology

from wsol.slide import Slide

#: Otsu's threshold on saturation is clamped to this range: glass stays below the floor
#: even on an all-glass slide, and on an all-tissue image Otsu would split the tissue
#: itself (pale stroma vs nuclei), which the ceiling prevents.
SATURATION_RANGE = (0.04, 0.15)


@dataclass
class TissueMask:
    """Boolean tissue mask of a slide at low resolution."""

    mask: np.ndarray  # bool [h, w]
    downsample: float  # level-0 pixels per mask pixel
    threshold: float  # saturation threshold used

    @property
    def labels(self) -> np.ndarray:
        """The mask as uint8 labels (0 glass, 1 tissue) for a napari Labels layer.

        Use ``scale=(downsample, downsample)`` to overlay it on the slide's level 0.
        """
        return self.mask.astype(np.uint8)

    @property
    def fraction(self) -> float:
        return float(self.mask.mean()) if self.mask.size else 0.0

    @cached_property
    def _integral(self) -> np.ndarray:
        integral = np.zeros((self.mask.shape[0] + 1, self.mask.shape[1] + 1), np.int64)
        integral[1:, 1:] = self.mask.cumsum(0).cumsum(1)
        return integral

    def box_fractions(self, boxes: np.ndarray) -> np.ndarray:
        """Tissue fraction of each level-0 box ``[N, 4]`` as ``(y, x, h, w)``."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        integral = self._integral
        h, w = self.mask.shape
        # Mask pixels the box touches, unclipped: outside the slide counts as glass.
        ty0 = np.floor(boxes[:, 0] / self.downsample).astype(np.int64)
        tx0 = np.floor(boxes[:, 1] / self.downsample).astype(np.int64)
        ty1 = np.ceil((boxes[:, 0] + boxes[:, 2]) / self.downsample).astype(np.int64)
        tx1 = np.ceil((boxes[:, 1] + boxes[:, 3]) / self.downsample).astype(np.int64)
        y0, y1 = np.clip(ty0, 0, h), np.clip(ty1, 0, h)
        x0, x1 = np.clip(tx0, 0, w), np.clip(tx1, 0, w)
        inside = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
        full = np.maximum((ty1 - ty0) * (tx1 - tx0), 1)
        return np.clip(inside / full, 0.0, 1.0)


def saturation(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation of ``uint8 [h, w, 3]`` as float32 in [0, 1]."""
    rgb = rgb.astype(np.float32)
    top = rgb.max(axis=-1)
    spread = top - rgb.min(axis=-1)
    return np.divide(spread, top, out=np.zeros_like(top), where=top > 0)


def tissue_mask_from_rgb(
    rgb: np.ndarray, *, closing: int = 2, min_object: int = 64, min_hole: int = 64
) -> tuple[np.ndarray, float]:
    """Tissue mask of an RGB overview: Otsu on saturation, then morphological clean-up.

    Parameters
    ----------
    rgb : uint8 [h, w, 3]
    closing : int
        Radius (pixels) of the closing that joins fragmented tissue.
    min_object, min_hole : int
        Tissue specks and holes of at most this many pixels are removed / filled.

    Returns
    -------
    mask : bool [h, w]
    threshold : float
        The saturation threshold used.
    """
    sat = saturation(rgb)
    # Pure black (scanner borders) and pure white carry no hue; keep them out of Otsu.
    value = rgb.max(axis=-1)
    informative = sat[(value > 30) & (value < 250)]
    if informative.size > 16 and float(informative.max() - informative.min()) > 1e-3:
        threshold = float(filters.threshold_otsu(informative))
    else:
        threshold = SATURATION_RANGE[0]
    threshold = float(np.clip(threshold, *SATURATION_RANGE))
    mask = (sat > threshold) & (value > 30)
    if closing > 0:
        # Pad with the edge so tissue touching the image border is not eroded away.
        padded = np.pad(mask, closing, mode="edge")
        mask = ndimage.binary_closing(padded, structure=morphology.disk(closing))[
            closing:-closing, closing:-closing
        ]
    mask = morphology.remove_small_objects(mask, max_size=min_object)
    mask = morphology.remove_small_holes(mask, max_size=min_hole)
    return mask, threshold


def detect_tissue(slide: Slide, *, max_size: int = 2048, **options: int) -> TissueMask:
    """Tissue mask of a slide from an overview whose longer side is ``max_size`` pixels.

    ``options`` go to :func:`tissue_mask_from_rgb`.
    """
    overview, downsample = slide.thumbnail(max_size)
    mask, threshold = tissue_mask_from_rgb(overview, **options)
    return TissueMask(mask, downsample, threshold)
