"""Compute CAM-family and head maps for a batch, sharing one forward pass."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from wsol.cams import formulas
from wsol.cams.scorecam import scorecam_scores
from wsol.heads import ClassifierHead
from wsol.model import WSOLModel

#: Maps computed from the classifier (activations and gradients of one encoder tap).
CAM_METHODS = (
    "cam",
    "gradcam",
    "gradcampp",
    "xgradcam",
    "layercam",
    "scorecam",
    "smoothgradcampp",
    "minmaxcam",
    "dminmaxgradcam",
)
#: Maps read from the localization heads.
HEAD_METHODS = ("fcam", "pixelcam")
METHODS = CAM_METHODS + HEAD_METHODS

_GRADIENT_METHODS = {
    "gradcam": formulas.gradcam,
    "gradcampp": formulas.gradcampp,
    "xgradcam": formulas.xgradcam,
    "layercam": formulas.layercam,
}


@dataclass
class CamResult:
    """Maps of several methods for one batch, with the class scores behind them."""

    maps: dict[str, torch.Tensor]  # method -> [B, H, W] in [0, 1]
    logits: torch.Tensor  # [B, num_classes]
    targets: torch.Tensor  # [B] class each map explains


def compute(
    model: WSOLModel,
    images: torch.Tensor,
    method: str,
    targets: int | Sequence[int] | torch.Tensor | None = None,
    present: torch.Tensor | None = None,
    **options: object,
) -> torch.Tensor:
    """Localization map of one method for a batch.

    Parameters
    ----------
    model : WSOLModel
        The model; put in eval mode for the call.
    images : Tensor [B, 3, H, W]
        Model inputs (normalized; see :meth:`WSOLModel.normalize`).
    method : str
        One of :data:`METHODS`.
    targets : int, sequence of int or Tensor [B], optional
        The class to explain per sample; ``None`` takes the predicted class.
    present : Tensor [B, C] bool, optional
        Classes present in each image, for the multi-label methods (``minmaxcam``,
        ``dminmaxgradcam``); ``None`` takes the detections (sigmoid >= 0.5) of a
        multi-label model and only the target otherwise. The target always counts.
    **options
        Method options, see :func:`compute_many`.

    Returns
    -------
    Tensor [B, H, W]
        Maps in [0, 1] on the model's device, at input resolution. CAM-family maps
        are ReLU'd, upsampled bilinearly and min-max normalized per image; ``fcam``
        and ``pixelcam`` are foreground probabilities of the heads.
    """
    return compute_many(model, images, [method], targets, present=present, **options).maps[method]


def compute_many(
    model: WSOLModel,
    images: torch.Tensor,
    methods: Iterable[str],
    targets: int | Sequence[int] | torch.Tensor | None = None,
    *,
    present: torch.Tensor | None = None,
    layer: int = -1,
    scorecam_batch_size: int | None = None,
    scorecam_scale: float = 1.0,
    scorecam_int8: bool = False,
    smooth_samples: int = 8,
    smooth_noise: float = 0.15,
    seed: int = 0,
    features: list[torch.Tensor] | None = None,
) -> CamResult:
    """Maps of several methods from one encoder forward and one partial backward.

    The model's forwards (encoder, heads, Score-CAM's masked images) run in the
    caller's precision, so inside ``torch.autocast`` they run in bfloat16 or float16;
    activations, gradients and the map formulas are float32, and so are the maps.

    Parameters
    ----------
    model, images, targets, present
        As in :func:`compute`.
    methods : iterable of str
        Any of :data:`METHODS`.
    layer : int
        Encoder tap the CAM family explains (default: the classifier's, the last).
        The gradient only flows from the scores back to this tap.
    scorecam_batch_size : int, optional
        Masked images per Score-CAM forward; default 16 on CPU (larger batches ran
        slower on the 2-core benchmark machine), 128 on GPU.
    scorecam_scale : float
        1 (default) is exact Score-CAM; below 1 the masked images are scored at that
        fraction of the input size, an opt-in approximation (0.5: ~4x faster).
    scorecam_int8 : bool
        Score Score-CAM's masked images with an int8 copy of the model, calibrated on
        the images and a few of their masked copies (:func:`wsol.cams.int8.int8_scorer`):
        the same images, about twice as fast as bfloat16 on a CPU with VNNI, maps equal
        to float32 ones to Pearson >= 0.99 on trained models (docs/BENCHMARKS.md). CPU
        only; where the model cannot be quantized (or on a GPU) the masked images are
        scored as without it.
    smooth_samples, smooth_noise : int, float
        Smooth Grad-CAM++: noisy copies per image and noise std as a fraction of each
        image's value range.
    seed : int
        Seed of Smooth Grad-CAM++'s noise, so maps are reproducible.
    features : list of Tensor, optional
        The encoder's features of ``images`` when the caller already has them (training
        computes them once per step for the seeds and the heads).
    """
    methods = list(dict.fromkeys(methods))
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    if images.ndim != 4:
        raise ValueError(f"images must be [B, 3, H, W], got shape {tuple(images.shape)}")
    x = images.to(model.device)
    size = (x.shape[-2], x.shape[-1])
    tap = layer % len(model.feature_channels)
    # With a GAP + linear head, dS/dA on the head's own tap is W_c / (h w) for every
    # input: all noisy copies of Smooth Grad-CAM++ share the clean gradient, so their
    # average is known without running them (exactly; tests compare both ways).
    linear_tap = tap == model.cam_tap and isinstance(model.classifier, ClassifierHead)
    needs_grads = any(m in _GRADIENT_METHODS for m in methods) or (
        linear_tap and "smoothgradcampp" in methods
    )
    for method in ("cam", "minmaxcam"):
        if method in methods and tap != model.cam_tap:
            raise ValueError(f"{method} is defined on the classifier's tap only (layer=-1)")

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            if features is None and tap == model.cam_tap:
                features = model.forward_features(x)
            elif tap != model.cam_tap:
                features = None
        acts, grads, logits, t = _activations_and_gradients(
            model, x, features, tap, targets, with_grads=needs_grads
        )
        maps: dict[str, torch.Tensor] = {}
        if {"minmaxcam", "dminmaxgradcam"} & set(methods):
            present = _resolve_present(model, present, logits, t)
        if "dminmaxgradcam" in methods:
            minmax_grads = _dminmax_gradients(model, x, features, tap, t, present)
        with torch.no_grad():
            for method in methods:
                if method in HEAD_METHODS:
                    if features is None:
                        features = model.forward_features(x)
                    maps[method] = _head_map(model, method, features, size, t).float()
                    continue
                # Forwards of the model run in the caller's precision (autocast); the
                # formulas run in float32 on float32 activations and gradients.
                if method == "scorecam":
                    chunk = scorecam_batch_size or (16 if x.device.type == "cpu" else 128)
                    scores = scorecam_scores(
                        model, x, acts, t, chunk, scorecam_scale, int8=scorecam_int8
                    )
                elif method == "smoothgradcampp":
                    if linear_tap:
                        noisy = grads.unsqueeze(0)
                    else:
                        noisy = _noisy_gradients(
                            model, x, tap, t, smooth_samples, smooth_noise, seed
                        )
                with _full_precision(x.device):
                    if method == "cam":
                        raw = formulas.cam(acts, model.classifier.weight[t])
                    elif method == "minmaxcam":
                        raw = formulas.minmaxcam(acts, model.classifier.weight, t, present)
                    elif method == "dminmaxgradcam":
                        raw = formulas.dminmax_gradcam(acts, *minmax_grads)
                    elif method in _GRADIENT_METHODS:
                        raw = _GRADIENT_METHODS[method](acts, grads)
                    elif method == "scorecam":
                        raw = formulas.weighted_sum(formulas.scorecam_weights(scores), acts)
                    else:  # smoothgradcampp
                        raw = formulas.smoothgradcampp(acts, noisy)
                    maps[method] = formulas.normalize_maps(formulas.upsample(raw, size))
    finally:
        model.train(was_training)
    return CamResult(maps, logits.detach(), t)


def _full_precision(device: torch.device) -> torch.autocast:
    """A context in which autocast is off, so ops run in their inputs' dtype."""
    return torch.autocast(device.type, enabled=False)


def _resolve_targets(
    targets: int | Sequence[int] | torch.Tensor | None, logits: torch.Tensor
) -> torch.Tensor:
    batch, num_classes = logits.shape
    if targets is None:
        return logits.argmax(dim=1)
    t = torch.as_tensor(targets, dtype=torch.long, device=logits.device)
    if t.ndim == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"need one target per sample ({batch}), got shape {tuple(t.shape)}")
    if (t < 0).any() or (t >= num_classes).any():
        raise ValueError(f"targets must be class indices in [0, {num_classes}), got {t.tolist()}")
    return t


def _resolve_present(
    model: WSOLModel, present: torch.Tensor | None, logits: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    if present is None:
        if model.config.multilabel:
            present = torch.sigmoid(logits) >= 0.5
        else:
            present = torch.zeros_like(logits, dtype=torch.bool)
    present = torch.as_tensor(present, device=logits.device).bool()
    if present.shape != logits.shape:
        raise ValueError(
            f"present must be [batch, classes] = {tuple(logits.shape)}, got {tuple(present.shape)}"
        )
    present = present.clone()
    present[torch.arange(len(targets), device=targets.device), targets] = True
    return present


def _dminmax_gradients(
    model: WSOLModel,
    x: torch.Tensor,
    features: list[torch.Tensor] | None,
    tap: int,
    targets: torch.Tensor,
    present: torch.Tensor,
) -> tuple[torch.Tensor, ...]:
    """Gradients of the target score, of the other present classes' summed scores and
    of all present classes' summed scores w.r.t. ``tap``, and ``|N_x|``, ``|C_x|``."""
    others = formulas.other_classes(targets, present)
    target = torch.zeros_like(present)
    target[torch.arange(len(targets), device=targets.device), targets] = True
    with torch.enable_grad():
        acts, logits = _tap_and_logits(model, x, features, tap, True)
        grads = [
            torch.autograd.grad((logits * m).sum(), acts, retain_graph=i < 2)[0]
            for i, m in enumerate((target, others, present))
        ]
    return (*(g.float() for g in grads), others.sum(dim=1), present.sum(dim=1))


def _tap_and_logits(
    model: WSOLModel,
    x: torch.Tensor,
    features: list[torch.Tensor] | None,
    tap: int,
    with_grads: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Activations of ``tap`` and the logits, in a graph from the tap to the scores.

    With the classifier's tap already computed (``features``) only GAP + linear is in
    the graph; other taps run the encoder with a graph.
    """
    if features is not None:
        # GAP + linear is cheap: run it in float32 even inside autocast, so gradients
        # and scores keep full precision when the encoder ran in bfloat16/float16.
        acts = features[tap].detach().float().requires_grad_(with_grads)
        with _full_precision(x.device):
            return acts, model.classifier(acts)
    feats = model.forward_features(x.detach().requires_grad_(True))
    return feats[tap], model.classify(feats)


def _activations_and_gradients(
    model: WSOLModel,
    x: torch.Tensor,
    features: list[torch.Tensor] | None,
    tap: int,
    targets: int | Sequence[int] | torch.Tensor | None,
    with_grads: bool,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """Activations of ``tap``, gradients of the target scores w.r.t. them, logits, targets.

    For the classifier's tap the encoder ran without a graph and only GAP + linear is
    differentiated. Other taps need the graph from the tap to the scores.
    """
    with torch.enable_grad():
        acts, logits = _tap_and_logits(model, x, features, tap, with_grads)
        t = _resolve_targets(targets, logits)
        grads = None
        if with_grads:
            score = logits.gather(1, t[:, None]).sum()
            (grads,) = torch.autograd.grad(score, acts)
    grads = None if grads is None else grads.float()
    return acts.detach().float(), grads, logits.detach().float(), t


def _noisy_gradients(
    model: WSOLModel,
    x: torch.Tensor,
    tap: int,
    targets: torch.Tensor,
    samples: int,
    noise: float,
    seed: int,
) -> torch.Tensor:
    """Gradients ``[N, B, K, h, w]`` for N noisy copies of the batch, in one pass."""
    gen = torch.Generator(device=x.device).manual_seed(seed)
    flat = x.flatten(1)
    sigma = noise * (flat.amax(dim=1) - flat.amin(dim=1)).view(1, -1, 1, 1, 1)
    eps = torch.randn((samples, *x.shape), generator=gen, device=x.device, dtype=x.dtype)
    noisy = (x.unsqueeze(0) + sigma * eps).flatten(0, 1)
    t = targets.repeat(samples)
    with torch.no_grad():
        feats = model.forward_features(noisy) if tap == model.cam_tap else None
    _, grads, _, _ = _activations_and_gradients(model, noisy, feats, tap, t, with_grads=True)
    return grads.view(samples, *x.shape[:1], *grads.shape[1:])


def _head_map(
    model: WSOLModel,
    method: str,
    features: list[torch.Tensor],
    size: tuple[int, int],
    targets: torch.Tensor,
) -> torch.Tensor:
    if method == "fcam":
        return torch.softmax(model.fcam_logits(features, size), dim=1)[:, 1]
    probs = torch.softmax(model.pixel_logits(features, size), dim=1)
    if probs.shape[1] == 2:
        return probs[:, 1]
    # Multi-class PixelCAM: channel 0 is background, channel c + 1 is class c.
    index = (targets + 1).view(-1, 1, 1, 1).expand(-1, 1, *probs.shape[-2:])
    return probs.gather(1, index)[:, 0]
