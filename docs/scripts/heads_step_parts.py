"""What two details of a ``heads`` step cost: strided window views, and AdamW's kernels.

A fine-tuning step trains the F-CAM decoder on one window of the region's cached encoder
features. This script times, in alternation on the same windows, the decoder's forward
(with the round's losses) and backward on the window's features as strided views of the
region's and as contiguous copies; then AdamW's step over the decoder's weights with
PyTorch's default (foreach) kernels and with the fused one. Medians over the repeats.

    .venv/bin/python docs/scripts/heads_step_parts.py /tmp/q18s1.safetensors
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from wsol.checkpoint import load_model
from wsol.losses import crf_loss, keep_loss, partial_cross_entropy, size_loss
from wsol.pseudo import FG, IGNORE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--region", type=int, default=512)
    parser.add_argument("--crop", type=int, default=192)
    parser.add_argument("--repeats", type=int, default=24)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = load_model(args.checkpoint).eval()
    image = torch.rand(1, 3, args.region, args.region)
    with torch.no_grad():
        features = model.forward_features(model.normalize(image))
    c = args.crop
    params = list(model.decoder.parameters())
    for p in params:
        p.requires_grad_(True)
    held = torch.softmax(torch.randn(1, 2, c, c), 1)
    labels = torch.full((1, c, c), IGNORE, dtype=torch.long)
    labels[0, ::7, ::7] = FG

    def step(feats: list[torch.Tensor], pixels: torch.Tensor) -> tuple[float, float]:
        started = time.perf_counter()
        logits = model.fcam_logits(feats, (c, c)).float()
        probs = torch.softmax(logits, 1)
        loss = (
            partial_cross_entropy(logits, labels)
            + crf_loss(probs, pixels, radius=5, scale=0.5)
            + 0.1 * size_loss(probs, 1.0)
            + 3 * keep_loss(logits, held, labels == IGNORE, fg_extra=2.0)
        )
        forward = time.perf_counter()
        for p in params:
            p.grad = None
        loss.backward()
        return forward - started, time.perf_counter() - forward

    times: dict[str, tuple[list[float], list[float]]] = {"views": ([], []), "copies": ([], [])}
    grid = max(model.feature_reductions)
    for k in range(args.repeats + 3):
        y0 = x0 = grid * (k % ((args.region - c) // grid + 1))
        for kind in times:
            feats = [
                f[..., y0 // r : (y0 + c) // r, x0 // r : (x0 + c) // r]
                for f, r in zip(features, model.feature_reductions, strict=True)
            ]
            pixels = image[..., y0 : y0 + c, x0 : x0 + c]
            if kind == "copies":
                feats, pixels = [f.contiguous() for f in feats], pixels.contiguous()
            forward, backward = step(feats, pixels)
            if k >= 3:  # the first steps build oneDNN's kernels
                times[kind][0].append(forward)
                times[kind][1].append(backward)
    for kind, (forward, backward) in times.items():
        print(
            f"window features as {kind}: forward + losses "
            f"{1000 * statistics.median(forward):.1f} ms, "
            f"backward {1000 * statistics.median(backward):.1f} ms"
        )

    for p in params:
        p.grad = torch.randn_like(p)
    kernels = {"foreach": {"foreach": True}, "fused": {"fused": True}}
    optimizers = {k: torch.optim.AdamW(params, lr=1e-4, **kw) for k, kw in kernels.items()}
    steps: dict[str, list[float]] = {k: [] for k in kernels}
    for k in range(args.repeats + 3):
        for kind, optimizer in optimizers.items():
            started = time.perf_counter()
            optimizer.step()
            if k >= 3:
                steps[kind].append(time.perf_counter() - started)
    count = sum(p.numel() for p in params)
    for kind, spent in steps.items():
        print(
            f"AdamW, {kind}, {count / 1e6:.2f} M weights: "
            f"{1000 * statistics.median(spent):.1f} ms a step"
        )


if __name__ == "__main__":
    main()
