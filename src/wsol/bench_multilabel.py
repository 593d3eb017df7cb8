"""``wsol bench multilabel``: do MinMax maps keep off the other class's region?

On the multi-label variant of the tissue benchmark (``wsol make-benchmark
--multilabel``: two lesion textures, one or both per tile), a multi-label classifier
(sigmoid + BCE) is trained from scratch, once plain and once with Kernel Usage
Regularization, and each CAM method explains every present class of every test tile.
The measure is the *leak*: the share of a class's map mass lying on the other present
class's ground truth (:class:`wsol.metrics.LeakMetrics`, tiles with both classes),
next to PxAP / Dice against the class's own mask and the faithfulness scores.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import torch

from wsol.data import WSOLDataset
from wsol.evaluate import evaluate
from wsol.machine import describe as describe_machine
from wsol.model import create_model
from wsol.train import TrainConfig, TrainData, train

METHODS = ("cam", "gradcam", "gradcampp", "minmaxcam", "dminmaxgradcam")


def bench_multilabel(
    data: str | Path,
    *,
    backbone: str = "resnet10t",
    size: int = 128,
    epochs: int = 12,
    kernel_usage: Sequence[float] = (0.0, 1.0),
    methods: Sequence[str] = METHODS,
    curves: bool = False,
    seed: int = 0,
    checkpoint: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    data = Path(data)
    names = WSOLDataset(data / "train", multilabel=True).classes
    train_set = WSOLDataset(data / "train", names, multilabel=True)
    test = WSOLDataset(data / "test", names, multilabel=True)
    train_data = TrainData.from_dataset(train_set, size)
    runs: dict[str, dict] = {}
    for alpha in kernel_usage:
        torch.manual_seed(seed)
        model = create_model(
            backbone, len(names), class_names=names, input_size=size, multilabel=True
        )
        config = TrainConfig(
            epochs=epochs, batch_size=32, lr=1e-3, seed=seed, kernel_usage=float(alpha)
        )
        start = time.perf_counter()

        def progress(p, alpha=alpha, start=start) -> None:
            if p.step == p.steps:
                log(
                    f"kur {alpha}: epoch {p.epoch}/{p.epochs} "
                    f"({time.perf_counter() - start:.0f} s): bce {p.losses['ce']:.3f}"
                )

        train(model, train_data, "classifier", config, progress=progress)
        seconds = time.perf_counter() - start
        if checkpoint:
            model.save(Path(checkpoint).with_suffix(f".kur{alpha:g}.safetensors"))
        report = evaluate(
            model, test, list(methods), batch_size=32, boxes=False, faithfulness=True, curves=curves
        )
        rows = {}
        for method, e in report["methods"].items():
            rows[method] = {
                "leak": e["leak"],
                "pxap": e["pxap"],
                "dice_fg": e["best"]["dice_fg"],
                **{k: v for k, v in e["faithfulness"].items() if k not in ("pairs",)},
            }
        runs[f"kur={alpha:g}"] = {
            "kernel_usage": alpha,
            "label_accuracy": report["accuracy"],
            "exact_match": report["exact_match"],
            "pairs": report["num_masks"],
            "methods": rows,
            "train_seconds": seconds,
        }
        log(
            f"kur {alpha}: accuracy {report['accuracy']:.1f}%, "
            + ", ".join(f"{m} leak {r['leak']:.1f}" for m, r in rows.items())
        )
    return {
        "data": str(data),
        "backbone": backbone,
        "size": size,
        "classes": names,
        "train_tiles": len(train_data),
        "test_tiles": len(test),
        "config": asdict(TrainConfig(epochs=epochs, batch_size=32, lr=1e-3, seed=seed)),
        "runs": runs,
        "machine": describe_machine(),
    }


def markdown_table(report: dict) -> str:
    lines = [
        "| classifier | method | leak % ↓ | PxAP | Dice (fg) "
        "| AD % ↓ | AR % ↑ | ADo % ↑ | ARo % ↓ |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in report["runs"].values():
        label = "plain" if run["kernel_usage"] == 0 else f"KUR α={run['kernel_usage']:g}"
        for method, r in run["methods"].items():
            lines.append(
                f"| {label} | {method} | {r['leak']:.1f} | {r['pxap']:.1f} | {r['dice_fg']:.1f} "
                f"| {r['average_drop']:.1f} | {r['average_retention']:.1f} "
                f"| {r['average_drop_of_others']:.1f} | {r['average_retention_of_others']:.1f} |"
            )
    return "\n".join(lines)
