"""The three heads that share the encoder: classifier, F-CAM decoder, PixelCAM."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ClassifierHead(nn.Module):
    """Global average pooling + linear layer; its (effective) weights define CAM.

    With ``kernel_usage`` α > 0 the layer applies Kernel Usage Regularization: the
    weights in use are ``W * α * softmax(W)``, the softmax taken over classes for each
    kernel, so a kernel that votes strongly for one class is damped for the others.
    The stored parameter stays ``W``; :attr:`weight` is what CAM reads.
    """

    def __init__(self, in_channels: int, num_classes: int, kernel_usage: float = 0.0) -> None:
        super().__init__()
        self.fc = nn.Linear(in_channels, num_classes)
        self.kernel_usage = kernel_usage

    @property
    def weight(self) -> torch.Tensor:
        """Effective class weights ``[num_classes, in_channels]``."""
        w = self.fc.weight
        if self.kernel_usage > 0:
            w = w * self.kernel_usage * torch.softmax(w, dim=0)
        return w

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        return F.linear(feature.mean(dim=(2, 3)), self.weight, self.fc.bias)


def _conv_bn_relu(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class _DecoderBlock(nn.Module):
    """Upsample to the skip's grid, concatenate the skip, two 3x3 convolutions."""

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            _conv_bn_relu(in_ch + skip_ch, out_ch), _conv_bn_relu(out_ch, out_ch)
        )

    def forward(
        self, x: torch.Tensor, size: tuple[int, int], skip: torch.Tensor | None
    ) -> torch.Tensor:
        if x.shape[-2:] != size:
            x = F.interpolate(x, size=size, mode="nearest")
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv(x)


class UNetDecoder(nn.Module):
    """F-CAM's U-Net decoder over the encoder's skip features.

    One block per distinct encoder stride, deepest first, each concatenating every
    tap at that stride; then plain x2 blocks down to stride 1, and a 3x3 convolution
    to (background, foreground) logits at input resolution. Taps that share a stride
    (dilated ResNets, ViTs) are fused in one block, so the same decoder serves all
    backbones.

    Parameters
    ----------
    channels, reductions : list of int
        Channels and strides of the encoder taps, shallowest first.
    decoder_channels : list of int
        Block widths, deepest first; the last width is repeated if more blocks are needed.
    out_channels : int
        2 for (background, foreground).
    """

    def __init__(
        self,
        channels: list[int],
        reductions: list[int],
        decoder_channels: list[int],
        out_channels: int = 2,
    ) -> None:
        super().__init__()
        levels = sorted(set(reductions), reverse=True)
        deepest = levels[0]
        # Every tap at the deepest stride forms the decoder's input.
        self.input_taps = [i for i, r in enumerate(reductions) if r == deepest]
        # Each later block: (stride it produces, taps concatenated there).
        self.plan: list[tuple[int, list[int]]] = []
        for level in levels[1:]:
            self.plan.append((level, [i for i, r in enumerate(reductions) if r == level]))
        stride = levels[-1]
        while stride > 1:
            stride = max(1, stride // 2)
            self.plan.append((stride, []))

        widths = list(decoder_channels) or [16]
        widths += [widths[-1]] * (len(self.plan) - len(widths))
        in_ch = sum(channels[i] for i in self.input_taps)
        blocks = []
        for (_, taps), out_ch in zip(self.plan, widths, strict=False):  # extra widths unused
            blocks.append(_DecoderBlock(in_ch, sum(channels[i] for i in taps), out_ch))
            in_ch = out_ch
        self.blocks = nn.ModuleList(blocks)
        self.segmentation = nn.Conv2d(in_ch, out_channels, 3, padding=1)

    def forward(self, features: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        x = torch.cat([features[i] for i in self.input_taps], dim=1)
        for block, (stride, taps) in zip(self.blocks, self.plan, strict=True):
            if taps:
                grid = features[taps[0]].shape[-2:]
                skip = torch.cat([features[i] for i in taps], dim=1)
            else:
                grid, skip = (-(-size[0] // stride), -(-size[1] // stride)), None
            x = block(x, tuple(grid), skip)
        x = self.segmentation(x)
        if x.shape[-2:] != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return x


class PixelHead(nn.Module):
    """PixelCAM's pixel-wise classifier in the encoder's feature space.

    A 1x1 convolution, or with ``hidden > 0`` a two-layer pixel MLP, applied to one
    encoder feature map; logits are upsampled bilinearly to input resolution.
    """

    def __init__(self, in_channels: int, out_channels: int, hidden: int = 0) -> None:
        super().__init__()
        if hidden > 0:
            self.net = nn.Sequential(
                nn.Conv2d(in_channels, hidden, 1),
                nn.ReLU(inplace=True),
                nn.Conv2d(hidden, out_channels, 1),
            )
        else:
            self.net = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, feature: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        logits = self.net(feature)
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
