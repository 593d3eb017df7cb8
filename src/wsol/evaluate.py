"""Evaluate a model's maps on a dataset with the WSOL protocol."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict

import torch

from wsol.cams import compute_many
from wsol.data import WSOLDataset
from wsol.faithfulness import FaithfulnessMetrics
from wsol.metrics import Accuracy, BoxMetrics, LabelAccuracy, LeakMetrics, PixelMetrics
from wsol.model import WSOLModel
from wsol.refine import DenseCRFParams, dense_crf


def evaluate(
    model: WSOLModel,
    dataset: WSOLDataset,
    methods: Sequence[str],
    *,
    batch_size: int = 16,
    tau: float | None = None,
    boxes: bool = True,
    progress: Callable[[int, int], None] | None = None,
    faithfulness: bool = False,
    curves: bool = True,
    refine: DenseCRFParams | None = None,
) -> dict[str, object]:
    """Accuracy and, per method, PxAP, Dice/IoU and box accuracies.

    Images are resized to the model's ``input_size``; each map explains the image's
    ground-truth class, as the WSOL protocol prescribes. Localization metrics use the
    images that have a mask.

    Parameters
    ----------
    tau : float, optional
        Also report Dice/IoU at this fixed threshold (the best one is always reported).
    boxes : bool
        Compute MaxBoxAcc / MaxBoxAccV2 (a connected-component pass per threshold).
    progress : callable(done, total), optional
    faithfulness : bool
        Also score how faithful each map is to the classifier (:mod:`wsol.faithfulness`:
        Average Drop, Increase in Confidence, Average Retention, the "of others"
        variants for multi-label data and, with ``curves``, deletion / insertion AUC).
        Maps that explain the negative class of a two-class model are left out: the
        heads' maps are foreground maps, so only positive images have a class to explain.
    refine : DenseCRFParams, optional
        Refine every map with the dense CRF (:func:`wsol.refine.dense_crf`) on its image
        before scoring it.

    Multi-label datasets (:attr:`WSOLDataset.multilabel`) are scored per (image, present
    class) pair against that class's mask, each map computed with the image's classes
    as ``present``; the report adds each method's ``leak`` (:class:`LeakMetrics`) and
    the accuracy is per class decision.
    """
    faith = {m: FaithfulnessMetrics(curves=curves) for m in methods} if faithfulness else {}
    if dataset.multilabel:
        return _evaluate_multilabel(
            model, dataset, methods, batch_size, tau, progress, faith, refine
        )
    size = model.config.input_size
    accuracy = Accuracy()
    pixels = {m: PixelMetrics(model.device) for m in methods}
    box = {m: BoxMetrics() for m in methods} if boxes else {}
    negative = 0 if model.config.num_classes == 2 else None
    done = 0
    for batch in dataset.batches(batch_size, size):
        x = model.normalize(batch.images)
        labels = batch.labels.to(model.device)
        result = compute_many(model, x, methods, targets=labels)
        if refine is not None:
            result.maps = _refined(result.maps, batch.images, refine)
        accuracy.update(result.logits, labels)
        explained = labels != negative
        if faith and explained.any():
            for method, maps in result.maps.items():
                faith[method].update(model, x[explained], maps[explained], labels[explained])
        if batch.has_mask.any():
            keep = batch.has_mask.to(model.device)
            masks = batch.masks.to(model.device)[keep]
            for method, maps in result.maps.items():
                pixels[method].update(maps[keep], masks)
                if boxes:
                    box[method].update(maps[keep], masks)
        done += len(batch.names)
        if progress is not None:
            progress(done, len(dataset))

    report: dict[str, object] = {
        "num_images": len(dataset),
        "num_masks": dataset.num_masks,
        "classes": list(model.config.class_names),
        "accuracy": accuracy.value(),
        "methods": {},
    }
    for method in methods:
        entry = pixels[method].summary(tau) if dataset.num_masks else {}
        if boxes and dataset.num_masks:
            entry |= box[method].summary()
        if faith:
            entry["faithfulness"] = faith[method].summary()
        report["methods"][method] = entry  # type: ignore[index]
    if refine is not None:
        report["refine"] = {"dense_crf": asdict(refine)}
    return report


def _refined(
    maps: dict[str, torch.Tensor], images: torch.Tensor, params: DenseCRFParams
) -> dict[str, torch.Tensor]:
    return {m: dense_crf(v, images.to(v.device), params) for m, v in maps.items()}


def _evaluate_multilabel(
    model: WSOLModel,
    dataset: WSOLDataset,
    methods: Sequence[str],
    batch_size: int,
    tau: float | None,
    progress: Callable[[int, int], None] | None,
    faith: dict[str, FaithfulnessMetrics],
    refine: DenseCRFParams | None,
) -> dict[str, object]:
    accuracy = LabelAccuracy()
    pixels = {m: PixelMetrics(model.device) for m in methods}
    leaks = {m: LeakMetrics() for m in methods}
    pairs_total = done = 0
    for batch in dataset.batches(batch_size, model.config.input_size):
        x = model.normalize(batch.images)
        with torch.no_grad():
            accuracy.update(model.eval()(x), batch.present)
        pairs = (batch.present & batch.has_class_mask).nonzero()
        if len(pairs):
            image, target = pairs[:, 0], pairs[:, 1]
            present = batch.present[image]
            others_gt = (batch.class_masks[image] & present[..., None, None]).clone()
            others_gt[torch.arange(len(pairs)), target] = False
            others_gt = others_gt.any(dim=1).to(model.device)
            truth = batch.class_masks[image, target].to(model.device)
            xs = x[image.to(model.device)]
            result = compute_many(model, xs, methods, target, present=present)
            if refine is not None:
                result.maps = _refined(result.maps, batch.images[image], refine)
            for method, maps in result.maps.items():
                pixels[method].update(maps, truth)
                leaks[method].update(maps, others_gt)
                if faith:
                    faith[method].update(model, xs, maps, target.to(model.device), present)
            pairs_total += len(pairs)
        done += len(batch.names)
        if progress is not None:
            progress(done, len(dataset))
    report: dict[str, object] = {
        "num_images": len(dataset),
        "num_masks": pairs_total,
        "multilabel": True,
        "classes": list(model.config.class_names),
        "accuracy": accuracy.value(),
        "exact_match": accuracy.exact_match(),
        "methods": {},
    }
    for method in methods:
        entry = pixels[method].summary(tau) if pairs_total else {}
        entry["leak"] = leaks[method].value()
        entry["leak_maps"] = leaks[method].count
        if faith:
            entry["faithfulness"] = faith[method].summary()
        report["methods"][method] = entry  # type: ignore[index]
    if refine is not None:
        report["refine"] = {"dense_crf": asdict(refine)}
    return report


def format_report(report: dict[str, object]) -> str:
    """A plain-text table of :func:`evaluate`'s report."""
    lines = [
        f"images {report['num_images']}  masks {report['num_masks']}  "
        f"accuracy {report['accuracy']:.2f}%"
    ]
    methods: dict[str, dict] = report["methods"]  # type: ignore[assignment]
    if report["num_masks"]:
        header = (
            f"{'method':<16}{'PxAP':>8}{'tau*':>7}{'Dice fg':>9}{'Dice bg':>9}"
            f"{'IoU fg':>8}{'IoU bg':>8}"
        )
        has_boxes = any("maxboxacc" in e for e in methods.values())
        has_leak = any("leak" in e for e in methods.values())
        if has_boxes:
            header += f"{'BoxAcc':>8}{'BoxAccV2':>10}"
        if has_leak:
            header += f"{'Leak %':>8}"
        lines.append(header)
        for name, e in methods.items():
            b = e["best"]
            row = (
                f"{name:<16}{e['pxap']:>8.2f}{b['tau']:>7.3f}{b['dice_fg']:>9.2f}"
                f"{b['dice_bg']:>9.2f}{b['iou_fg']:>8.2f}{b['iou_bg']:>8.2f}"
            )
            if has_boxes:
                row += f"{e['maxboxacc']:>8.2f}{e['maxboxacc_v2']:>10.2f}"
            if has_leak:
                row += f"{e['leak']:>8.2f}"
            lines.append(row)
    if any("faithfulness" in e for e in methods.values()):
        lines.append("")
        lines.append(format_faithfulness(methods))
    return "\n".join(lines)


FAITHFULNESS_COLUMNS = (
    ("average_drop", "AD% ↓"),
    ("increase_in_confidence", "IC% ↑"),
    ("average_retention", "AR% ↑"),
    ("average_drop_of_others", "ADo% ↑"),
    ("average_retention_of_others", "ARo% ↓"),
    ("deletion_auc", "Del ↓"),
    ("insertion_auc", "Ins ↑"),
)


def format_faithfulness(methods: dict[str, dict]) -> str:
    """Faithfulness scores per method; "of others" columns only when some were computed."""
    rows = {m: e["faithfulness"] for m, e in methods.items() if "faithfulness" in e}
    columns = [
        (key, title)
        for key, title in FAITHFULNESS_COLUMNS
        if any(r[key] == r[key] for r in rows.values())  # drop all-NaN columns
    ]
    lines = [f"{'method':<16}" + "".join(f"{title:>9}" for _, title in columns)]
    for name, r in rows.items():
        lines.append(f"{name:<16}" + "".join(f"{r[key]:>9.2f}" for key, _ in columns))
    return "\n".join(lines)
