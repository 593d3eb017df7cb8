"""Model guidance: losses on the classifier's own differentiable heatmaps.

"Right for the right reasons": besides the image-level loss, pixel labels (the user's
corrections, or a few fully labelled images) are imposed directly on the classifier's
CAM or Grad-CAM, kept in the autograd graph, so the encoder learns features whose
class evidence lies where the labels say. After training, the ordinary ``cam`` /
``gradcam`` maps of the model are the segmentation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from wsol.model import WSOLModel
from wsol.pseudo import BG, FG

GUIDE_METHODS = ("cam", "gradcam")


def cam_logits(
    model: WSOLModel,
    features: list[torch.Tensor],
    targets: torch.Tensor,
    method: str = "cam",
) -> torch.Tensor:
    """Per-pixel class evidence ``[B, h, w]`` of the targets, differentiable.

    ``cam``: ``z = sum_k w^c_k A_k``, the CAM before its ReLU; with global average
    pooling ``mean(z) + b_c`` is the class logit. The bias is left out on purpose: the
    loss then asks for ``z > 0`` on foreground and ``z < 0`` on background, which is
    exactly where the displayed map ``ReLU(z)`` is zero or not.
    ``gradcam``: the same with ``w^c`` replaced by the spatially summed gradient of the
    score w.r.t. the activations, computed with ``create_graph=True`` so the loss can
    flow through the gradient (for a GAP + linear head both are equal).
    """
    if method not in GUIDE_METHODS:
        raise ValueError(f"guide method must be one of {GUIDE_METHODS}, got {method!r}")
    acts = features[model.cam_tap]
    if method == "cam":
        weights = model.classifier.weight[targets]
    else:
        logits = model.classifier(acts)
        score = logits.gather(1, targets[:, None]).sum()
        (grads,) = torch.autograd.grad(score, acts, create_graph=True)
        weights = grads.sum(dim=(2, 3))
    return torch.einsum("bk,bkhw->bhw", weights, acts)


def guidance_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Class-balanced partial binary cross-entropy of pixel logits ``[B, H, W]``.

    ``labels`` are :data:`wsol.pseudo.FG` / :data:`~wsol.pseudo.BG` / ignore (any
    other value). Logits at a coarser grid are upsampled bilinearly to the labels.
    Foreground and background pixels weigh half each (a few painted tumour pixels are
    not drowned by a large background); no labelled pixel gives a zero that still has
    a gradient path, so batches without labels need no special case.
    """
    if logits.shape[-2:] != labels.shape[-2:]:
        logits = F.interpolate(
            logits.unsqueeze(1), size=labels.shape[-2:], mode="bilinear", align_corners=False
        )[:, 0]
    fg, bg = labels == FG, labels == BG
    per_pixel = F.binary_cross_entropy_with_logits(logits, fg.to(logits.dtype), reduction="none")
    terms = [per_pixel[m].mean() for m in (fg, bg) if m.any()]
    if not terms:
        return logits.sum() * 0
    return torch.stack(terms).mean()
