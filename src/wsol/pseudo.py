"""Pseudo-labels for the localization heads, sampled from CAMs, and user corrections.

Labels are ``long [B, H, W]`` tensors with :data:`FG` = 1, :data:`BG` = 0 and
:data:`IGNORE` = -1 (no loss). Seeds are resampled every training step from the same map
(F-CAM, WACV 2022): foreground pixels are drawn from above the map's Otsu threshold,
background pixels from its lowest ``bg_fraction``. Corrections painted by the user are a
separate array with the same codes and override seeds wherever they are set.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

FG, BG, IGNORE = 1, 0, -1
#: Trimap codes for display and export (uint8): what a seeder may draw from.
TRIMAP_BG, TRIMAP_FG, TRIMAP_UNSURE = 0, 1, 2


def otsu_threshold(maps: torch.Tensor, bins: int = 256) -> torch.Tensor:
    """Otsu's threshold of each map ``[B, H, W]`` with values in [0, 1]; returns ``[B]``.

    Batched on the maps' device: a histogram per image, then the split maximising the
    between-class variance (the threshold is the upper edge of the lower class).
    """
    b = maps.shape[0]
    flat = maps.reshape(b, -1).clamp(0, 1)
    index = (flat * (bins - 1)).round().long()
    hist = torch.zeros(b, bins, device=maps.device, dtype=torch.float64)
    hist.scatter_add_(1, index, torch.ones_like(index, dtype=torch.float64))
    centers = torch.linspace(0, 1, bins, device=maps.device, dtype=torch.float64)
    weight0 = hist.cumsum(1)
    mass0 = (hist * centers).cumsum(1)
    total, total_mass = weight0[:, -1:], mass0[:, -1:]
    weight1 = total - weight0
    mean0 = mass0 / weight0.clamp_min(1e-12)
    mean1 = (total_mass - mass0) / weight1.clamp_min(1e-12)
    between = weight0 * weight1 * (mean0 - mean1) ** 2
    between[(weight0 == 0) | (weight1 == 0)] = -1
    split = between.argmax(dim=1)
    # Pixels at or below the split's bin are background; the threshold sits half a bin up.
    return ((split.double() + 0.5) / (bins - 1)).to(maps.dtype)


def seed_regions(
    maps: torch.Tensor, bg_fraction: float = 0.3, erode: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Where seeds may be drawn: ``fg = map > Otsu`` (eroded), ``bg = lowest bg_fraction``.

    Parameters
    ----------
    maps : Tensor [B, H, W] in [0, 1]
    bg_fraction : float
        Fraction of each image's pixels, those with the lowest map values, that may be
        sampled as background (n in the F-CAM paper).
    erode : int
        Radius in pixels of a square erosion of the foreground region (0: none).

    Returns
    -------
    fg, bg : bool Tensors [B, H, W]; never both true at one pixel.
    """
    if not 0 <= bg_fraction <= 1:
        raise ValueError(f"bg_fraction must be in [0, 1], got {bg_fraction}")
    b = maps.shape[0]
    fg = maps > otsu_threshold(maps).view(b, 1, 1)
    if erode > 0:
        # Erosion is a min-filter: max-pool of the complement.
        k = 2 * erode + 1
        fg = ~(F.max_pool2d((~fg).float()[:, None], k, stride=1, padding=erode)[:, 0] > 0)
    flat = maps.reshape(b, -1)
    count = round(bg_fraction * flat.shape[1])
    bg = torch.zeros_like(flat, dtype=torch.bool)
    if count > 0:
        lowest = flat.topk(count, dim=1, largest=False).indices
        bg.scatter_(1, lowest, True)
    bg = bg.view_as(maps) & ~fg
    return fg, bg


def trimap(maps: torch.Tensor, bg_fraction: float = 0.3, erode: int = 0) -> torch.Tensor:
    """uint8 ``[B, H, W]``: :data:`TRIMAP_FG` / :data:`TRIMAP_BG` where seeds may be drawn,
    :data:`TRIMAP_UNSURE` elsewhere."""
    fg, bg = seed_regions(maps, bg_fraction, erode)
    out = torch.full(maps.shape, TRIMAP_UNSURE, dtype=torch.uint8, device=maps.device)
    out[bg] = TRIMAP_BG
    out[fg] = TRIMAP_FG
    return out


def _sample(weights: torch.Tensor, k: int, generator: torch.Generator | None) -> torch.Tensor:
    """Bool ``[B, N]``: up to ``k`` indices per row drawn without replacement, with
    probability proportional to ``weights`` (zero weight is never drawn).

    Weighted reservoir keys ``u ** (1 / w)`` (Efraimidis & Spirakis): the k largest keys
    are a weighted sample, and rows with fewer than k candidates simply give all of them.
    """
    u = torch.rand(weights.shape, generator=generator, device=weights.device)
    keys = torch.where(weights > 0, u.log() / weights.clamp_min(1e-12), -torch.inf)
    top = keys.topk(min(k, weights.shape[1]), dim=1)
    chosen = torch.zeros_like(weights, dtype=torch.bool)
    chosen.scatter_(1, top.indices, top.values > -torch.inf)
    return chosen


def sample_seeds(
    maps: torch.Tensor,
    k: int = 64,
    *,
    bg_fraction: float = 0.3,
    erode: int = 0,
    fg_sampling: str = "uniform",
    negatives: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw ``k`` foreground and ``k`` background seed pixels per image.

    Parameters
    ----------
    maps : Tensor [B, H, W] in [0, 1]
        The CAMs the seeds come from.
    k : int
        Seeds per class and image (fewer where the region is smaller).
    bg_fraction, erode
        See :func:`seed_regions`.
    fg_sampling : "uniform" or "map"
        Draw foreground uniformly in its region, or with probability proportional to the
        map.
    negatives : bool Tensor [B], optional
        Images known to contain no object: their seeds are all background, drawn from
        the whole image.
    generator : torch.Generator, optional
        For reproducible draws.

    Returns
    -------
    long Tensor [B, H, W] of :data:`FG`, :data:`BG` and :data:`IGNORE`.
    """
    if fg_sampling not in ("uniform", "map"):
        raise ValueError(f"fg_sampling must be 'uniform' or 'map', got {fg_sampling!r}")
    b = maps.shape[0]
    fg, bg = seed_regions(maps, bg_fraction, erode)
    if negatives is not None:
        neg = negatives.to(maps.device).bool().view(b, 1, 1)
        fg = fg & ~neg
        bg = bg | neg
    fg_weight = fg.reshape(b, -1).to(maps.dtype)
    if fg_sampling == "map":
        fg_weight = fg_weight * maps.reshape(b, -1).clamp_min(1e-6)
    fg_pick = _sample(fg_weight, k, generator)
    bg_pick = _sample(bg.reshape(b, -1).to(maps.dtype), k, generator)
    labels = torch.full((b, maps[0].numel()), IGNORE, dtype=torch.long, device=maps.device)
    labels[bg_pick] = BG
    labels[fg_pick] = FG
    return labels.view(maps.shape)


def apply_corrections(seeds: torch.Tensor, corrections: torch.Tensor | None) -> torch.Tensor:
    """Seeds with the user's corrections on top (a new tensor; neither input changes).

    ``corrections`` uses the same codes: :data:`FG` / :data:`BG` where the user painted,
    :data:`IGNORE` elsewhere. Every corrected pixel is labelled, seeded or not.
    """
    if corrections is None:
        return seeds.clone()
    if corrections.shape != seeds.shape:
        raise ValueError(
            f"corrections {tuple(corrections.shape)} do not match seeds {tuple(seeds.shape)}"
        )
    corrections = corrections.to(seeds.device, torch.long)
    return torch.where(corrections != IGNORE, corrections, seeds)
