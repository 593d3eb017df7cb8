"""Score-CAM's masked forward passes, batched across images and channels."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from wsol.cams.int8 import int8_scorer
from wsol.model import WSOLModel


@torch.no_grad()
def scorecam_scores(
    model: WSOLModel,
    x: torch.Tensor,
    activations: torch.Tensor,
    targets: torch.Tensor,
    batch_size: int = 16,
    scale: float = 1.0,
    int8: bool = False,
) -> torch.Tensor:
    """Target-class logits of the input masked by each activation channel.

    Each channel ``A_k`` is upsampled to the input size (bilinear, corners aligned,
    as Score-CAM and pytorch-grad-cam do), min-max normalized, and multiplies the
    input; the masked images of all (image, channel) pairs are scored in chunks of
    ``batch_size``.

    Channels that are zero everywhere are not scored: their term in
    ``sum_k softmax(s)_k A_k`` is zero whatever their score, and leaving them out of
    the softmax only rescales the map, which normalization removes. Such channels are
    common after a ReLU (a fifth of ResNet-18's last stage on random init, more in
    trained models). A channel that is constant but not zero masks the whole image to
    zero; one forward of a blank image scores all of those.

    ``scale < 1`` scores the masked images at that fraction of the input size
    (antialiased), a shortcut that is not Score-CAM as defined: about ``1 / scale**2``
    fewer FLOPs, at the cost of map fidelity that depends on the model (see
    docs/BENCHMARKS.md). ``scale=1`` is exact.

    ``int8`` scores the same masked images with an int8 copy of ``model``
    (:func:`wsol.cams.int8.int8_scorer`), where the model can be quantized.

    Returns
    -------
    Tensor [B, K]
        Scores, ``-inf`` for skipped channels.
    """
    if not 0 < scale <= 1:
        raise ValueError(f"scale must be in (0, 1], got {scale}")
    if scale < 1:
        x = F.interpolate(x, scale_factor=scale, mode="bilinear", antialias=True)
    batch, channels = activations.shape[:2]
    flat = activations.flatten(2)
    lo, hi = flat.amin(dim=2), flat.amax(dim=2)
    varying = hi > lo
    blank = ~varying & (hi != 0)
    pairs = varying.nonzero()  # [N, 2] of (image, channel)

    score = model
    if int8 and pairs.shape[0]:
        # Calibrate on what will be scored: the images, a blank one (a mask's zeros)
        # and a few masked ones spread over the images; the images alone leave some
        # masked images' activations outside the int8 ranges (docs/BENCHMARKS.md).
        some = pairs[torch.linspace(0, pairs.shape[0] - 1, min(pairs.shape[0], 4 * batch)).long()]
        calibration = torch.cat(
            [x, _masked(x, activations, *some.unbind(1)), torch.zeros_like(x[:1])]
        )
        score = int8_scorer(model, calibration) or model

    scores = torch.full((batch, channels), float("-inf"), device=x.device, dtype=x.dtype)
    if blank.any():
        blank_logits = score(torch.zeros_like(x[:1]))[0]
        scores[blank] = (
            blank_logits[targets].unsqueeze(1).expand(-1, channels)[blank].to(scores.dtype)
        )

    for start in range(0, pairs.shape[0], batch_size):
        b, k = pairs[start : start + batch_size].unbind(dim=1)
        logits = score(_masked(x, activations, b, k))
        scores[b, k] = logits.gather(1, targets[b].unsqueeze(1))[:, 0].to(scores.dtype)
    return scores


def _masked(
    x: torch.Tensor, activations: torch.Tensor, b: torch.Tensor, k: torch.Tensor
) -> torch.Tensor:
    """Image ``b[i]`` times its channel ``k[i]``, upsampled and min-max normalized."""
    masks = F.interpolate(
        activations[b, k].unsqueeze(1), size=x.shape[-2:], mode="bilinear", align_corners=True
    )
    m_flat = masks.flatten(1)
    m_lo = m_flat.amin(dim=1).view(-1, 1, 1, 1)
    m_hi = m_flat.amax(dim=1).view(-1, 1, 1, 1)
    return x[b] * ((masks - m_lo) / (m_hi - m_lo + 1e-8))
