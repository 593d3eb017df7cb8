"""Losses of the localization heads: partial cross-entropy, a CRF loss, a size barrier.

Plain batched torch on whatever device the inputs live on; no compiled extension.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from wsol.pseudo import IGNORE


def partial_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over labelled pixels only.

    ``logits [B, C, H, W]``, ``labels long [B, H, W]`` with :data:`wsol.pseudo.IGNORE`
    where there is no label. The mean over labelled pixels; 0 (still differentiable)
    when nothing is labelled.
    """
    if not (labels != IGNORE).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits, labels, ignore_index=IGNORE)


def keep_loss(
    logits: torch.Tensor,
    previous: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    fg_extra: float = 0.0,
    sure: float = 0.9,
) -> torch.Tensor:
    """KL divergence from a head's earlier prediction, averaged over the masked pixels.

    ``logits [B, C, H, W]``, ``previous [B, C, H, W]`` probabilities (the head before
    fine-tuning; class 0 is background), ``mask [B, H, W]`` bool (pixels to keep;
    None = all). Fine-tuning on a few strokes otherwise moves the whole map (learning
    without forgetting, Li and Hoiem 2017): with this term a pixel changes only where
    the strokes and the pairwise loss give a reason. 0 with zero gradient where nothing
    changed yet.

    Pixels the earlier map calls foreground with probability above ``sure`` count
    ``1 + fg_extra`` times. The mean stays over the kept pixels, so the extra weight
    holds lesion interiors harder without loosening the rest. Background strokes sit on
    false-positive rims next to true lesions, and without it they also pull the lesion
    border in (docs/BENCHMARKS.md, "Where the errors are").
    """
    log_q = torch.log_softmax(logits, dim=1)
    p = previous.to(log_q.dtype)
    kl = (p * (torch.log(p.clamp_min(1e-8)) - log_q)).sum(dim=1)
    kept = torch.ones_like(kl) if mask is None else mask.to(kl.dtype)
    weight = kept
    if fg_extra:
        weight = kept * (1 + fg_extra * (1 - p[:, 0] > sure).to(kl.dtype))
    return (kl * weight).sum() / kept.sum().clamp_min(1.0)


def crf_loss(
    probs: torch.Tensor,
    image: torch.Tensor,
    *,
    radius: int = 5,
    sigma_rgb: float = 15 / 255,
    sigma_xy: float = 5.0,
    scale: float = 1.0,
) -> torch.Tensor:
    """Pairwise (CRF) loss pulling nearby pixels of similar colour to the same label.

    ``sum_c sum_{p,q} W_pq S_p^c (1 - S_q^c)`` over pairs ``q`` within ``radius`` of
    ``p`` (Tang et al. 2018's regularized loss, as F-CAM uses it), with the bilateral
    affinity ``W_pq = exp(-|I_p - I_q|^2 / 2 sigma_rgb^2 - |p - q|^2 / 2 sigma_xy^2)``.
    A local window instead of the reference's permutohedral filter: cost linear in
    pixels (``(2 radius + 1)^2`` shifted products), any device, autograd throughout.

    Parameters
    ----------
    probs : Tensor [B, C, H, W]
        Class probabilities (softmax of the head).
    image : Tensor [B, 3, H, W]
        Colours in [0, 1] (not normalized), the same size as ``probs``.
    scale : float
        Compute at this fraction of the resolution (the reference uses 0.5 or less).

    Returns
    -------
    Scalar: the sum divided by the number of pixels and of neighbours per pixel, so it
    lies in [0, 1] for any ``radius``.
    """
    if probs.shape[-2:] != image.shape[-2:]:
        raise ValueError(f"probs {tuple(probs.shape)} and image {tuple(image.shape)} differ")
    if scale != 1.0:
        size = [max(1, round(s * scale)) for s in probs.shape[-2:]]
        probs = F.interpolate(probs, size=size, mode="bilinear", align_corners=False)
        image = F.interpolate(image, size=size, mode="bilinear", align_corners=False)
    b, _, h, w = probs.shape
    r = radius
    pad_p = F.pad(probs, (r, r, r, r))
    pad_i = F.pad(image, (r, r, r, r))
    valid = F.pad(torch.ones_like(probs[:, :1]), (r, r, r, r))
    total = probs.new_zeros(())
    # The pair term is symmetric in p and q: half of the offsets cover every pair.
    offsets = [(dy, dx) for dy in range(0, r + 1) for dx in range(-r, r + 1) if (dy, dx) > (0, 0)]
    for dy, dx in offsets:
        ys, xs = slice(r + dy, r + dy + h), slice(r + dx, r + dx + w)
        q_probs, q_image, q_valid = pad_p[..., ys, xs], pad_i[..., ys, xs], valid[..., ys, xs]
        colour = ((image - q_image) ** 2).sum(dim=1, keepdim=True)
        affinity = torch.exp(-colour / (2 * sigma_rgb**2) - (dy * dy + dx * dx) / (2 * sigma_xy**2))
        agree = (probs * q_probs).sum(dim=1, keepdim=True)
        # sum_c S_p^c (1 - S_q^c) = 1 - sum_c S_p^c S_q^c for probabilities summing to 1
        total = total + (affinity * q_valid * (1 - agree)).sum()
    # Per pixel and per neighbour: in [0, 1] whatever the window, so weights carry over.
    return total / (b * h * w * len(offsets))


def extended_log_barrier(z: torch.Tensor, t: float) -> torch.Tensor:
    """Kervadec et al.'s extended log-barrier for the constraint ``z <= 0``.

    ``-log(-z) / t`` while ``z <= -1/t^2``, continued linearly (same value and slope)
    beyond, so it is defined, finite and differentiable for any ``z``.
    """
    if t <= 0:
        raise ValueError(f"t must be positive, got {t}")
    edge = -1.0 / t**2
    log_part = -torch.log(-z.clamp(max=edge)) / t
    linear = t * z - math.log(1.0 / t**2) / t + 1.0 / t
    return torch.where(z <= edge, log_part, linear)


def size_loss(probs: torch.Tensor, t: float, min_fraction: float = 0.0) -> torch.Tensor:
    """Absolute size constraint: every class covers more than ``min_fraction`` of each image.

    F-CAM's ASC: for foreground and background, ``min_fraction - size <= 0`` with
    ``size`` the class's mean probability, enforced with :func:`extended_log_barrier`;
    it keeps the decoder from collapsing to all-foreground or all-background. Mean over
    images and classes.
    """
    sizes = probs.mean(dim=(2, 3))  # [B, C]
    return extended_log_barrier(min_fraction - sizes, t).mean()


class BarrierSchedule:
    """The log-barrier's ``t``: starts at ``t0``, times ``factor`` per epoch, capped."""

    def __init__(self, t0: float = 1.0, factor: float = 1.01, cap: float = 10.0) -> None:
        self.t0, self.factor, self.cap = t0, factor, cap

    def __call__(self, epoch: int) -> float:
        return min(self.t0 * self.factor**epoch, self.cap)
