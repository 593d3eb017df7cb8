"""The model's configuration: everything needed to rebuild a model from its weights."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ModelConfig:
    """Architecture, preprocessing and training context of a :class:`~wsol.WSOLModel`.

    Stored as JSON inside every checkpoint, so a checkpoint is self-describing.

    Attributes
    ----------
    backbone : str
        timm model name of the shared encoder (``resnet18``, ``vgg16_bn``,
        ``deit_small_patch16_224`` ...).
    num_classes : int
        Number of image-level classes of the classifier.
    class_names : list of str
        One name per class; defaults to ``class0``, ``class1`` ...
    out_indices : list of int or None
        Encoder feature taps (timm ``features_only`` indices). ``None`` takes the
        backbone's defaults (see :func:`wsol.encoder.default_out_indices`).
    output_stride : int or None
        Reduced output stride (8 or 16) through dilation, as WSOL practice uses
        for larger CAMs; ``None`` keeps the backbone's own stride.
    pixel_tap : int
        Which encoder tap (index into the taps, negative from the end) feeds the
        PixelCAM head.
    pixel_hidden : int
        0 for a 1x1 convolution; otherwise the width of a two-layer pixel MLP.
    decoder_channels : list of int
        Widths of the F-CAM U-Net decoder stages, deepest first.
    input_size : int
        Side of the square training tiles, in pixels.
    mpp : float or None
        Microns per pixel the model was trained at (``None`` for natural images).
    mean, std : list of float
        Per-channel input normalization applied to RGB in [0, 1].
    multilabel : bool
        Several classes may be present in one image: the classifier's scores are
        independent sigmoids (trained with binary cross-entropy) instead of a softmax.
    kernel_usage : float
        Kernel Usage Regularization (L. David et al.): when above 0, the classifier uses
        ``W * kernel_usage * softmax(W)`` (softmax over classes, per kernel), which pushes
        each feature kernel towards one class; 0 uses ``W`` as is.
    """

    backbone: str = "resnet18"
    num_classes: int = 2
    class_names: list[str] = field(default_factory=list)
    out_indices: list[int] | None = None
    output_stride: int | None = None
    pixel_tap: int = -1
    pixel_hidden: int = 0
    decoder_channels: list[int] = field(default_factory=lambda: [256, 128, 64, 32, 16])
    input_size: int = 224
    mpp: float | None = None
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    multilabel: bool = False
    kernel_usage: float = 0.0

    def __post_init__(self) -> None:
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {self.num_classes}")
        if not self.class_names:
            self.class_names = [f"class{i}" for i in range(self.num_classes)]
        if len(self.class_names) != self.num_classes:
            raise ValueError(
                f"{len(self.class_names)} class names given for {self.num_classes} classes"
            )
        if self.output_stride not in (None, 8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {self.output_stride}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError("mean and std need one value per RGB channel")
        if min(self.std) <= 0:
            raise ValueError(f"std must be positive, got {self.std}")
        if self.kernel_usage < 0:
            raise ValueError(f"kernel_usage must be >= 0, got {self.kernel_usage}")

    @property
    def pixel_classes(self) -> int:
        """Output channels of the PixelCAM head: (bg, fg), or bg + one per class."""
        return 2 if self.num_classes == 2 else self.num_classes + 1

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("model config must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model config keys: {', '.join(unknown)}")
        return cls(**data)
