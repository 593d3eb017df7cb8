"""PixelCAM settings compared on the val split of a make-benchmark folder.

Trains (or loads) the classifier stage of ``wsol bench quality`` (12 epochs, lr 1e-3,
seed 0), then per variant runs the PixelCAM stage from that classifier (4 epochs, lr
1e-4, seeds from Grad-CAM++ unless the variant says otherwise) and reports val PxAP and
Dice (fg) at the best threshold of PixelCAM and of Grad-CAM++.

    .venv/bin/python docs/scripts/pixelcam_variants.py /tmp/bench1 resnet18 \\
        /tmp/r18_classifier.safetensors base lr1e-3 ep12 hidden128 bg50 tap-2 tap-3 tap-3_ep8
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

import wsol
from wsol.data import WSOLDataset
from wsol.evaluate import evaluate
from wsol.train import TrainConfig, TrainData, train

CLASSES = ["normal", "lesion"]
# name: (model settings, PixelCAM stage settings)
VARIANTS: dict[str, tuple[dict, dict]] = {
    "base": ({}, {}),
    "lr1e-3": ({}, {"lr": 1e-3}),
    "ep12": ({}, {"epochs": 12}),
    "hidden128": ({"pixel_hidden": 128}, {}),
    "bg50": ({}, {"bg_fraction": 0.5}),
    "tap-2": ({"pixel_tap": -2}, {}),
    "tap-3": ({"pixel_tap": -3}, {}),
    "tap-3_ep8": ({"pixel_tap": -3}, {"epochs": 8}),
}


def classifier(data: str, backbone: str, path: Path) -> None:
    torch.manual_seed(0)
    model = wsol.create_model(backbone, 2, class_names=CLASSES, input_size=128)
    train_data = TrainData.from_dataset(WSOLDataset(f"{data}/train", CLASSES), 128)
    train(model, train_data, "classifier", TrainConfig(epochs=12, batch_size=32, lr=1e-3))
    model.save(path)


def with_head(path: Path, backbone: str, settings: dict) -> wsol.WSOLModel:
    """The trained classifier, with a fresh PixelCAM head built from ``settings``."""
    model = wsol.load_model(path)
    if not settings:
        return model
    torch.manual_seed(0)
    fresh = wsol.create_model(backbone, 2, class_names=CLASSES, input_size=128, **settings)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("pixel_head.")}
    fresh.load_state_dict(state, strict=False)
    return fresh


def main() -> None:
    data, backbone, checkpoint, *names = sys.argv[1:]
    path = Path(checkpoint)
    if not path.exists():
        classifier(data, backbone, path)
    train_data = TrainData.from_dataset(WSOLDataset(f"{data}/train", CLASSES), 128)
    val = WSOLDataset(f"{data}/val", CLASSES)
    for name in names:
        model_settings, stage = VARIANTS[name]
        model = with_head(path, backbone, model_settings)
        config = {"epochs": 4, "batch_size": 32, "lr": 1e-4, "cam_method": "gradcampp", **stage}
        start = time.perf_counter()
        torch.manual_seed(0)
        train(model, train_data, "pixelcam", TrainConfig(**config))
        report = evaluate(model, val, ["gradcampp", "pixelcam"], batch_size=32, boxes=False)
        scores = ", ".join(
            f"{m} PxAP {e['pxap']:.1f} Dice {e['best']['dice_fg']:.1f}"
            for m, e in report["methods"].items()
        )
        print(f"{name}: val {scores} ({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
