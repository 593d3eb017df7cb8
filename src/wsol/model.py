"""WSOLModel: one timm encoder shared by a classifier, an F-CAM decoder and a PixelCAM head."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import timm
import torch
from torch import nn

from wsol.config import IMAGENET_MEAN, IMAGENET_STD, ModelConfig
from wsol.encoder import build_encoder, feature_info
from wsol.errors import InputError
from wsol.heads import ClassifierHead, PixelHead, UNetDecoder


class HeadOutputs(NamedTuple):
    """Everything one forward pass of all heads produces."""

    logits: torch.Tensor  # [B, num_classes] image-level class scores
    fcam: torch.Tensor  # [B, 2, H, W] F-CAM decoder logits (bg, fg) at input resolution
    pixel: torch.Tensor  # [B, P, H, W] PixelCAM logits (bg, fg...) at input resolution
    features: list[torch.Tensor]  # encoder taps, shallowest first


class WSOLModel(nn.Module):
    """A classifier whose encoder also feeds two localization heads.

    ``model(x)`` returns class logits, so the model works with any classifier
    tooling; :meth:`forward_heads` runs every head. Inputs are normalized RGB
    tensors ``[B, 3, H, W]``; :meth:`normalize` makes them from images.

    Build with :func:`wsol.create_model`, load with :func:`wsol.load_model`.
    """

    def __init__(self, config: ModelConfig, pretrained: bool | str | Path = False) -> None:
        super().__init__()
        self.config = config
        self.encoder = build_encoder(
            config.backbone, config.out_indices, config.output_stride, pretrained
        )
        channels, reductions = feature_info(self.encoder)
        self.feature_channels = channels
        self.feature_reductions = reductions
        self.classifier = ClassifierHead(channels[-1], config.num_classes, config.kernel_usage)
        self.decoder = UNetDecoder(channels, reductions, config.decoder_channels, out_channels=2)
        if not -len(channels) <= config.pixel_tap < len(channels):
            raise InputError(
                f"pixel_tap {config.pixel_tap} is not one of {config.backbone}'s "
                f"{len(channels)} feature maps (use -{len(channels)}..{len(channels) - 1})"
            )
        pixel_in = channels[config.pixel_tap]
        self.pixel_head = PixelHead(pixel_in, config.pixel_classes, config.pixel_hidden)
        self.register_buffer("mean", torch.tensor(config.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std).view(1, 3, 1, 1), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.mean.device

    @property
    def cam_tap(self) -> int:
        """Index of the encoder tap the classifier (and so the CAM family) reads."""
        return len(self.feature_channels) - 1

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Turn RGB images into model inputs.

        ``uint8`` images are scaled from [0, 255], floating images are taken as
        RGB in [0, 1]; both are normalized with the config's mean and std and moved
        to the model's device. Accepts ``[B, 3, H, W]`` or ``[3, H, W]``.
        """
        if images.ndim == 3:
            images = images.unsqueeze(0)
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected RGB images [B, 3, H, W], got shape {tuple(images.shape)}")
        x = images.to(self.device)
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        return (x - self.mean) / self.std

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        # oneDNN (CPU) and cuDNN pick faster convolution kernels for channels-last
        # tensors; the results are the same.
        return list(self.encoder(x.contiguous(memory_format=torch.channels_last)))

    def classify(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.classifier(features[self.cam_tap])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.forward_features(x))

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Class probabilities of logits ``[B, C]``: sigmoids if multi-label, else softmax."""
        if self.config.multilabel:
            return torch.sigmoid(logits)
        return torch.softmax(logits, dim=1)

    def fcam_logits(self, features: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        return self.decoder(features, size)

    def pixel_logits(self, features: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        return self.pixel_head(features[self.config.pixel_tap], size)

    def forward_heads(self, x: torch.Tensor) -> HeadOutputs:
        size = (x.shape[-2], x.shape[-1])
        features = self.forward_features(x)
        return HeadOutputs(
            self.classify(features),
            self.fcam_logits(features, size),
            self.pixel_logits(features, size),
            features,
        )

    def save(self, path: str | Path, half: bool = False) -> Path:
        """Write weights and config to one ``.safetensors`` file (atomically).

        ``half`` stores the weights as float16 (loading casts them back to float32).
        """
        from wsol.checkpoint import save_model

        return save_model(self, path, half=half)

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"backbone={c.backbone}, classes={c.class_names}, output_stride={c.output_stride}, "
            f"input_size={c.input_size}, mpp={c.mpp}"
        )

    def summary(self) -> str:
        """A short human-readable description (what the demo and the app print)."""
        c = self.config
        n_params = sum(p.numel() for p in self.parameters())

        def count(module: nn.Module) -> str:
            return f"{sum(p.numel() for p in module.parameters()) / 1e6:.2f} M"

        taps = ", ".join(
            f"{ch}ch/{r}"
            for ch, r in zip(self.feature_channels, self.feature_reductions, strict=True)
        )
        return "\n".join(
            [
                f"WSOLModel  {c.backbone}  ({n_params / 1e6:.2f} M parameters, "
                f"device {self.device})",
                f"  classes        {c.num_classes}: {', '.join(c.class_names)}"
                + ("  (multi-label, sigmoid)" if c.multilabel else ""),
                f"  encoder taps   {taps}   (channels/stride)",
                f"  classifier     GAP + linear on tap {self.cam_tap}   {count(self.classifier)}",
                f"  F-CAM decoder  U-Net, {len(self.decoder.blocks)} blocks -> (bg, fg)   "
                f"{count(self.decoder)}",
                f"  PixelCAM head  tap {c.pixel_tap % len(self.feature_channels)} -> "
                f"{c.pixel_classes} classes   "
                f"{count(self.pixel_head)}",
                f"  input          {c.input_size} px tiles, mpp {c.mpp}, "
                f"mean {c.mean}, std {c.std}",
            ]
        )


def _timm_normalization(backbone: str) -> dict[str, list[float]]:
    """The mean/std the backbone's pretrained weights expect (ImageNet's if unknown)."""
    cfg = timm.get_pretrained_cfg(backbone)
    if cfg is None:
        return {}
    d = cfg.to_dict()
    return {"mean": list(d.get("mean", IMAGENET_MEAN)), "std": list(d.get("std", IMAGENET_STD))}


def create_model(
    backbone: str = "resnet18",
    num_classes: int = 2,
    *,
    pretrained: bool | str | Path = False,
    **config: object,
) -> WSOLModel:
    """Build a :class:`WSOLModel`.

    Parameters
    ----------
    backbone : str
        timm model name; resnet18, resnet50, vgg16_bn and deit_small_patch16_224 are
        tested.
    num_classes : int
        Image-level classes.
    pretrained : bool or path
        ``True`` downloads timm's ImageNet weights for the encoder (needs internet;
        fails with :class:`~wsol.encoder.PretrainedWeightsError` offline). A path
        loads a local timm weights file instead. Heads start from random init.
    **config
        Any other :class:`~wsol.config.ModelConfig` field (``output_stride``,
        ``class_names``, ``input_size``, ``mpp``, ``pixel_tap`` ...).
    """
    if "mean" not in config and "std" not in config:
        config.update(_timm_normalization(backbone))
    cfg = ModelConfig(backbone=backbone, num_classes=num_classes, **config)  # type: ignore[arg-type]
    return WSOLModel(cfg, pretrained=pretrained).eval()
