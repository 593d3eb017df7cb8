"""``wsol bench corrections``: a simulated user correcting the F-CAM mask, round by round.

A region is a 4 x 4 mosaic of test tiles (512 px at 128-px tiles), the size a
pathologist corrects at once in napari. Each round: threshold the head's map at 0.5,
find the largest connected regions where it disagrees with the ground truth, paint one
disk (the true label) at the deepest point of each of the K largest, fine-tune the heads
on the region (stage ``heads``, encoder features cached), and measure Dice again. The
benchmark repeats with several fine-tuning seeds and reports the mean.

The fine-tuning is what the app's "Fine-tune heads" button runs with its defaults:
seeds from the head's own map, every stroke so far in the loss, and the head held to
its earlier map wherever nothing is painted (``keep_weight``), harder where that map is
sure of foreground (``keep_fg``).
"""

from __future__ import annotations

import copy
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from wsol.checkpoint import load_model
from wsol.data import WSOLDataset
from wsol.errors import InputError
from wsol.machine import describe as describe_machine
from wsol.precision import autocast_dtype, dtype_name
from wsol.pseudo import BG, FG, IGNORE
from wsol.region import honour_corrections
from wsol.session import FINE_TUNE
from wsol.train import RoundCache, TrainConfig, TrainData, train


def mosaics(
    dataset: WSOLDataset, size: int, grid: int = 4, count: int = 3
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``count`` regions of ``grid x grid`` tiles: image uint8 [3, S, S], mask bool [S, S]."""
    batches = list(dataset.batches(grid * grid, size))
    regions = []
    for batch in batches[:count]:
        if len(batch.names) < grid * grid:
            break
        rows = [
            torch.cat(list(batch.images[r * grid : (r + 1) * grid]), dim=-1) for r in range(grid)
        ]
        mrows = [
            torch.cat(list(batch.masks[r * grid : (r + 1) * grid]), dim=-1) for r in range(grid)
        ]
        regions.append((torch.cat(rows, dim=-2), torch.cat(mrows, dim=-2)))
    return regions


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    inter = (pred & truth).sum()
    total = pred.sum() + truth.sum()
    return float(200.0 * inter / total) if total else 100.0


def strokes(pred: np.ndarray, truth: np.ndarray, k: int, radius: int) -> list[tuple]:
    """Up to ``k`` disks ``(y, x, label)`` at the deepest points of the largest errors."""
    error = pred != truth
    labels, n = ndimage.label(error)
    if n == 0:
        return []
    sizes = ndimage.sum(error, labels, range(1, n + 1))
    depth = ndimage.distance_transform_edt(error)
    out = []
    for component in np.argsort(sizes)[::-1][:k] + 1:
        inside = np.where(labels == component, depth, 0)
        y, x = np.unravel_index(int(np.argmax(inside)), inside.shape)
        out.append((int(y), int(x), FG if truth[y, x] else BG))
    return out


def bench_corrections(
    data: str | Path,
    checkpoint: str | Path,
    *,
    rounds: int = 3,
    strokes_per_round: int = 10,
    radius: int = 4,
    regions: int = 12,
    repeats: int = 3,
    heads: tuple[str, ...] = ("fcam",),
    steps: int = FINE_TUNE["steps"],
    seconds: float | None = FINE_TUNE["seconds"],
    lr: float = FINE_TUNE["lr"],
    seed_method: str | None = None,
    keep_weight: float = FINE_TUNE["keep_weight"],
    keep_fg: float = FINE_TUNE["keep_fg"],
    crop: int = FINE_TUNE["crop"],
    focus: float = TrainConfig.heads_focus,
    windows: int = TrainConfig.heads_windows,
    check_every: int = TrainConfig.heads_check_every,
    precision: str = FINE_TUNE["precision"],
    honour: bool = True,
    reuse: bool = True,
    device: str | torch.device = "cpu",
    log=print,
) -> dict:
    """Dice of each region after each round, and the time of each round.

    The whole benchmark runs ``repeats`` times, with fine-tuning seeds 0, 1, ...: which
    windows and seed pixels a round draws moves the 12-region gain by about two points,
    so the headline figures are means over the repeats. ``seed_method`` None seeds from
    the corrected head's own map. ``steps``, ``seconds`` and ``precision`` are the app's
    defaults (:data:`wsol.session.FINE_TUNE`): up to 40 steps, as many as fit 4.5 s per
    round on this machine (so the gain then depends on the machine's speed; ``seconds``
    None or 0 takes every step), in bfloat16 on a CPU with native bfloat16. With
    ``reuse`` each region's rounds share a :class:`wsol.train.RoundCache`, as the app's do.
    """
    if repeats < 1 or regions < 1:
        raise ValueError(f"repeats and regions must be >= 1, got {repeats} and {regions}")
    base = load_model(checkpoint).to(device)
    seed_method = seed_method or heads[0]
    size = base.config.input_size
    test = WSOLDataset(Path(data) / "test", base.config.class_names)
    chosen = mosaics(test, size, count=regions)
    if not chosen:
        raise InputError(
            f"{Path(data) / 'test'}: a region needs 16 test images, the split has {len(test)}"
        )
    settings = {
        "rounds": rounds,
        "strokes_per_round": strokes_per_round,
        "radius": radius,
        "heads": list(heads),
        "steps": steps,
        "seconds": seconds or None,
        "lr": lr,
        "seed_method": seed_method,
        "keep_weight": keep_weight,
        "keep_fg": keep_fg,
        "crop": crop,
        "focus": focus,
        "windows": windows,
        "check_every": check_every,
        "precision": precision,
        "precision_used": dtype_name(autocast_dtype(base.device, precision)),
        "honour": honour,
        "reuse": reuse,
    }
    runs = []
    for seed in range(repeats):
        results = []
        for r, (image, truth_t) in enumerate(chosen):
            result = _correct_region(base, image, truth_t.numpy(), seed, settings)
            log(
                f"seed {seed}, region {r}: Dice "
                + " -> ".join(f"{s:.1f}" for s in result["dice"])
                + f"; round {statistics.median(result['round_seconds']):.2f} s, "
                + "/".join(str(n) for n in result["round_steps"])
                + " steps"
            )
            results.append(result)
        mean = [statistics.mean(res["dice"][i] for res in results) for i in range(rounds + 1)]
        model_mean = [
            statistics.mean(res["model_dice"][i] for res in results) for i in range(rounds + 1)
        ]
        runs.append(
            {
                "seed": seed,
                "regions": results,
                "mean_dice": mean,
                "gain": mean[-1] - mean[0],
                "model_mean_dice": model_mean,
                "model_gain": model_mean[-1] - model_mean[0],
                "strokes_honoured": {
                    label: [
                        _mean_defined(res["strokes_honoured"][i][label] for res in results)
                        for i in range(rounds)
                    ]
                    for label in ("fg", "bg")
                },
            }
        )
        if repeats > 1:
            log(f"seed {seed}: gain {runs[-1]['gain']:+.1f} points")
    mean = [statistics.mean(run["mean_dice"][i] for run in runs) for i in range(rounds + 1)]
    model_mean = [
        statistics.mean(run["model_mean_dice"][i] for run in runs) for i in range(rounds + 1)
    ]
    all_times = [t for run in runs for res in run["regions"] for t in res["round_seconds"]]
    all_steps = [n for run in runs for res in run["regions"] for n in res["round_steps"]]
    return {
        "checkpoint": str(checkpoint),
        "runs": runs,
        "mean_dice": mean,
        "gain": mean[-1] - mean[0],
        "gain_by_seed": [run["gain"] for run in runs],
        "model_mean_dice": model_mean,
        "model_gain": model_mean[-1] - model_mean[0],
        "model_gain_by_seed": [run["model_gain"] for run in runs],
        "strokes_honoured": {
            label: [
                _mean_defined(run["strokes_honoured"][label][i] for run in runs)
                for i in range(rounds)
            ]
            for label in ("fg", "bg")
        },
        "median_round_seconds": statistics.median(all_times),
        "max_round_seconds": max(all_times),
        "median_round_steps": statistics.median(all_steps),
        "min_round_steps": min(all_steps),
        "machine": describe_machine(base.device),
        "settings": {
            **settings,
            "regions": len(chosen),
            "repeats": repeats,
            "region": list(chosen[0][0].shape[-2:]),
        },
    }


def paint(
    corrections: torch.Tensor, pred: np.ndarray, truth: np.ndarray, k: int, radius: int
) -> None:
    """One round of the simulated user: ``k`` disks of ``strokes`` written into ``corrections``."""
    yy, xx = np.mgrid[0 : truth.shape[0], 0 : truth.shape[1]]
    for y, x, label in strokes(pred, truth, k, radius):
        corrections[torch.from_numpy((yy - y) ** 2 + (xx - x) ** 2 <= radius**2)] = label


def _correct_region(
    base: torch.nn.Module, image: torch.Tensor, truth: np.ndarray, seed: int, settings: dict
) -> dict:
    """``rounds`` rounds of strokes and fine-tuning on one region, on a copy of ``base``."""
    model = copy.deepcopy(base)
    corrections = torch.full(truth.shape, IGNORE, dtype=torch.long)
    head = settings["heads"][0]
    pred = _predict(model, image, head)
    scores, model_scores, times, honoured = [dice(pred, truth)], [dice(pred, truth)], [], []
    steps_taken = []
    config = TrainConfig(
        steps=settings["steps"],
        batch_size=1,
        heads=tuple(settings["heads"]),
        lr=settings["lr"],
        cam_method=settings["seed_method"],
        keep_weight=settings["keep_weight"],
        keep_fg=settings["keep_fg"],
        heads_crop=settings["crop"],
        heads_focus=settings["focus"],
        heads_windows=settings["windows"],
        heads_check_every=settings["check_every"],
        heads_seconds=settings["seconds"],
        cpu_precision=settings["precision"],
        seed=seed,
    )
    cache = RoundCache()  # as the app keeps one for the region it corrects
    for _ in range(settings["rounds"]):
        paint(corrections, pred, truth, settings["strokes_per_round"], settings["radius"])
        data = TrainData(image[None], torch.tensor([1]), corrections[None])
        start = time.perf_counter()
        result = train(model, data, "heads", config, cache=cache if settings["reuse"] else None)
        if model.device.type == "cuda":
            torch.cuda.synchronize(model.device)  # the round is done when its kernels are
        times.append(time.perf_counter() - start)
        steps_taken.append(result.steps_done)
        pred = _predict(model, image, head)
        model_scores.append(dice(pred, truth))
        honoured.append(stroke_fit(pred, corrections.numpy()))
        if settings["honour"]:
            # napari's label values are the seed codes plus one (IGNORE -1 -> NONE 0).
            pred = honour_corrections(pred, corrections.numpy() + 1)
        scores.append(dice(pred, truth))
    return {
        "dice": scores,
        "model_dice": model_scores,
        "round_seconds": times,
        "round_steps": steps_taken,
        "strokes_honoured": honoured,
    }


def stroke_fit(pred: np.ndarray, corrections: np.ndarray) -> dict[str, float | None]:
    """Share of the painted foreground / background pixels the mask now agrees with.

    None for a class nobody has painted yet.
    """
    out: dict[str, float | None] = {}
    for name, label, want in (("fg", FG, True), ("bg", BG, False)):
        painted = corrections == label
        out[name] = float((pred[painted] == want).mean()) if painted.any() else None
    return out


def _mean_defined(values) -> float | None:
    defined = [v for v in values if v is not None]
    return statistics.mean(defined) if defined else None


@torch.no_grad()
def _predict(model, image: torch.Tensor, head: str) -> np.ndarray:
    model.eval()
    out = model.forward_heads(model.normalize(image[None].to(model.device)))
    logits = out.fcam if head == "fcam" else out.pixel
    return (torch.softmax(logits, 1)[0, 1] >= 0.5).cpu().numpy()
