"""``wsol bench guided``: image labels + a few pixel-labelled images.

From one trained model (classifier, PixelCAM and F-CAM stages of ``wsol bench
quality``), for each number k of fully pixel-labelled training images:

- *guided CAM*: the ``guided`` stage (encoder + classifier; image loss on every image,
  pixel loss on the classifier's own CAM for the k labelled ones), then its ``cam``;
- *F-CAM* and *PixelCAM*: the ``heads`` stage with the same k images' masks as
  corrections (the product's path for pixel labels), then ``fcam`` / ``pixelcam``;

against the starting model's plain ``cam``. k = 0 runs the same training with no
pixel label, so every gain at k > 0 is the labels', not the extra steps'.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import torch

from wsol.checkpoint import load_model
from wsol.data import WSOLDataset
from wsol.evaluate import evaluate
from wsol.machine import describe as describe_machine
from wsol.pseudo import BG, FG, IGNORE
from wsol.train import TrainConfig, TrainData, train


def pick_labelled(data: TrainData, masks: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """Pixel labels ``[N, S, S]`` for k positive training images chosen at random.

    Positives, because a pathologist who outlines a few images outlines lesions; the
    same seed gives nested sets (the 5 are among the 20).
    """
    labels = torch.full(masks.shape, IGNORE, dtype=torch.long)
    positives = (data.labels == 1).nonzero()[:, 0]
    order = positives[torch.randperm(len(positives), generator=torch.Generator().manual_seed(seed))]
    for i in order[:k].tolist():
        labels[i] = torch.where(masks[i], FG, BG)
    return labels


def bench_guided(
    data: str | Path,
    checkpoint: str | Path,
    *,
    labelled: Sequence[int] = (0, 5, 20),
    guided: TrainConfig | None = None,
    heads: TrainConfig | None = None,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> dict:
    data = Path(data)
    base = load_model(checkpoint)
    size = base.config.input_size
    names = base.config.class_names
    train_set = WSOLDataset(data / "train", names)
    test = WSOLDataset(data / "test", names)
    train_data = TrainData.from_dataset(train_set, size)
    masks = torch.cat([b.masks for b in train_set.batches(64, size)])
    guided = guided or TrainConfig(epochs=6, batch_size=32, lr=3e-4, seed=seed, guide_weight=1.0)
    heads = heads or TrainConfig(
        steps=60,
        batch_size=16,
        lr=3e-4,
        seed=seed,
        heads_crop=None,
        cam_method="gradcampp",
        bg_fraction=0.5,
        crf_weight=5.0,
    )

    def scores(model, methods: list[str]) -> dict[str, dict[str, float]]:
        report = evaluate(model, test, methods, batch_size=32, boxes=False)
        return {
            m: {"dice_fg": e["best"]["dice_fg"], "pxap": e["pxap"], "tau": e["best"]["tau"]}
            for m, e in report["methods"].items()
        }

    rows: dict[str, dict] = {"plain": scores(base, ["cam", "fcam", "pixelcam"])}
    log(f"start: {rows['plain']}")
    seconds: dict[str, dict[str, float]] = {}
    for k in labelled:
        pixel_labels = pick_labelled(train_data, masks, k, seed)
        run = TrainData(train_data.images, train_data.labels, pixel_labels)
        timing = {}
        start = time.perf_counter()
        model = copy.deepcopy(base)
        train(model, run, "guided", guided)
        timing["guided"] = time.perf_counter() - start
        row = {"guided_cam": scores(model, ["cam"])["cam"]}
        start = time.perf_counter()
        model = copy.deepcopy(base)
        train(model, run, "heads", heads)
        timing["heads"] = time.perf_counter() - start
        after = scores(model, ["fcam", "pixelcam"])
        row |= {"fcam": after["fcam"], "pixelcam": after["pixelcam"]}
        rows[f"k={k}"] = row
        seconds[f"k={k}"] = timing
        log(f"k={k}: " + ", ".join(f"{m} Dice {v['dice_fg']:.1f}" for m, v in row.items()))
    return {
        "data": str(data),
        "checkpoint": str(checkpoint),
        "backbone": base.config.backbone,
        "size": size,
        "train_tiles": len(train_data),
        "test_tiles": len(test),
        "labelled": list(labelled),
        "results": rows,
        "configs": {"guided": asdict(guided), "heads": asdict(heads)},
        "seconds": seconds,
        "machine": describe_machine(),
    }


def markdown_table(report: dict) -> str:
    plain = report["results"]["plain"]
    lines = [
        "| pixel-labelled images | plain CAM | guided CAM | F-CAM | PixelCAM |",
        "|---|---|---|---|---|",
        f"| (start model) | {plain['cam']['dice_fg']:.1f} | – | {plain['fcam']['dice_fg']:.1f} "
        f"| {plain['pixelcam']['dice_fg']:.1f} |",
    ]
    for k in report["labelled"]:
        r = report["results"][f"k={k}"]
        lines.append(
            f"| {k} | {plain['cam']['dice_fg']:.1f} | {r['guided_cam']['dice_fg']:.1f} "
            f"| {r['fcam']['dice_fg']:.1f} | {r['pixelcam']['dice_fg']:.1f} |"
        )
    return "\n".join(lines)
