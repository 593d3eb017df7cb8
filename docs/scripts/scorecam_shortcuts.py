"""Would a cheaper Score-CAM still match the real one? (docs/BENCHMARKS.md)

Two common shortcuts, each compared with exact Score-CAM by Pearson correlation per
image on the sample H&E tile, resnet18 with a sharpened classifier (random init scores
every masked image almost alike; a trained model does not):

- scoring the masked images at half resolution (4x fewer FLOPs);
- scoring only the top-k channels by mean activation ("Faster Score-CAM").

Run: python docs/scripts/scorecam_shortcuts.py
"""

from __future__ import annotations

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


def main() -> None:
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        model = wsol.create_model("resnet18", 2)
        with torch.no_grad():
            model.classifier.fc.weight.mul_(50)
            x = model.normalize(tissue_batch(8, 224, seed))
            acts = model.forward_features(x)[-1]
            targets = model.classifier(acts).argmax(1)
            exact_scores = scorecam_scores(model, x, acts, targets)
            exact = to_map(exact_scores, acts, (224, 224))
            half = scorecam_scores(model, x, acts, targets, scale=0.5)
            approx = {"half resolution": to_map(half, acts, (224, 224))}
            for k in (64, 128):
                top = acts.flatten(2).mean(2).topk(k, dim=1).indices
                kept = torch.full_like(exact_scores, float("-inf"))
                kept.scatter_(1, top, exact_scores.gather(1, top))
                approx[f"top-{k} channels"] = to_map(kept, acts, (224, 224))
        for name, maps in approx.items():
            rs = [pearson(exact[i], maps[i]) for i in range(len(x))]
            print(f"seed {seed}  {name:<16} Pearson min {min(rs):.3f}  median {np.median(rs):.3f}")


if __name__ == "__main__":
    main()
