"""The CAM family as plain batched tensor formulas.

Every function takes activations ``A`` and, where used, gradients ``G = dS_c/dA`` of
the target score, both ``[B, K, h, w]``, and returns a raw map ``[B, h, w]`` (ReLU
applied, not yet normalized or upsampled). Nothing here touches a model, so each
formula can be checked on hand-made tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# The constants match pytorch-grad-cam so that maps agree to float precision.
_EPS_GRADCAMPP = 1e-6
_EPS_XGRADCAM = 1e-7


def weighted_sum(weights: torch.Tensor, activations: torch.Tensor) -> torch.Tensor:
    """``ReLU(sum_k w_k A_k)`` for channel weights ``[B, K]``."""
    return F.relu(torch.einsum("bk,bkhw->bhw", weights, activations))


def cam(activations: torch.Tensor, class_weights: torch.Tensor) -> torch.Tensor:
    """CAM (Zhou et al. 2016): the classifier's weights of the target class.

    ``class_weights`` is ``[B, K]``: the linear layer's row for each sample's target.
    """
    return weighted_sum(class_weights, activations)


def other_classes(targets: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """``[B, C]`` bool: the classes present in each image other than its target (N_x)."""
    others = present.bool().clone()
    others[torch.arange(len(targets), device=targets.device), targets] = False
    return others


def minmaxcam(
    activations: torch.Tensor,
    weights: torch.Tensor,
    targets: torch.Tensor,
    present: torch.Tensor,
) -> torch.Tensor:
    """MinMax-CAM (L. David et al. 2022): CAM minus the mean CAM of the other classes.

    The channel weights are ``w^c - mean_{n in N_x} w^n`` with ``N_x`` the classes
    present in the image other than the target ``c``: kernels that also vote for a
    co-occurring class lose their weight, so the map keeps to what is specific to
    ``c``. With no other class present it is plain CAM.

    Parameters
    ----------
    weights : Tensor [C, K]
        The classifier's class weights.
    targets : Tensor [B]
        Class each map explains.
    present : Tensor [B, C] bool
        Classes present in each image (ground truth, or detections).
    """
    others = other_classes(targets, present).to(weights.dtype)
    count = others.sum(dim=1, keepdim=True).clamp_min(1)
    return weighted_sum(weights[targets] - (others @ weights) / count, activations)


def dminmax_gradcam(
    activations: torch.Tensor,
    grad_target: torch.Tensor,
    grad_others: torch.Tensor,
    grad_present: torch.Tensor,
    num_others: torch.Tensor,
    num_present: torch.Tensor,
) -> torch.Tensor:
    """D-MinMax-Grad-CAM (L. David et al.): the gradient form of MinMax, split by sign.

    ``alpha_k = sum_ij [ReLU(g^c) - ReLU(g^N) / |N_x| + min(0, g^C) / |C_x|]`` where
    ``g^c = dS_c/dA``, ``g^N = d(sum_{n in N_x} S_n)/dA`` over the other present
    classes and ``g^C = d(sum_{n in C_x} S_n)/dA`` over all present classes (``C_x``
    includes ``c``); the map is ``ReLU(sum_k alpha_k A_k)``. ``num_others`` and
    ``num_present`` are ``|N_x|``, ``|C_x|`` per image ``[B]`` (0 counts as 1: the
    matching gradient is then zero anyway).
    """
    n = num_others.to(grad_target.dtype).clamp_min(1).view(-1, 1, 1, 1)
    c = num_present.to(grad_target.dtype).clamp_min(1).view(-1, 1, 1, 1)
    per_pixel = F.relu(grad_target) - F.relu(grad_others) / n + grad_present.clamp(max=0) / c
    return weighted_sum(per_pixel.sum(dim=(2, 3)), activations)


def gradcam(activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017): weights are spatially averaged gradients."""
    return weighted_sum(grads.mean(dim=(2, 3)), activations)


def gradcampp_weights(
    activations: torch.Tensor,
    grad1: torch.Tensor,
    grad2: torch.Tensor | None = None,
    grad3: torch.Tensor | None = None,
) -> torch.Tensor:
    """Grad-CAM++ channel weights (Chattopadhay et al. 2018, Eq. 19).

    With the score passed through an exponential, the second and third derivatives
    are powers of the first: ``grad2 = G**2``, ``grad3 = G**3`` (the defaults). Smooth
    Grad-CAM++ passes averages over noisy copies instead.
    """
    if grad2 is None:
        grad2 = grad1.pow(2)
    if grad3 is None:
        grad3 = grad1.pow(3)
    sum_a = activations.sum(dim=(2, 3), keepdim=True)
    alpha = grad2 / (2 * grad2 + sum_a * grad3 + _EPS_GRADCAMPP)
    alpha = torch.where(grad1 != 0, alpha, torch.zeros_like(alpha))
    return (F.relu(grad1) * alpha).sum(dim=(2, 3))


def gradcampp(activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ map."""
    return weighted_sum(gradcampp_weights(activations, grads), activations)


def xgradcam(activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """XGrad-CAM (Fu et al. 2020): gradients weighted by normalized activations."""
    sum_a = activations.sum(dim=(2, 3), keepdim=True)
    weights = (grads * activations / (sum_a + _EPS_XGRADCAM)).sum(dim=(2, 3))
    return weighted_sum(weights, activations)


def layercam(activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """LayerCAM (Jiang et al. 2021): positive gradients weight each location."""
    return F.relu((F.relu(grads) * activations).sum(dim=1))


def smoothgradcampp(activations: torch.Tensor, noisy_grads: torch.Tensor) -> torch.Tensor:
    """Smooth Grad-CAM++ (Omeiza et al. 2019).

    ``noisy_grads`` is ``[N, B, K, h, w]``: the gradients of N noisy copies of each
    image. Their first, second and third powers are averaged (SmoothGrad) before the
    Grad-CAM++ weighting of the clean image's activations.
    """
    g1 = noisy_grads.mean(dim=0)
    g2 = noisy_grads.pow(2).mean(dim=0)
    g3 = noisy_grads.pow(3).mean(dim=0)
    return weighted_sum(gradcampp_weights(activations, g1, g2, g3), activations)


def scorecam_weights(scores: torch.Tensor) -> torch.Tensor:
    """Score-CAM channel weights: softmax over channels of the masked-input scores.

    Channels that were skipped (their score is ``-inf``) get weight 0.
    """
    return torch.softmax(scores, dim=1)


def normalize_maps(maps: torch.Tensor) -> torch.Tensor:
    """Min-max normalize each map of ``[B, H, W]`` to [0, 1]; constant maps become 0."""
    flat = maps.flatten(1)
    lo = flat.amin(dim=1).view(-1, 1, 1)
    hi = flat.amax(dim=1).view(-1, 1, 1)
    span = hi - lo
    return torch.where(span > 0, (maps - lo) / span.clamp_min(torch.finfo(maps.dtype).tiny), 0.0)


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of ``[B, h, w]`` maps to ``size``."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps.unsqueeze(1), size=size, mode="bilinear", align_corners=False)[:, 0]
