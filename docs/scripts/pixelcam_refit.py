"""PixelCAM head refitted on F-CAM seeds: steps and learning rate on the val split.

Starts from a model trained by ``wsol bench quality --checkpoint`` (all stages done),
runs the ``heads`` stage on the PixelCAM head only (encoder frozen, seeds from the F-CAM
map, 50% background) per ``STEPS:LR`` setting and reports val PxAP and Dice (fg).

    .venv/bin/python docs/scripts/pixelcam_refit.py /tmp/bench1 CKPT 30:1e-3 100:1e-3 \\
        300:1e-3 100:3e-3
"""

from __future__ import annotations

import sys
import time

import torch

import wsol
from wsol.data import WSOLDataset
from wsol.evaluate import evaluate
from wsol.train import TrainConfig, TrainData, train


def main() -> None:
    data, checkpoint, *settings = sys.argv[1:]
    names = wsol.load_model(checkpoint).config.class_names
    size = wsol.load_model(checkpoint).config.input_size
    train_data = TrainData.from_dataset(WSOLDataset(f"{data}/train", names), size)
    val = WSOLDataset(f"{data}/val", names)
    for setting in settings:
        steps, lr = setting.split(":")
        model = wsol.load_model(checkpoint)
        config = TrainConfig(
            steps=int(steps),
            batch_size=32,
            lr=float(lr),
            heads=("pixelcam",),
            cam_method="fcam",
            bg_fraction=0.5,
            keep_weight=0.0,
        )
        start = time.perf_counter()
        torch.manual_seed(0)
        train(model, train_data, "heads", config)
        report = evaluate(model, val, ["fcam", "pixelcam"], batch_size=32, boxes=False)
        scores = ", ".join(
            f"{m} PxAP {e['pxap']:.1f} Dice {e['best']['dice_fg']:.1f}"
            for m, e in report["methods"].items()
        )
        print(f"{setting}: val {scores} ({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
