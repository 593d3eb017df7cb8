"""``wsol bench cams``: our CAM family against the forward floor and pytorch-grad-cam.

Every figure is the median of several timed runs after one warm-up, all measured in
the same process on the same batch, so ratios are meaningful on a noisy machine.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from wsol.cams import compute_many
from wsol.machine import cpu_model
from wsol.model import WSOLModel, create_model
from wsol.precision import autocast_dtype, dtype_name

#: Our method -> pytorch-grad-cam class name of the same method.
REFERENCE = {
    "gradcam": "GradCAM",
    "gradcampp": "GradCAMPlusPlus",
    "xgradcam": "XGradCAM",
    "layercam": "LayerCAM",
    "scorecam": "ScoreCAM",
}
BATCHED_METHODS = (
    "cam",
    "gradcam",
    "gradcampp",
    "xgradcam",
    "layercam",
    "smoothgradcampp",
    "fcam",
    "pixelcam",
)


def interleaved_times(
    fns: dict[str, Callable[[], Any]], repeats: int, sync: Callable[[], None] = lambda: None
) -> dict[str, list[float]]:
    """Wall times of several functions, run in turn round after round.

    One untimed warm-up each, then ``repeats`` rounds of every function, so slow phases
    of a shared machine hit all of them alike; ratios are taken within a round.
    """
    for fn in fns.values():
        fn()
        sync()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return times


def _median_ratio(num: list[float], den: list[float]) -> float:
    return statistics.median(a / b for a, b in zip(num, den, strict=True))


def tissue_batch(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    """``batch`` random crops (uint8 [B, 3, size, size]) of the sample H&E tile."""
    from wsol.data import resize_image
    from wsol.imageio import read_image
    from wsol.samples import sample_path

    tile = torch.from_numpy(read_image(sample_path("he_tile"))).permute(2, 0, 1)
    if min(tile.shape[1:]) < size:
        tile = resize_image(tile.permute(1, 2, 0).numpy(), size)
    gen = torch.Generator().manual_seed(seed)
    ys = torch.randint(0, tile.shape[1] - size + 1, (batch,), generator=gen).tolist()
    xs = torch.randint(0, tile.shape[2] - size + 1, (batch,), generator=gen).tolist()
    return torch.stack([tile[:, y : y + size, x : x + size] for y, x in zip(ys, xs, strict=True)])


def reference_layer(model: WSOLModel) -> nn.Module:
    """The encoder module whose output is the classifier's tap (for pytorch-grad-cam)."""
    name = model.encoder.feature_info.module_name()[model.cam_tap]
    try:
        return model.encoder.get_submodule(name.replace(".", "_"))
    except AttributeError:
        return model.encoder.get_submodule(name)


def bench_cams(
    backbone: str = "resnet18",
    batch: int = 16,
    size: int = 224,
    repeats: int = 5,
    scorecam_images: int = 1,
    device: str = "cpu",
    reference: bool = True,
    seed: int = 0,
    precision: str = "auto",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Time the forward pass, each of our methods and pytorch-grad-cam's equivalents.

    The batch is random crops of the sample H&E tile (real tissue, so Score-CAM sees a
    realistic share of empty channels); the model is randomly initialized.

    Score-CAM is timed on ``scorecam_images`` images (it costs one forward per channel
    per image) and reported per image, ours and theirs alike.
    """
    torch.manual_seed(seed)
    model = create_model(backbone, 2).to(device)
    x = model.normalize(tissue_batch(batch, size, seed)).to(device)
    x_score = x[:scorecam_images]
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def no_grad_forward(inputs: torch.Tensor = x) -> None:
        with torch.no_grad():
            model(inputs)

    # pytorch-grad-cam hooks the model it is given: a copy keeps its hooks out of ours.
    theirs = _reference_cams(copy.deepcopy(model)) if reference else {}
    rows: list[dict[str, Any]] = []
    floors: list[float] = []
    family = ["cam", "gradcam", "gradcampp", "xgradcam", "layercam"]
    for method in (*BATCHED_METHODS, "+".join(family)):
        names = family if "+" in method else [method]
        fns = {"floor": no_grad_forward, "ours": lambda n=names: compute_many(model, x, n)}
        if method in theirs:
            fns["theirs"] = lambda c=theirs[method]: c(input_tensor=x, targets=None)
        t = interleaved_times(fns, repeats, sync)
        floors += t["floor"]
        row = {
            "method": method,
            "images": batch,
            "ours_s": statistics.median(t["ours"]),
            "floor_s": statistics.median(t["floor"]),
            "vs_floor": _median_ratio(t["ours"], t["floor"]),
        }
        if "theirs" in t:
            row["theirs_s"] = statistics.median(t["theirs"])
            row["speedup"] = _median_ratio(t["theirs"], t["ours"])
        rows.append(row)
        log(_row_text(row))
    floor = statistics.median(floors)
    rows.insert(0, {"method": "forward", "images": batch, "ours_s": floor, "vs_floor": 1.0})
    log(f"forward (floor): {floor:.3f} s per batch of {batch} (median of {len(floors)})")

    fns = {
        "ours": lambda: compute_many(model, x_score, ["scorecam"]),
        "ours_half": lambda: compute_many(model, x_score, ["scorecam"], scorecam_scale=0.5),
    }
    low = autocast_dtype(device, precision)
    if low is not None:

        def ours_low() -> None:
            with torch.autocast(torch.device(device).type, dtype=low):
                compute_many(model, x_score, ["scorecam"])

        fns["ours_low"] = ours_low
    int8 = torch.device(device).type == "cpu"
    if int8:
        fns["ours_int8"] = lambda: compute_many(model, x_score, ["scorecam"], scorecam_int8=True)
    if "scorecam" in theirs:
        fns["theirs"] = lambda: _quiet(theirs["scorecam"], x_score)
    t = interleaved_times(fns, repeats, sync)
    with torch.no_grad():
        acts = model.forward_features(x_score)[model.cam_tap].flatten(2)
    scored = (acts.amax(2) > acts.amin(2)).sum().item() / scorecam_images
    per_image_floor = floor / batch
    variants = [("ours", "scorecam"), ("ours_half", "scorecam (scorecam_scale=0.5)")]
    if low is not None:
        variants.insert(1, ("ours_low", f"scorecam ({dtype_name(low)} autocast)"))
    if int8:
        variants.insert(-1, ("ours_int8", "scorecam (int8 masked forwards, scorecam_int8=True)"))
    for key, name in variants:
        row = {
            "method": name,
            "images": scorecam_images,
            "per_image": True,
            "ours_s": statistics.median(t[key]),
            "vs_floor": statistics.median(t[key]) / scorecam_images / per_image_floor,
            "channels": acts.shape[1],
            "channels_scored_per_image": scored,
        }
        if "theirs" in t:
            row["theirs_s"] = statistics.median(t["theirs"])
            row["speedup"] = _median_ratio(t["theirs"], t[key])
        rows.append(row)
        log(_row_text(row))

    return {
        "backbone": backbone,
        "batch": batch,
        "size": size,
        "repeats": repeats,
        "device": device if device != "cpu" else f"cpu ({os.cpu_count()} cores, {cpu_model()})",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "reference": _reference_version() if reference else None,
        "scorecam_precision": dtype_name(low),
        "rows": rows,
    }


def _reference_cams(model: WSOLModel) -> dict[str, Any]:
    try:
        import pytorch_grad_cam
    except ImportError:
        return {}
    layer = [reference_layer(model)]
    return {
        ours: getattr(pytorch_grad_cam, name)(model=model, target_layers=layer)
        for ours, name in REFERENCE.items()
    }


def _quiet(cam: Callable[..., Any], x: torch.Tensor) -> Any:
    """Run a pytorch-grad-cam object without its per-image progress bar."""
    with contextlib.redirect_stderr(io.StringIO()):
        return cam(input_tensor=x, targets=None)


def _reference_version() -> str | None:
    try:
        from importlib.metadata import version

        return f"grad-cam {version('grad-cam')}"
    except Exception:
        return None


def _row_text(row: dict[str, Any]) -> str:
    per = " per image" if row.get("per_image") else f" per batch of {row['images']}"
    text = f"{row['method']}: ours {row['ours_s']:.3f} s{per}"
    if "vs_floor" in row:
        text += f" ({row['vs_floor']:.2f}x floor)"
    if "theirs_s" in row:
        text += f", pytorch-grad-cam {row['theirs_s']:.3f} s, speedup {row['speedup']:.2f}x"
    return text


def markdown_table(report: dict[str, Any]) -> str:
    """The report as the table in docs/BENCHMARKS.md."""
    lines = [
        "| method | images | ours (s) | × forward floor | pytorch-grad-cam (s) | speedup |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        images = f"{r['images']}" + (" (s/image)" if r.get("per_image") else "")
        ours = r["ours_s"] / r["images"] if r.get("per_image") else r["ours_s"]
        theirs = r.get("theirs_s")
        if theirs is not None and r.get("per_image"):
            theirs /= r["images"]
        theirs_text = "" if theirs is None else f"{theirs:.3f}"
        speedup = "" if "speedup" not in r else f"{r['speedup']:.2f}×"
        lines.append(
            f"| {r['method']} | {images} | {ours:.3f} | {r.get('vs_floor', 1.0):.2f} | "
            f"{theirs_text} | {speedup} |"
        )
    return "\n".join(lines)
