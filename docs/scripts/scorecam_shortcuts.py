"""Would a cheaper Score-CAM still match the real one? (docs/BENCHMARKS.md)

Two common shortcuts, each compared with exact Score-CAM by Pearson correlation per
image on the sample H&E tile, resnet18 with a sharpened classifier (random init scores
every masked image almost alike; a trained model does not):

- scoring the masked images at half resolution (4x fewer FLOPs);
- scoring only the top-k channels by mean activation ("Faster Score-CAM");
- scoring the masked images in bfloat16 (autocast), as the slide pipeline does on a CPU
  with native bfloat16 (the same images, in lower precision);
- scoring them with an int8 copy of the model (``scorecam_int8``, what the slide
  pipeline's ``precision="auto"`` does on a CPU), calibrated on the images of the call:
  all 8 at once, or each image in a call of its own.

Run: python docs/scripts/scorecam_shortcuts.py
With a trained model, on the positive test tiles of a make-benchmark folder (the
map of the predicted class, at the model's input size):
     python docs/scripts/scorecam_shortcuts.py --checkpoint CKPT --data /tmp/bench1
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import wsol
from wsol.bench import tissue_batch
from wsol.cams import formulas
from wsol.cams.scorecam import scorecam_scores


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(a.flatten().numpy(), b.flatten().numpy())[0, 1])


def to_map(scores: torch.Tensor, acts: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    raw = formulas.weighted_sum(formulas.scorecam_weights(scores), acts)
    return formulas.normalize_maps(formulas.upsample(raw, size))


def compare(model, x: torch.Tensor, label: str) -> None:
    """Print each shortcut's Pearson with exact Score-CAM over the images of ``x``."""
    size = (x.shape[-2], x.shape[-1])
    with torch.no_grad():
        acts = model.forward_features(x)[-1]
        targets = model.classifier(acts).argmax(1)
        exact_scores = scorecam_scores(model, x, acts, targets)
        exact = to_map(exact_scores, acts, size)
        half = scorecam_scores(model, x, acts, targets, scale=0.5)
        approx = {"half resolution": to_map(half, acts, size)}
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = scorecam_scores(model, x, acts, targets)
        approx["bfloat16"] = to_map(low, acts, size)
        int8 = scorecam_scores(model, x, acts, targets, int8=True)
        approx["int8, 8 per call"] = to_map(int8, acts, size)
        one = [slice(i, i + 1) for i in range(len(x))]
        alone = [scorecam_scores(model, x[i], acts[i], targets[i], int8=True) for i in one]
        approx["int8, 1 per call"] = to_map(torch.cat(alone), acts, size)
        for k in (64, 128):
            top = acts.flatten(2).mean(2).topk(k, dim=1).indices
            kept = torch.full_like(exact_scores, float("-inf"))
            kept.scatter_(1, top, exact_scores.gather(1, top))
            approx[f"top-{k} channels"] = to_map(kept, acts, size)
    for name, maps in approx.items():
        rs = [pearson(exact[i], maps[i]) for i in range(len(x))]
        print(f"{label}  {name:<18} Pearson min {min(rs):.3f}  median {np.median(rs):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="a trained model (default: random resnet18)")
    parser.add_argument("--data", help="make-benchmark folder whose test/ positives to use")
    parser.add_argument("--images", type=int, default=8, help="images per group")
    args = parser.parse_args()
    if args.checkpoint:
        from wsol.data import WSOLDataset

        model = wsol.load_model(args.checkpoint).eval()
        size = model.config.input_size
        test = WSOLDataset(f"{args.data}/test", model.config.class_names)
        batch = next(test.batches(len(test), size))
        positives = batch.images[batch.labels != 0]
        for group in range(3):
            chunk = positives[group * args.images : (group + 1) * args.images]
            compare(model, model.normalize(chunk), f"group {group}")
        return
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        model = wsol.create_model("resnet18", 2)
        with torch.no_grad():
            model.classifier.fc.weight.mul_(50)
        compare(model, model.normalize(tissue_batch(args.images, 224, seed)), f"seed {seed}")


if __name__ == "__main__":
    main()
