"""Faithfulness metrics of localization maps: do the maps point at what the classifier uses?

Confidence-based scores (Chattopadhyay et al., Grad-CAM++, 2018; David et al., MinMax-CAM):
the image is masked by the map of class ``c`` in RGB [0, 1] space (``x * M``, or ``x * (1 - M)``
for the "retention" scores) and the model's confidence is compared with the clean image's.
Deletion and insertion curves (Petsiuk et al., RISE, 2018) remove or restore pixels in order of
decreasing map value. All forwards run batched, in chunks, under ``torch.no_grad()`` in eval mode.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from wsol.errors import InputError

BASELINES = ("zero", "blur")


@contextmanager
def _inference(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _probs(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    multilabel = getattr(model.config, "multilabel", False)
    out = []
    for chunk in x.split(max(1, batch_size)):
        logits = model(chunk)
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        out.append(torch.sigmoid(logits) if multilabel else torch.softmax(logits, dim=1))
    return torch.cat(out)


def confidences(model: nn.Module, x: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Class confidences ``[B, C]``: sigmoids for multi-label models, else softmax.

    ``x`` are normalized inputs ``[B, 3, H, W]``; forwards run in chunks of ``batch_size``.
    """
    with _inference(model):
        return _probs(model, x.to(model.device), batch_size)


def _to_rgb(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return x * model.std + model.mean


def _to_input(model: nn.Module, rgb: torch.Tensor) -> torch.Tensor:
    return (rgb - model.mean) / model.std


def masked_inputs(
    model: nn.Module, x: torch.Tensor, maps: torch.Tensor, invert: bool = False
) -> torch.Tensor:
    """Normalized inputs of the images multiplied by their maps in RGB [0, 1] space.

    Parameters
    ----------
    model : nn.Module
        Provides the normalization buffers ``mean`` and ``std`` ``[1, 3, 1, 1]``.
    x : Tensor [B, 3, H, W]
        Normalized inputs.
    maps : Tensor [B, H, W]
        Maps in [0, 1].
    invert : bool
        Multiply by ``1 - maps`` instead (keeps what the map does not highlight).
    """
    _check_maps(x, maps)
    m = maps.to(x).unsqueeze(1)
    return _to_input(model, _to_rgb(model, x) * (1 - m if invert else m))


def _check_maps(x: torch.Tensor, maps: torch.Tensor) -> None:
    if x.ndim != 4 or x.shape[1] != 3:
        raise InputError(f"x must be [batch, 3, H, W], got shape {tuple(x.shape)}")
    want = (x.shape[0], *x.shape[2:])
    if tuple(maps.shape) != want:
        raise InputError(f"maps must be [batch, H, W] = {want} like x, got {tuple(maps.shape)}")


def _check_targets(model: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    num_classes = model.config.num_classes
    t = torch.as_tensor(targets, dtype=torch.long, device=model.device)
    if t.shape != (x.shape[0],):
        raise InputError(
            f"targets must be one class per image ({x.shape[0]}), got {tuple(t.shape)}"
        )
    if ((t < 0) | (t >= num_classes)).any():
        raise InputError(f"targets must be class indices in [0, {num_classes}), got {t.tolist()}")
    return t


def _blur(rgb: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with edge replication; the kernel sums to 1."""
    radius = max(1, math.ceil(3 * sigma))
    r = torch.arange(-radius, radius + 1, dtype=rgb.dtype, device=rgb.device)
    k = torch.exp(-0.5 * (r / sigma) ** 2)
    k = (k / k.sum()).repeat(3, 1)
    out = F.pad(rgb, (radius, radius, 0, 0), mode="replicate")
    out = F.conv2d(out, k.view(3, 1, 1, -1), groups=3)
    out = F.pad(out, (0, 0, radius, radius), mode="replicate")
    return F.conv2d(out, k.view(3, 1, -1, 1), groups=3)


def deletion_insertion(
    model: nn.Module,
    x: torch.Tensor,
    maps: torch.Tensor,
    targets: torch.Tensor,
    *,
    steps: int = 16,
    batch_size: int = 64,
    baseline: str = "zero",
    blur_sigma: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image deletion and insertion AUCs ``[B]``, ``[B]`` in [0, 1] (RISE).

    Pixels are ranked by decreasing map value, ties in raster order (row-major). At step
    ``k = 0..steps`` the top ``floor(k * H * W / steps)`` pixels are replaced by the baseline
    (deletion: ``"zero"`` is black in RGB, ``"blur"`` the blurred image) or restored from the
    image into its blurred copy (insertion). The AUC is the trapezoid mean of the target's
    confidence over the fraction [0, 1]; deletion: lower is better, insertion: higher.
    ``blur_sigma`` defaults to ``max(H, W) / 16`` pixels. Costs ``2 * (steps + 1)`` forwards
    per image, run in chunks of ``batch_size``.
    """
    if baseline not in BASELINES:
        raise InputError(f"baseline must be one of {BASELINES}, got {baseline!r}")
    if steps < 1:
        raise InputError(f"steps must be >= 1, got {steps}")
    _check_maps(x, maps)
    t = _check_targets(model, x, targets)
    batch, _, h, w = x.shape
    with _inference(model):
        x = x.to(model.device)
        rgb = _to_rgb(model, x)
        blurred = _blur(rgb, blur_sigma or max(h, w) / 16)
        base = blurred if baseline == "blur" else torch.zeros_like(rgb)
        # rank[i, p] = position of pixel p in image i's decreasing order (stable -> raster ties)
        order = torch.sort(-maps.to(model.device, torch.float32).flatten(1), stable=True)[1]
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(h * w, device=order.device).expand(batch, -1))
        pairs = torch.arange(batch * (steps + 1), device=model.device)
        deletion, insertion = [], []
        for p in pairs.split(max(1, batch_size)):
            i, k = p // (steps + 1), p % (steps + 1)
            m = (rank[i] < (k * h * w // steps)[:, None]).view(-1, 1, h, w).to(rgb.dtype)
            rows = torch.arange(len(p), device=p.device)
            for imgs, out in (
                (rgb[i] * (1 - m) + base[i] * m, deletion),
                (blurred[i] * (1 - m) + rgb[i] * m, insertion),
            ):
                out.append(_probs(model, _to_input(model, imgs), len(p))[rows, t[i]])
    curves = [torch.cat(c).view(batch, steps + 1) for c in (deletion, insertion)]
    return tuple(torch.trapezoid(c, dx=1 / steps, dim=1) for c in curves)


def _relative_drop(y: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
    return (y - o).clamp_min(0) / y.clamp_min(torch.finfo(y.dtype).tiny)


class FaithfulnessMetrics:
    """Accumulates faithfulness scores over batches: ``update(...)`` per batch, then ``summary()``.

    Parameters
    ----------
    curves : bool
        Also compute deletion/insertion AUCs (``2 * (steps + 1)`` forwards per map).
    steps, batch_size : int
        Curve steps; images per forward chunk.
    """

    _SUMS = ("drop", "increase", "retention", "drop_others", "retention_others", "del", "ins")

    def __init__(self, curves: bool = True, steps: int = 16, batch_size: int = 64) -> None:
        self.curves, self.steps, self.batch_size = curves, steps, batch_size
        self.sums = dict.fromkeys(self._SUMS, 0.0)
        self.pairs = 0
        self.pairs_with_others = 0

    def update(
        self,
        model: nn.Module,
        x: torch.Tensor,
        maps: torch.Tensor,
        targets: torch.Tensor,
        present: torch.Tensor | None = None,
    ) -> None:
        """Add one batch: normalized inputs ``x`` ``[B, 3, H, W]``, maps ``[B, H, W]`` in [0, 1]
        explaining classes ``targets`` ``[B]``. ``present`` ``[B, C]`` bool (ground truth) enables
        the "of others" scores over the other present classes; they are computed for
        multi-label models only (``model.config.multilabel``), ignored otherwise.
        """
        _check_maps(x, maps)
        t = _check_targets(model, x, targets)
        batch, num_classes = x.shape[0], model.config.num_classes
        if present is not None and tuple(present.shape) != (batch, num_classes):
            raise InputError(
                f"present must be [batch, classes] = {(batch, num_classes)}, "
                f"got {tuple(present.shape)}"
            )
        with _inference(model):
            x = x.to(model.device)
            maps = maps.to(model.device)
            stacked = torch.cat(
                [x, masked_inputs(model, x, maps), masked_inputs(model, x, maps, True)]
            )
            y, o, o_bar = _probs(model, stacked, self.batch_size).split(batch)
        rows = torch.arange(batch, device=t.device)
        drop, ret = _relative_drop(y, o), _relative_drop(y, o_bar)
        s = self.sums
        s["drop"] += drop[rows, t].sum().item()
        s["retention"] += ret[rows, t].sum().item()
        s["increase"] += (o[rows, t] > y[rows, t]).sum().item()
        self.pairs += batch
        if present is not None and getattr(model.config, "multilabel", False):
            others = present.to(model.device).bool().clone()
            others[rows, t] = False
            n = others.sum(dim=1)
            valid = n > 0
            s["drop_others"] += ((drop * others).sum(1)[valid] / n[valid]).sum().item()
            s["retention_others"] += ((ret * others).sum(1)[valid] / n[valid]).sum().item()
            self.pairs_with_others += int(valid.sum().item())
        if self.curves:
            dele, ins = deletion_insertion(
                model, x, maps, t, steps=self.steps, batch_size=self.batch_size
            )
            s["del"] += dele.sum().item()
            s["ins"] += ins.sum().item()

    def summary(self) -> dict[str, float | int]:
        """Means in percent (AUCs too: 100 * area); NaN where no pair (or curves off)."""

        def pct(key: str, count: int) -> float:
            return 100 * self.sums[key] / count if count else math.nan

        curves = self.pairs if self.curves else 0
        return {
            "average_drop": pct("drop", self.pairs),
            "increase_in_confidence": pct("increase", self.pairs),
            "average_retention": pct("retention", self.pairs),
            "average_drop_of_others": pct("drop_others", self.pairs_with_others),
            "average_retention_of_others": pct("retention_others", self.pairs_with_others),
            "deletion_auc": pct("del", curves),
            "insertion_auc": pct("ins", curves),
            "pairs": self.pairs,
            "pairs_with_others": self.pairs_with_others,
        }
