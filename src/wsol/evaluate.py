"""Evaluate a model's maps on a dataset with the WSOL protocol."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from wsol.cams import compute_many
from wsol.data import WSOLDataset
from wsol.metrics import Accuracy, BoxMetrics, PixelMetrics
from wsol.model import WSOLModel


def evaluate(
    model: WSOLModel,
    dataset: WSOLDataset,
    methods: Sequence[str],
    *,
    batch_size: int = 16,
    tau: float | None = None,
    boxes: bool = True,
    progress: Callable[[int, int], None] | None = None,
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
    """
    size = model.config.input_size
    accuracy = Accuracy()
    pixels = {m: PixelMetrics(model.device) for m in methods}
    box = {m: BoxMetrics() for m in methods} if boxes else {}
    done = 0
    for batch in dataset.batches(batch_size, size):
        x = model.normalize(batch.images)
        labels = batch.labels.to(model.device)
        result = compute_many(model, x, methods, targets=labels)
        accuracy.update(result.logits, labels)
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
        report["methods"][method] = entry  # type: ignore[index]
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
        if has_boxes:
            header += f"{'BoxAcc':>8}{'BoxAccV2':>10}"
        lines.append(header)
        for name, e in methods.items():
            b = e["best"]
            row = (
                f"{name:<16}{e['pxap']:>8.2f}{b['tau']:>7.3f}{b['dice_fg']:>9.2f}"
                f"{b['dice_bg']:>9.2f}{b['iou_fg']:>8.2f}{b['iou_bg']:>8.2f}"
            )
            if has_boxes:
                row += f"{e['maxboxacc']:>8.2f}{e['maxboxacc_v2']:>10.2f}"
            lines.append(row)
    return "\n".join(lines)
