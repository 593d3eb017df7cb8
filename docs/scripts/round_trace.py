"""The whole region's Dice and fit after every step of ``wsol bench corrections`` rounds.

One test region, the benchmark's simulated user (10 disks a round on the largest error
regions), the app's fine-tuning round; after every optimizer step the script scores the
F-CAM mask of the whole region against the ground truth and the objective the round's
windows estimate: the strokes' partial CE plus the keep term (weight 3) over the whole
region. Shows how far one window's step moves the whole region, and whether that
objective sees it.

    .venv/bin/python docs/scripts/round_trace.py /tmp/bench1 /tmp/q18.safetensors \\
        --region 0 --check-every 0
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import wsol.bench_corrections as bc
from wsol.checkpoint import load_model
from wsol.data import WSOLDataset
from wsol.losses import keep_loss, partial_cross_entropy
from wsol.pseudo import IGNORE
from wsol.session import FINE_TUNE
from wsol.train import TrainConfig, TrainData, train


def app_round(model, *, check_every: int, seed: int, precision: str | None = None) -> TrainConfig:
    """The app's F-CAM fine-tuning round (wsol.session.FINE_TUNE), all of its steps: no
    time limit, so a trace does not depend on the machine's speed."""
    tune = FINE_TUNE
    return TrainConfig(
        steps=tune["steps"],
        batch_size=1,
        heads=("fcam",),
        lr=tune["lr"],
        cam_method="fcam",
        keep_weight=tune["keep_weight"],
        keep_fg=tune["keep_fg"],
        heads_crop=tune["crop"],
        heads_check_every=check_every,
        cpu_precision=precision or tune["precision"],
        seed=seed,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--region", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0, help="fine-tuning seed")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, help="steps per round (default: the app's)")
    parser.add_argument("--precision", default=FINE_TUNE["precision"])
    parser.add_argument(
        "--check-every",
        type=int,
        default=0,
        help="the round's own whole-region checks (default 0: end on the last step)",
    )
    args = parser.parse_args()

    model = load_model(args.checkpoint)
    test = WSOLDataset(args.data / "test", model.config.class_names)
    image, truth = bc.mosaics(test, model.config.input_size, count=args.region + 1)[args.region]
    truth = truth.numpy()
    config = app_round(
        model, check_every=args.check_every, seed=args.seed, precision=args.precision
    )
    if args.steps:
        config.steps = args.steps
    corrections = torch.full(truth.shape, IGNORE, dtype=torch.long)

    @torch.no_grad()
    def fcam_logits() -> torch.Tensor:
        model.eval()
        return model.forward_heads(model.normalize(image[None])).fcam.float()

    pred = bc._predict(model, image, "fcam")
    print(f"start: Dice {bc.dice(pred, truth):.1f}")
    for round_ in range(1, args.rounds + 1):
        bc.paint(corrections, pred, truth, 10, 4)
        held = torch.softmax(fcam_logits(), 1)
        painted = corrections[None]

        def report(p, round_=round_, held=held, painted=painted) -> None:
            logits = fcam_logits()
            dice = bc.dice((torch.softmax(logits, 1)[0, 1] >= 0.5).numpy(), truth)
            pce = float(partial_cross_entropy(logits, painted))
            keep = float(keep_loss(logits, held, painted == IGNORE, fg_extra=config.keep_fg))
            fit = pce + config.keep_weight * keep
            print(
                f"round {round_} step {p.step:2d}: Dice {dice:.1f}, strokes' CE {pce:.3f}, "
                f"keep {keep:.4f}, whole-region objective {fit:.3f}",
                flush=True,
            )

        data = TrainData(image[None], torch.tensor([1]), painted)
        result = train(model, data, "heads", config, progress=report)
        pred = bc._predict(model, image, "fcam")
        kept = "" if result.kept_step is None else f" (the round kept step {result.kept_step})"
        print(f"after round {round_}: Dice {bc.dice(pred, truth):.1f}{kept}")


if __name__ == "__main__":
    main()
