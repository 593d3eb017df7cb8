"""The shared encoder: a timm backbone with ``features_only`` taps."""

from __future__ import annotations

import hashlib
from pathlib import Path

import timm
from torch import nn

from wsol.errors import InputError, PretrainedWeightsError

# timm modules whose last tap is a bare max-pool of the one before. WSOL practice
# (e.g. "Evaluating WSOL Methods Right") takes the CAM from the last convolution, at
# stride 16, which doubles the CAM's resolution for free.
_DROP_FINAL_POOL = ("vgg",)
# timm modules of ViT-style backbones, whose position embeddings fix the input size
# unless ``dynamic_img_size`` is set.
_TOKEN_FAMILIES = ("vision_transformer", "deit", "eva", "vision_transformer_hybrid")


def backbone_family(backbone: str) -> str:
    """The timm module that defines ``backbone`` (``resnet``, ``vgg``, ``deit`` ...)."""
    if not timm.models.is_model(backbone):
        raise InputError(f"unknown timm backbone {backbone!r} (see timm.list_models())")
    return timm.models.model_entrypoint(backbone).__module__.rsplit(".", 1)[-1]


def default_out_indices(backbone: str) -> list[int] | None:
    """Encoder taps used when the config does not name any (``None``: timm's own)."""
    if backbone_family(backbone) in _DROP_FINAL_POOL:
        return [0, 1, 2, 3, 4]
    return None


def build_encoder(
    backbone: str,
    out_indices: list[int] | None = None,
    output_stride: int | None = None,
    pretrained: bool | str | Path = False,
) -> nn.Module:
    """Create a timm ``features_only`` encoder.

    Parameters
    ----------
    backbone : str
        timm model name.
    out_indices : list of int, optional
        Feature taps; ``None`` uses :func:`default_out_indices`.
    output_stride : int, optional
        Dilated output stride (8 or 16) for backbones that support it (ResNets).
    pretrained : bool or path
        ``True`` downloads timm's pretrained weights (needs internet); a path loads a
        local timm weights file (``.safetensors`` or ``.pth``) of the same backbone.
    """
    kwargs: dict = {"features_only": True}
    indices = out_indices if out_indices is not None else default_out_indices(backbone)
    if indices is not None:
        kwargs["out_indices"] = tuple(indices)
    if output_stride not in (None, 32):
        kwargs["output_stride"] = output_stride
    if backbone_family(backbone) in _TOKEN_FAMILIES:
        # Tiles of any size: position embeddings are interpolated to the token grid.
        kwargs["dynamic_img_size"] = True

    if isinstance(pretrained, (str, Path)):
        path = Path(pretrained)
        if not path.is_file():
            raise PretrainedWeightsError(f"{path}: pretrained weights file not found")
        kwargs["pretrained"] = True
        kwargs["pretrained_cfg_overlay"] = {"file": str(path)}
    else:
        kwargs["pretrained"] = bool(pretrained)

    try:
        encoder = timm.create_model(backbone, **kwargs)
    except (TypeError, AssertionError, NotImplementedError) as exc:
        if "output_stride" in kwargs:
            # timm backbones without dilation reject the argument in their own ways
            raise InputError(
                f"backbone {backbone!r} does not support output_stride={output_stride} "
                f"(dilation); use a ResNet-family backbone or leave it unset"
            ) from exc
        raise
    except Exception as exc:  # loading a user's file or a download: their errors, named
        if not kwargs["pretrained"]:
            raise
        if isinstance(pretrained, (str, Path)):
            raise PretrainedWeightsError(
                f"{pretrained}: could not load as {backbone!r} weights: {exc}"
            ) from exc
        raise PretrainedWeightsError(
            f"could not fetch pretrained weights for {backbone!r} ({type(exc).__name__}: "
            f"{exc}). Without internet access, download the timm weights file elsewhere "
            f"and pass its path instead (create_model(..., pretrained='weights.safetensors') "
            f"or --pretrained PATH)."
        ) from exc
    if isinstance(pretrained, (str, Path)):
        _check_loaded(encoder, Path(pretrained), backbone)
    return encoder


def _check_loaded(encoder: nn.Module, path: Path, backbone: str) -> None:
    """Fail unless ``path`` gave the encoder its weights.

    timm loads a local file with ``strict=False``: a file of another model (or a
    napari-wsol checkpoint) leaves the encoder random with no more than a warning.
    """
    try:
        file = timm.models.load_state_dict(str(path))
    except Exception as exc:  # any unreadable file is the user's error
        raise PretrainedWeightsError(f"{path}: not a readable weights file ({exc})") from exc

    from wsol.checkpoint import tensor_bytes  # here: wsol.checkpoint imports this module

    def digest(tensor) -> tuple:
        return tuple(tensor.shape), hashlib.sha1(tensor_bytes(tensor.float())).hexdigest()

    # Matched by value, not name: timm's features-only wrappers rename modules
    # ("stages.0" becomes "stages_0"), and a file's names are the full model's.
    own = [v for v in encoder.state_dict().values() if v.is_floating_point()]
    theirs = [v for v in file.values() if v.is_floating_point()]
    unmatched: dict[tuple, int] = {}
    for tensor in theirs:
        key = digest(tensor)
        unmatched[key] = unmatched.get(key, 0) + 1
    used = 0
    for tensor in own:
        key = digest(tensor)
        if unmatched.get(key):
            unmatched[key] -= 1
            used += 1
    # A file of this backbone fills every tensor of the encoder and has little else (the
    # classifier head a features-only encoder drops); a deeper sibling (resnet34 for
    # resnet18) fills them all too, but leaves many of its own unused.
    if used < 0.9 * len(own) or len(theirs) - used > 0.25 * len(theirs):
        raise PretrainedWeightsError(
            f"{path}: fills {used} of the {len(own)} weight tensors of a {backbone!r} "
            f"encoder and leaves {len(theirs) - used} of its {len(theirs)} unused; "
            f"give a timm weights file of that backbone"
        )


def feature_info(encoder: nn.Module) -> tuple[list[int], list[int]]:
    """Channels and reductions (strides) of the encoder's taps, shallowest first."""
    info = encoder.feature_info
    return list(info.channels()), list(info.reduction())
