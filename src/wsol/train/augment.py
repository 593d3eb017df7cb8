"""Histology augmentations as batched torch: dihedral transforms and stain jitter."""

from __future__ import annotations

import torch


def dihedral(
    images: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random flip + 90° rotation per image (the 8 symmetries of a square tile).

    Tissue has no up or left, so these change nothing a pathologist would see. Returns
    the images and the transform codes ``[B]`` (0..7) for :func:`apply_dihedral`.
    """
    codes = torch.randint(0, 8, (images.shape[0],), generator=generator)
    return apply_dihedral(images, codes), codes


def apply_dihedral(x: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Apply transform ``codes[b]`` (bit 2: flip, bits 0-1: quarter turns) to ``x[b]``.

    Works for any ``[B, ..., H, W]`` tensor, so masks and seeds follow their images.
    """
    out = []
    for item, code in zip(x, codes.tolist(), strict=True):
        if code & 4:
            item = item.flip(-1)
        out.append(torch.rot90(item, code & 3, dims=(-2, -1)))
    return torch.stack(out)


def stain_jitter(
    images: torch.Tensor,
    strength: float = 0.05,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Scale and shift each RGB channel's optical density by a random amount per image.

    A cheap stand-in for HED jitter: stains act multiplicatively on transmitted light,
    i.e. additively in optical density ``-log(I)``. ``images`` float RGB in [0, 1].
    """
    b = images.shape[0]
    scale = 1 + strength * (2 * torch.rand(b, 3, 1, 1, generator=generator) - 1)
    shift = strength * (2 * torch.rand(b, 3, 1, 1, generator=generator) - 1)
    scale, shift = scale.to(images), shift.to(images)
    density = -torch.log(images.clamp(1 / 255, 1))
    return torch.exp(-(density * scale + shift)).clamp(0, 1)
