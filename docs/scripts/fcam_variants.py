"""F-CAM settings compared on the val split of a make-benchmark folder.

Starts from a model trained by ``wsol bench quality --checkpoint`` (classifier and
PixelCAM stages done), re-initialises the F-CAM decoder, trains it 8 epochs per variant
and reports val PxAP and Dice (fg) at the best threshold.

    .venv/bin/python docs/scripts/fcam_variants.py /tmp/bench1 /tmp/q_full.safetensors \
        base crf5 crf5_bg50 pixseeds
"""

from __future__ import annotations

import sys
import time

import torch

import wsol
from wsol.data import WSOLDataset
from wsol.evaluate import evaluate
from wsol.train import TrainConfig, TrainData, train

VARIANTS = {
    "base": {},
    "crf5": {"crf_weight": 5.0},
    "crf5_bg50": {"crf_weight": 5.0, "bg_fraction": 0.5},
    "pixseeds": {"cam_method": "pixelcam"},
    "crf5_bg50_pixseeds": {"crf_weight": 5.0, "bg_fraction": 0.5, "cam_method": "pixelcam"},
}


def main() -> None:
    data, checkpoint, *names = sys.argv[1:]
    base = wsol.load_model(checkpoint)
    size = base.config.input_size
    torch.manual_seed(0)
    fresh = wsol.create_model(
        base.config.backbone, 2, class_names=base.config.class_names, input_size=size
    )
    train_data = TrainData.from_dataset(WSOLDataset(f"{data}/train", base.config.class_names), size)
    val = WSOLDataset(f"{data}/val", base.config.class_names)
    for name in names:
        model = wsol.load_model(checkpoint)
        model.decoder.load_state_dict(fresh.decoder.state_dict())
        settings = {
            "epochs": 8,
            "batch_size": 32,
            "lr": 1e-3,
            "cam_method": "gradcampp",
            **VARIANTS[name],
        }
        start = time.perf_counter()
        torch.manual_seed(0)
        train(model, train_data, "fcam", TrainConfig(**settings))
        entry = evaluate(model, val, ["fcam"], batch_size=32, boxes=False)["methods"]["fcam"]
        print(
            f"{name}: val PxAP {entry['pxap']:.1f}, Dice {entry['best']['dice_fg']:.1f} "
            f"({time.perf_counter() - start:.0f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
