"""Maps for one plain image: resize to the model's tile size, compute, resize back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from wsol.cams import compute_many
from wsol.data import resize_image
from wsol.model import WSOLModel
from wsol.refine import DenseCRFParams, dense_crf


@dataclass
class ImageMaps:
    maps: dict[str, np.ndarray]  # method -> float32 [H, W] in [0, 1], image resolution
    probabilities: np.ndarray  # [num_classes] softmax (sigmoids if multi-label)
    target: int  # the class the maps explain


def image_maps(
    model: WSOLModel,
    image: np.ndarray,
    methods: Sequence[str],
    target: int | None = None,
    *,
    native: bool = False,
    refine: DenseCRFParams | None = None,
) -> ImageMaps:
    """Compute ``methods`` on an RGB ``uint8 [H, W, 3]`` image.

    The image is resized to the model's ``input_size`` square (the resolution it was
    trained at) unless ``native``; maps are resized back to the image (bilinear).
    ``refine`` then refines them with the dense CRF on the image's own pixels.
    """
    height, width = image.shape[:2]
    if native:
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    else:
        tensor = resize_image(image, model.config.input_size)
    x = model.normalize(tensor[None])
    result = compute_many(model, x, methods, targets=None if target is None else [target])
    maps = {}
    for method, m in result.maps.items():
        if m.shape[-2:] != (height, width):
            m = F.interpolate(m[None], size=(height, width), mode="bilinear", align_corners=False)[
                0
            ]
        if refine is not None:
            rgb = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]
            m = dense_crf(m.float(), rgb.to(m.device), refine)
        maps[method] = m[0].clamp(0, 1).float().cpu().numpy()
    probs = model.probabilities(result.logits.float())[0].cpu().numpy()
    return ImageMaps(maps, probs, int(result.targets[0]))
