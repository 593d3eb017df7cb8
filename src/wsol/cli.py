"""The ``wsol`` command line."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from wsol.errors import InputError, WSOLError
from wsol.precision import PRECISIONS

EXIT_INPUT = 2


def _methods(text: str) -> list[str]:
    from wsol.cams import METHODS

    names = list(METHODS) if text == "all" else [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in METHODS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown method(s) {', '.join(unknown) or '(none)'}; "
            f"choose from {', '.join(METHODS)} or all"
        )
    return names


def _method(text: str) -> str:
    names = _methods(text)
    if len(names) != 1:
        raise argparse.ArgumentTypeError("give one method")
    return names[0]


def _bounded(cast, low: float, above: bool, rule: str):
    """An argparse type: ``cast(text)``, which must be above ``low`` (or at least it)."""

    def parse(text: str):
        value = cast(text)
        if not (value > low if above else value >= low):  # NaN fails both
            raise argparse.ArgumentTypeError(f"{text}: must be {rule}")
        return value

    return parse


_count = _bounded(int, 1, False, "at least 1")  # sizes, steps, batches, threads
_positive = _bounded(float, 0.0, True, "above 0")  # learning rates, pixel sizes
_non_negative = _bounded(float, 0.0, False, "0 or more")  # regularization strengths


def _device(text: str) -> str:
    """A torch device this machine has (``cpu``, ``cuda``, ``cuda:1``, ``mps``)."""
    import torch

    try:
        device = torch.device(text)
    except RuntimeError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: not a torch device ({exc})") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: no CUDA GPU on this machine; use cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: no Apple GPU on this machine; use cpu")
    return text


def _channels(text: str) -> str:
    try:
        values = [int(c) for c in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated channel counts >= 1")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wsol",
        description="Weakly supervised object localization: CAM family, F-CAM and PixelCAM maps.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "demo",
        help="open napari with the sample slide, the WSOL widget and the sample model "
        "(--headless: write overlays of a sample image instead)",
    )
    p.add_argument(
        "--headless",
        action="store_true",
        help="no window: print the model summary and write overlay PNGs (also chosen "
        "automatically when no display is available)",
    )
    p.add_argument("--exit-when-done", action="store_true", help="close napari once computed")
    p.add_argument("--image", type=Path, help="headless: image to explain (default: H&E tile)")
    p.add_argument(
        "--checkpoint", type=Path, help="headless: model checkpoint (default: the sample model)"
    )
    p.add_argument(
        "--methods", type=_methods, help="comma-separated methods or 'all' (default: app's / all)"
    )
    p.add_argument("--out", type=Path, default=Path("wsol-demo"), help="headless: output folder")

    p = sub.add_parser("cam", help="compute one method's map for an image")
    p.add_argument("image", type=Path)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--method", type=_method, default="gradcam")
    p.add_argument("--target", help="class index or name to explain (default: predicted)")
    p.add_argument("--out", type=Path, required=True, help="output map: .npy, .png or .tif")
    p.add_argument("--native", action="store_true", help="run at the image's own size (no resize)")
    _add_dense_crf(p)

    p = sub.add_parser("eval", help="evaluate methods on a dataset folder (labels.csv, masks/)")
    p.add_argument("dataset", type=Path)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--methods", type=_methods, default="cam,gradcam")
    p.add_argument("--json", type=Path, help="write the metrics here")
    p.add_argument("--batch-size", type=_count, default=16)
    p.add_argument("--tau", type=float, help="also report Dice/IoU at this threshold")
    p.add_argument("--no-boxes", action="store_true", help="skip MaxBoxAcc / MaxBoxAccV2")
    p.add_argument(
        "--faithfulness",
        action="store_true",
        help="also Average Drop / Increase in Confidence / Average Retention (+ of others) "
        "and deletion / insertion AUC per method",
    )
    p.add_argument(
        "--no-curves", action="store_true", help="faithfulness without deletion/insertion"
    )
    _add_dense_crf(p)

    p = sub.add_parser(
        "predict", help="tiled inference over whole slides: heatmaps, masks, GeoJSON, tile CSV"
    )
    p.add_argument(
        "slides",
        type=Path,
        nargs="*",
        metavar="SLIDE",
        help="slides (with --session: none, or its slide where it moved)",
    )
    p.add_argument(
        "--session",
        type=Path,
        help="an app session folder: its slide, current model version, methods, target, "
        "thresholds and corrections (any option given here wins)",
    )
    p.add_argument(
        "--checkpoint",
        type=Path,
        help="model checkpoint (default with --session: the session's current version)",
    )
    p.add_argument(
        "--methods",
        type=_methods,
        help="comma-separated methods or 'all' (default: the session's, else cam,gradcam)",
    )
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument(
        "--threshold",
        type=float,
        help="one mask threshold for every map (default: 0.5, or the session's own per method)",
    )
    p.add_argument(
        "--no-corrections",
        action="store_true",
        help="with --session: masks without the painted corrections",
    )
    p.add_argument("--target", help="class to explain (default: the positive class)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--mpp", type=_positive, help="microns per pixel the model sees")
    where.add_argument("--level", type=int, help="slide level the model sees")
    p.add_argument(
        "--slide-mpp",
        type=float,
        help="microns per pixel of slides whose file records none (a recorded one is kept)",
    )
    p.add_argument("--tile", type=_count, help="tile side (default: the model's input size)")
    p.add_argument("--overlap", type=float, default=0.25, help="tile overlap fraction")
    p.add_argument("--map-downsample", type=_count, default=4, help="tile pixels per map pixel")
    p.add_argument("--batch-size", type=_count, default=16)
    p.add_argument("--workers", type=_count, default=2, help="tile-reading threads")
    p.add_argument(
        "--device", type=_device, default=None, help="torch device (default: cuda if available)"
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="autocast dtype (auto: float16 on CUDA, bfloat16 on CPUs that have it natively)",
    )
    tissue = p.add_mutually_exclusive_group()
    tissue.add_argument(
        "--tissue",
        dest="tissue",
        action="store_true",
        default=None,
        help="skip glass (default for slides)",
    )
    tissue.add_argument(
        "--no-tissue",
        dest="tissue",
        action="store_false",
        help="run every tile (default for plain images)",
    )
    p.add_argument("--min-tissue", type=float, default=0.1, help="tissue fraction to run a tile")
    p.add_argument("--restart", action="store_true", help="start over instead of resuming")
    _add_dense_crf(p)

    p = sub.add_parser("train", help="train a stage: classifier, fcam, pixelcam, heads or guided")
    p.add_argument("dataset", type=Path, help="dataset folder (labels.csv, images, corrections/)")
    p.add_argument(
        "--stage", required=True, choices=["classifier", "fcam", "pixelcam", "heads", "guided"]
    )
    p.add_argument("--checkpoint", type=Path, required=True, help="model to start from")
    p.add_argument("--out", type=Path, required=True, help="checkpoint to write")
    p.add_argument("--size", type=_count, help="image size (default: the model's input size)")
    p.add_argument("--epochs", type=_count, default=10)
    p.add_argument("--steps", type=_count, help="optimizer steps of the heads stage")
    p.add_argument(
        "--heads",
        default="fcam,pixelcam",
        help="heads stage: which heads to fine-tune (fcam, pixelcam or both, comma-separated)",
    )
    p.add_argument(
        "--keep-weight",
        type=float,
        default=3.0,
        help="heads stage: weight holding each head's earlier map where nothing is painted",
    )
    p.add_argument(
        "--keep-fg",
        type=float,
        default=2.0,
        help="heads stage: extra hold where that map is over 0.9 foreground (weight 1 + this)",
    )
    p.add_argument(
        "--check-every",
        type=int,
        help="heads stage: score the strokes and the held map on whole images every N steps "
        "and end on the best weights (default 5; 0: end on the last)",
    )
    p.add_argument(
        "--seconds",
        type=float,
        help="heads stage: end early, on a step, to stay within this many seconds per "
        "512x512 px of images (default: no limit, every step; the steps then depend on "
        "the machine's speed)",
    )
    p.add_argument("--batch-size", type=_count, default=16)
    p.add_argument("--lr", type=_positive, default=1e-3)
    p.add_argument("--cam-method", default="gradcampp", help="CAM the seeds come from")
    p.add_argument(
        "--bg-fraction", type=float, default=0.3, help="seeds: lowest fraction of the CAM = bg"
    )
    p.add_argument("--crf-weight", type=float, default=1.0, help="weight of the F-CAM CRF loss")
    p.add_argument(
        "--mask-labels",
        action="store_true",
        help="use the masks/ of images that have one as full pixel labels (guided, heads)",
    )
    p.add_argument(
        "--guide-method", choices=["cam", "gradcam"], default="cam", help="guided: map to guide"
    )
    p.add_argument("--guide-weight", type=float, default=1.0, help="guided: pixel loss weight")
    p.add_argument(
        "--kernel-usage",
        type=_non_negative,
        help="classifier/guided: Kernel Usage Regularization strength (0 turns it off)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-augment", action="store_true")
    p.add_argument(
        "--half", action="store_true", help="store the final weights as float16 (half the size)"
    )
    p.add_argument("--restart", action="store_true", help="ignore a resumable state at --out")
    p.add_argument(
        "--device", type=_device, default=None, help="torch device (default: cuda if available)"
    )

    p = sub.add_parser(
        "make-benchmark", help="build a WSOL dataset with ground truth from real H&E slides"
    )
    p.add_argument("out", type=Path, help="folder for train/, val/, test/")
    p.add_argument("--background", type=Path, nargs="+", help="slides/images cut as tissue")
    p.add_argument("--lesion", type=Path, nargs="+", help="slides/images the lesions come from")
    p.add_argument(
        "--multilabel",
        action="store_true",
        help="two lesion classes (lesion_a, lesion_b: the lesion tissue at --downsample and "
        "--downsample-b), one or both per tile, ;-separated labels, masks/<class>/",
    )
    p.add_argument(
        "--lesion-b",
        type=Path,
        nargs="+",
        help="multilabel: slides for lesion_b (default --lesion)",
    )
    p.add_argument("--downsample-b", type=float, default=5.5, help="multilabel: lesion_b's")
    p.add_argument("--size", type=_count, default=128)
    p.add_argument("--downsample", type=float, default=2.0, help="level-0 px per tile px")
    p.add_argument(
        "--tiles", type=int, nargs=3, default=(400, 100, 200), metavar=("TRAIN", "VAL", "TEST")
    )
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("create-model", help="write a new (untrained) model checkpoint")
    p.add_argument("out", type=Path, help="checkpoint to write (.safetensors)")
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--classes", default="negative,positive", help="comma-separated class names")
    p.add_argument("--pretrained", help="local timm weights file, or 'timm' to download")
    p.add_argument("--input-size", type=_count, default=224)
    p.add_argument("--mpp", type=_positive, help="microns per pixel the model is trained at")
    p.add_argument(
        "--multilabel", action="store_true", help="several classes per image (sigmoid + BCE)"
    )
    p.add_argument(
        "--kernel-usage",
        type=_non_negative,
        default=0.0,
        help="Kernel Usage Regularization strength of the classifier (0: off)",
    )
    p.add_argument("--output-stride", type=int, choices=[8, 16], help="dilate for finer CAMs")
    p.add_argument(
        "--pixel-tap",
        type=int,
        default=-1,
        help="encoder feature map of the PixelCAM head (-1: deepest, -3: stride 8 on ResNets)",
    )
    p.add_argument(
        "--decoder-channels",
        type=_channels,
        default="256,128,64,32,16",
        help="F-CAM decoder widths, deepest first (comma-separated)",
    )
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("bench", help="benchmarks")
    bench = p.add_subparsers(dest="bench", required=True)
    b = bench.add_parser("cams", help="CAM family vs forward floor and pytorch-grad-cam")
    b.add_argument("--json", type=Path, help="write the report here")
    b.add_argument("--backbone", default="resnet18")
    b.add_argument("--batch", type=int, default=16)
    b.add_argument("--size", type=int, default=224)
    b.add_argument("--repeats", type=int, default=5)
    b.add_argument("--scorecam-images", type=int, default=1)
    b.add_argument("--device", type=_device, default="cpu")
    b.add_argument("--no-reference", action="store_true", help="skip pytorch-grad-cam")
    b.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="also time Score-CAM in this autocast precision when it is not float32 "
        "(auto: bfloat16 on a CPU with native bfloat16, float16 on CUDA)",
    )
    b = bench.add_parser("quality", help="train from scratch, compare CAMs with F-CAM/PixelCAM")
    b.add_argument("data", type=Path, help="a make-benchmark folder (train/, test/)")
    b.add_argument("--backbone", default="resnet18")
    b.add_argument("--size", type=int, default=128)
    b.add_argument(
        "--epochs",
        type=int,
        nargs=3,
        default=(12, 4, 8),
        metavar=("CLASSIFIER", "PIXELCAM", "FCAM"),
    )
    b.add_argument("--pixel-tap", type=int, default=-1, help="feature map of the PixelCAM head")
    b.add_argument(
        "--fcam-seeds",
        default="gradcampp",
        help="map the F-CAM stage samples its seeds from (a CAM method, or pixelcam)",
    )
    b.add_argument(
        "--pixelcam-refit",
        type=int,
        default=0,
        metavar="STEPS",
        help="then refit the PixelCAM head on F-CAM seeds for STEPS steps (0: off)",
    )
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--checkpoint", type=Path, help="also save the trained model here")
    b.add_argument(
        "--device", type=_device, default="cpu", help="torch device (cuda: float16 autocast)"
    )
    b.add_argument("--json", type=Path, help="write the report here")
    b = bench.add_parser("corrections", help="simulated user strokes, heads fine-tuned per round")
    b.add_argument("data", type=Path, help="a make-benchmark folder (test/)")
    b.add_argument("--checkpoint", type=Path, required=True, help="a trained model")
    b.add_argument("--rounds", type=int, default=3)
    b.add_argument("--strokes", type=int, default=10, help="strokes per round")
    b.add_argument(
        "--regions",
        type=int,
        default=12,
        help="4x4-tile regions to correct (at most the test split)",
    )
    b.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="run with fine-tuning seeds 0..N-1 and report the mean",
    )
    b.add_argument(
        "--steps",
        type=int,
        help="most fine-tuning steps per round (default: the app's, 40)",
    )
    b.add_argument(
        "--seconds",
        type=float,
        help="end each round early to stay within this many seconds, as the app does "
        "(default: the app's, 4.5; 0: every step, so the result does not depend on the "
        "machine's speed)",
    )
    b.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="what the round runs in on a CPU (default: the app's, auto: bfloat16 where "
        "the CPU has it natively, else float32)",
    )
    b.add_argument(
        "--model-mask",
        action="store_true",
        help="score (and let the simulated user look at) the head's mask alone, without "
        "the strokes painted so far on top of it, which the app's masks honour",
    )
    b.add_argument(
        "--no-reuse",
        action="store_true",
        help="recompute the region's encoder features and the heads' maps at every round "
        "instead of taking them over from the round before, as the app does",
    )
    b.add_argument("--lr", type=float, help="fine-tuning learning rate (default: the app's)")
    b.add_argument("--crop", type=int, help="fine-tuning window side (default: the app's)")
    b.add_argument(
        "--keep", type=float, help="weight holding the earlier map where nothing is painted"
    )
    b.add_argument("--keep-fg", type=float, help="extra hold where that map is over 0.9 foreground")
    b.add_argument("--seeds", help="map the seeds come from (default: the corrected head's)")
    b.add_argument("--focus", type=float, help="share of fine-tuning windows on strokes")
    b.add_argument(
        "--windows",
        type=int,
        help="fine-tuning windows per step, all but the first drawn anywhere (default 1)",
    )
    b.add_argument(
        "--check-every",
        type=int,
        help="score the whole region every N fine-tuning steps and keep the best weights "
        "(default: the app's; 0: keep the last)",
    )
    b.add_argument(
        "--device",
        default="cpu",
        help="torch device of the rounds (cuda: float16 autocast, --precision ignored)",
    )
    b.add_argument("--json", type=Path, help="write the report here")
    b = bench.add_parser("multilabel", help="MinMax-CAM vs the CAM family on two lesion types")
    b.add_argument("data", type=Path, help="a make-benchmark --multilabel folder")
    b.add_argument("--backbone", default="resnet10t")
    b.add_argument("--size", type=int, default=128)
    b.add_argument("--epochs", type=int, default=12)
    b.add_argument("--kernel-usage", default="0,1", help="KUR strengths to train with (0: plain)")
    b.add_argument("--curves", action="store_true", help="also deletion/insertion AUC")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--checkpoint", type=Path, help="also save the trained models here")
    b.add_argument("--json", type=Path, help="write the report here")
    b = bench.add_parser("dense-crf", help="dense-CRF refinement: Dice/PxAP effect and time")
    b.add_argument("data", type=Path, help="a make-benchmark folder (test/)")
    b.add_argument("--checkpoint", type=Path, required=True, help="a `bench quality` model")
    b.add_argument("--sizes", default="256,512,1024", help="tile sides to time")
    b.add_argument("--repeats", type=int, default=5)
    b.add_argument("--device", type=_device, default="cpu")
    b.add_argument("--json", type=Path, help="write the report here")
    b = bench.add_parser("guided", help="guided CAM vs CAM/F-CAM/PixelCAM with k labelled images")
    b.add_argument("data", type=Path, help="a make-benchmark folder (train/, test/)")
    b.add_argument("--checkpoint", type=Path, required=True, help="a `bench quality` model")
    b.add_argument("--labelled", default="0,5,20", help="numbers of pixel-labelled images")
    b.add_argument("--epochs", type=int, default=6, help="epochs of the guided stage")
    b.add_argument("--steps", type=int, default=60, help="steps of the heads stage (16 tiles)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--json", type=Path, help="write the report here")
    b = bench.add_parser("slide", help="streaming pipeline vs a naive tile loop on one slide")
    b.add_argument("slide", type=Path)
    b.add_argument("--backbone", default="resnet18")
    b.add_argument("--methods", type=_methods, default="cam,gradcam")
    b.add_argument("--tiles", type=int, default=96)
    b.add_argument("--repeats", type=int, default=3)
    b.add_argument("--batch-size", type=int, default=16)
    b.add_argument("--workers", type=int, default=2)
    b.add_argument("--device", type=_device, default="cpu")
    b.add_argument("--json", type=Path, help="write the report here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _check_outputs(args)
        return _COMMANDS[args.command](args)
    except (
        InputError,
        FileNotFoundError,
        IsADirectoryError,
        NotADirectoryError,
        FileExistsError,
    ) as exc:
        print(f"wsol {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except WSOLError as exc:
        print(f"wsol {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"wsol {args.command}: interrupted", file=sys.stderr)
        return 130


def _check_outputs(args: argparse.Namespace) -> None:
    """Refuse an output path that cannot be written before any work is done: a
    report or a model lost after an hour of training helps nobody."""
    files = [getattr(args, "json", None)]
    if args.command in ("train", "create-model", "cam"):
        files.append(args.out)
    for path in filter(None, files):
        path = Path(path)
        if path.is_dir():
            raise InputError(f"{path}: is a folder; give a file name")
        blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            raise InputError(f"{path}: cannot be written, {blocker} is a file, not a folder")
    if args.command in ("train", "create-model") and Path(args.out).suffix != ".safetensors":
        raise InputError(f"{args.out}: checkpoints are written as .safetensors files")
    out = getattr(args, "out", None)
    if args.command in ("predict", "demo", "make-benchmark") and out is not None:
        if Path(out).exists() and not Path(out).is_dir():
            raise InputError(f"{out}: is a file; the output goes into a folder")


def _demo(args: argparse.Namespace) -> int:
    import importlib.util
    import os

    from wsol.cams import METHODS
    from wsol.demo import run_demo
    from wsol.samples import sample_model_path

    headless = args.headless
    if not headless and sys.platform.startswith("linux"):
        if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            print("wsol demo: no display found; running the headless demo", file=sys.stderr)
            headless = True
    if not headless and importlib.util.find_spec("napari") is None:
        print(
            "wsol demo: napari is not installed (pip install 'napari-wsol[napari]'); "
            "running the headless demo",
            file=sys.stderr,
        )
        headless = True
    if not headless:
        # The GUI lives in the napari_wsol package; the engine only hands over to it.
        gui = importlib.import_module("napari_wsol.demo")
        return gui.main(args.methods, exit_when_done=args.exit_when_done)
    checkpoint = args.checkpoint or sample_model_path()
    run_demo(args.out, image=args.image, checkpoint=checkpoint, methods=args.methods or METHODS)
    return 0


def _cam(args: argparse.Namespace) -> int:
    from wsol.checkpoint import load_model
    from wsol.imageio import MAP_SUFFIXES, read_image, write_map
    from wsol.infer_image import image_maps

    if args.out.suffix.lower() not in MAP_SUFFIXES:
        raise InputError(
            f"{args.out}: unsupported output format; use one of {', '.join(MAP_SUFFIXES)}"
        )
    model = load_model(args.checkpoint)
    target = _target(args.target, model.config.class_names)
    image = read_image(args.image)
    result = image_maps(
        model, image, [args.method], target, native=args.native, refine=_dense_crf(args)
    )
    write_map(args.out, result.maps[args.method])
    names = model.config.class_names
    probs = ", ".join(f"{n} {p:.3f}" for n, p in zip(names, result.probabilities, strict=True))
    print(f"{args.image}: {probs}; {args.method} explains {names[result.target]!r} -> {args.out}")
    return 0


def _dense_crf(args: argparse.Namespace):
    """The dense-CRF refinement asked for on the command line, or None."""
    if not args.dense_crf:
        return None
    from wsol.refine import DenseCRFParams

    return DenseCRFParams(iterations=args.crf_iterations)


def _add_dense_crf(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dense-crf",
        action="store_true",
        help="refine the maps with a fully connected CRF on the image (before thresholds)",
    )
    p.add_argument("--crf-iterations", type=int, default=5, help="dense CRF mean-field steps")


def _target(text: str | None, class_names: list[str]) -> int | None:
    if text is None:
        return None
    if text in class_names:
        return class_names.index(text)
    if text.isdigit() and int(text) < len(class_names):
        return int(text)
    raise InputError(f"--target {text!r}: not a class of this model ({', '.join(class_names)})")


def _eval(args: argparse.Namespace) -> int:
    from wsol.checkpoint import load_model
    from wsol.data import WSOLDataset
    from wsol.evaluate import evaluate, format_report

    if args.tau is not None and not 0 <= args.tau <= 1:
        raise InputError(f"--tau {args.tau}: must be in [0, 1]")
    model = load_model(args.checkpoint)
    dataset = WSOLDataset(args.dataset, model.config.class_names, model.config.multilabel)

    progress = _progress_printer("wsol eval", "images")
    refine = _dense_crf(args)
    report = evaluate(
        model,
        dataset,
        args.methods,
        batch_size=args.batch_size,
        tau=args.tau,
        boxes=not args.no_boxes,
        progress=progress,
        faithfulness=args.faithfulness,
        curves=not args.no_curves,
        refine=refine,
    )
    if sys.stderr.isatty():
        print(file=sys.stderr)  # end the updating line
    report["checkpoint"] = str(args.checkpoint)
    report["dataset"] = str(args.dataset)
    print(format_report(report))
    if args.json:
        _write_json(args.json, report)
    return 0


def _predict(args: argparse.Namespace) -> int:
    import torch

    from wsol.checkpoint import load_model
    from wsol.predict import predict_slide

    if args.threshold is not None and not 0 <= args.threshold <= 1:
        raise InputError(f"--threshold {args.threshold}: must be in [0, 1]")
    if args.slide_mpp is not None and not args.slide_mpp > 0:
        raise InputError(f"--slide-mpp {args.slide_mpp}: must be a positive µm per pixel")
    thresholds, corrections = ({}, [])
    if args.session is not None:
        thresholds, corrections = _predict_from_session(args)
    if not args.slides:
        raise InputError("no slide given (name one or more, or give --session)")
    if args.checkpoint is None:
        raise InputError("--checkpoint is required without --session")
    if not 0 <= args.min_tissue <= 1:
        raise InputError(f"--min-tissue {args.min_tissue}: must be a fraction in [0, 1]")
    from wsol.slide import slide_stem

    first: dict[str, Path] = {}
    for path in args.slides:
        other = first.setdefault(slide_stem(path), path)
        if other != path:
            raise InputError(
                f"{other} and {path} would write the same files ({slide_stem(path)}.*) in "
                f"{args.out}; predict them into different --out folders"
            )
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_model(args.checkpoint).to(device)
    target = _target(args.target, model.config.class_names)
    failed = []
    for path in args.slides:
        progress = _progress_printer(path.name)

        try:
            prediction = predict_slide(
                model,
                path,
                args.out,
                args.methods or ["cam", "gradcam"],
                threshold=0.5 if args.threshold is None else args.threshold,
                thresholds=thresholds,
                corrections=corrections,
                target=target,
                mpp=args.mpp,
                level=args.level,
                tile=args.tile,
                overlap=args.overlap,
                map_downsample=args.map_downsample,
                batch_size=args.batch_size,
                workers=args.workers,
                tissue=args.tissue,
                min_tissue=args.min_tissue,
                resume=not args.restart,
                progress=progress,
                refine=_dense_crf(args),
                precision=args.precision,
                slide_mpp=args.slide_mpp,
            )
        except InputError as exc:
            print(f"\nwsol predict: error: {exc}", file=sys.stderr)
            failed.append(path)
            continue
        result = prediction.result
        if sys.stderr.isatty():
            print(file=sys.stderr)
        print(
            f"{path}: {result.tiles_total} tissue tiles, {result.tiles_run} run "
            f"({result.tiles_per_second:.1f} tiles/s)"
        )
        method_of = {path: method for method, path in prediction.masks.items()}
        for file in prediction.files():
            method = method_of.get(file)
            rule = f"  ({method} >= {prediction.thresholds[method]:g})" if method else ""
            print(f"  {file}{rule}")
        scale_chosen = args.level is not None or args.mpp is not None
        note = _pixel_size_note(
            prediction, args.slide_mpp, None if scale_chosen else model.config.mpp
        )
        if note:
            print(f"  note: {note}")
        if result.no_tissue_found:
            print(
                "  note: no tissue found anywhere (the detector looks for stain; a grayscale "
                "or unstained image has none), so every tile was run"
            )
        elif result.tiles_total == 0:
            print("  note: no tile has enough tissue; --no-tissue runs every tile")
    if failed:
        print(f"wsol predict: {len(failed)} of {len(args.slides)} slide(s) failed", file=sys.stderr)
        return EXIT_INPUT
    return 0


def _predict_from_session(args: argparse.Namespace) -> tuple[dict[str, float], list]:
    """Fill what ``wsol predict`` was not told from the session folder ``args.session``.

    Returns the session's per-method thresholds (none where ``--threshold`` was given)
    and the corrections its masks keep (in its slide's level-0 pixels, so they are only
    laid on that slide).
    """
    from wsol.session import Session

    session = Session.load(args.session)
    state = session.state
    recorded = Path(state.slide) if state.slide else None
    if not args.slides:
        if recorded is None:
            raise InputError(f"{args.session}: the session records no slide; name the slide")
        args.slides = [recorded]
    elif len(args.slides) > 1 or (recorded is not None and args.slides[0].name != recorded.name):
        raise InputError(
            f"{args.session}: its corrections and thresholds belong to its slide "
            f"{recorded.name if recorded else '(none recorded)'}; give that slide alone "
            "(moved is fine) or leave --session out"
        )
    if args.checkpoint is None:
        args.checkpoint = session.model_path()
        if args.checkpoint is None:
            raise InputError(
                f"{args.session}: the session's current model is untrained; give --checkpoint"
            )
    if args.methods is None:
        args.methods = _methods(",".join(state.methods))
    if args.target is None:
        args.target = state.target
    if args.slide_mpp is None:
        args.slide_mpp = state.slide_mpp
    args.dense_crf = args.dense_crf or state.dense_crf
    corrections = []
    if args.no_corrections or not state.masks_keep_corrections:
        why = "" if args.no_corrections else " (the session's masks do not keep them)"
        kept = f"not kept{why}"
    else:
        corrections = session.painted(session.edit_region())
        kept = f"{len(corrections)} painted region(s) kept in the masks"
    names = session.version_names()
    print(f"session {args.session}: model {names[state.current]}, corrections {kept}")
    thresholds = {} if args.threshold is not None else dict(state.thresholds)
    return thresholds, corrections


def _pixel_size_note(prediction, given: float | None, model_mpp: float | None) -> str:
    """What a user should know about the slide's pixel size in a prediction."""
    mpp = prediction.slide_mpp
    if given and prediction.mpp_recorded and mpp != given:
        return f"the slide records {mpp:g} µm/px; --slide-mpp {given:g} was not used"
    if mpp is None and model_mpp:
        return (
            f"the slide records no pixel size: its pixels were read as the model's "
            f"{model_mpp:g} µm (give --slide-mpp if it is another)"
        )
    return ""


def _progress_printer(name: str, unit: str = "tiles"):
    """Progress on one updating line in a terminal, every 10% in a log file."""
    interactive = sys.stderr.isatty()
    shown = [-1]

    def progress(done: int, total: int) -> None:
        if interactive:
            print(f"\r{name}: {done}/{total} {unit}", end="", file=sys.stderr, flush=True)
            return
        decile = 10 * done // max(total, 1)
        if decile > shown[0]:
            shown[0] = decile
            print(f"{name}: {done}/{total} {unit}", file=sys.stderr, flush=True)

    return progress


def _train(args: argparse.Namespace) -> int:
    import signal

    import torch

    from wsol.checkpoint import load_model
    from wsol.data import WSOLDataset
    from wsol.train import TrainConfig, TrainData, train

    if args.cam_method not in _methods("all"):
        raise InputError(f"--cam-method {args.cam_method!r}: not a method")
    if args.check_every is not None and args.check_every < 0:
        raise InputError(f"--check-every {args.check_every}: must be >= 0")
    if args.seconds is not None and args.seconds < 0:
        raise InputError(f"--seconds {args.seconds}: must be >= 0 (0: no limit)")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    out = args.out
    # Always built from --checkpoint: the trainer resumes from --out's saved epoch only
    # when that run started from these same weights and data, with the same settings.
    model = load_model(args.checkpoint).to(device)
    dataset = WSOLDataset(args.dataset, model.config.class_names, model.config.multilabel)
    data = TrainData.from_dataset(
        dataset, args.size or model.config.input_size, masks_as_labels=args.mask_labels
    )
    if args.stage == "guided" and data.corrections is None:
        print(
            "guided: no pixel labels (corrections/ or --mask-labels): image loss only",
            file=sys.stderr,
        )
    config = TrainConfig(
        epochs=args.epochs,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        cam_method=args.cam_method,
        bg_fraction=args.bg_fraction,
        crf_weight=args.crf_weight,
        seed=args.seed,
        augment=not args.no_augment,
        guide_method=args.guide_method,
        guide_weight=args.guide_weight,
        kernel_usage=args.kernel_usage,
        heads=tuple(h.strip() for h in args.heads.split(",") if h.strip()),
        keep_weight=args.keep_weight,
        keep_fg=args.keep_fg,
    )
    if args.check_every is not None:
        config.heads_check_every = args.check_every
    if args.seconds is not None:
        config.heads_seconds = args.seconds or None
    stop = []
    previous = signal.signal(signal.SIGINT, lambda *_: stop.append(True))

    def progress(p) -> None:
        if p.step == p.steps:
            terms = ", ".join(f"{k} {v:.4f}" for k, v in p.losses.items())
            print(f"{p.stage} epoch {p.epoch}/{p.epochs}: {terms}", file=sys.stderr, flush=True)

    try:
        result = train(
            model,
            data,
            args.stage,
            config,
            checkpoint=out,
            resume=not args.restart,
            progress=progress,
            should_stop=lambda: bool(stop),
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    if result.cancelled:
        print(f"stopped; {out} holds epoch {result.epochs_done} - rerun to resume", file=sys.stderr)
        return 130
    if args.half:
        model.save(out, half=True)
    kept = "" if result.kept_step is None else f" (kept step {result.kept_step}: best whole fit)"
    if result.timed_out:
        kept += f" (the --seconds {config.heads_seconds:g} limit ended it early)"
    print(
        f"{args.stage}: {result.epochs_done} epoch(s), {result.steps_done} steps in "
        f"{result.seconds:.1f} s{kept} -> {out}"
    )
    return 0


def _make_benchmark(args: argparse.Namespace) -> int:
    from wsol.benchmark_data import BenchmarkSpec, default_sources, make_benchmark

    backgrounds, lesions = args.background, args.lesion
    if not backgrounds or not lesions:
        # ../shared beside the checkout (or beside the current folder) holds the slides.
        candidates = [Path.cwd().parent / "shared", Path(__file__).resolve().parents[3] / "shared"]
        shared = next((c for c in candidates if c.is_dir()), candidates[0])
        default_bg, default_lesion = default_sources(shared)
        backgrounds, lesions = backgrounds or default_bg, lesions or default_lesion
    train_n, val_n, test_n = args.tiles
    spec = BenchmarkSpec(
        size=args.size,
        downsample=args.downsample,
        train=train_n,
        val=val_n,
        test=test_n,
        seed=args.seed,
        multilabel=args.multilabel,
        downsample_b=args.downsample_b,
    )
    summary = make_benchmark(args.out, backgrounds, lesions, spec, lesions_b=args.lesion_b)
    for split, info in summary["splits"].items():
        if args.multilabel:
            classes = ", ".join(
                f"{name} {c['tiles']} (mean area {c['fraction_mean']:.0%})"
                for name, c in info["classes"].items()
            )
            print(f"{split}: {info['tiles']} tiles, {info['both']} with both; {classes}")
            continue
        print(
            f"{split}: {info['tiles']} tiles, {info['positive']} with lesions "
            f"(mean area {info['object_fraction_mean']:.0%})"
        )
    print(f"wrote {args.out} (preview: {args.out / 'preview.png'})")
    return 0


def _create_model(args: argparse.Namespace) -> int:
    import torch

    from wsol.model import create_model

    names = [n.strip() for n in args.classes.split(",") if n.strip()]
    if len(names) < 2 or len(set(names)) != len(names):
        raise InputError(f"--classes {args.classes!r}: give at least two distinct names")
    pretrained: bool | Path = False
    if args.pretrained == "timm":
        pretrained = True
    elif args.pretrained:
        pretrained = Path(args.pretrained)
    torch.manual_seed(args.seed)
    model = create_model(
        args.backbone,
        len(names),
        pretrained=pretrained,
        class_names=names,
        input_size=args.input_size,
        mpp=args.mpp,
        decoder_channels=[int(c) for c in args.decoder_channels.split(",")],
        multilabel=args.multilabel,
        kernel_usage=args.kernel_usage,
        output_stride=args.output_stride,
        pixel_tap=args.pixel_tap,
    )
    model.save(args.out)
    print(model.summary())
    print(f"wrote {args.out}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    if args.bench == "slide":
        return _bench_slide(args)
    if args.bench == "quality":
        return _bench_quality(args)
    if args.bench == "corrections":
        return _bench_corrections(args)
    if args.bench == "guided":
        return _bench_guided(args)
    if args.bench == "multilabel":
        return _bench_multilabel(args)
    if args.bench == "dense-crf":
        return _bench_dense_crf(args)
    from wsol.bench import bench_cams, markdown_table

    report = bench_cams(
        backbone=args.backbone,
        batch=args.batch,
        size=args.size,
        repeats=args.repeats,
        scorecam_images=args.scorecam_images,
        device=args.device,
        reference=not args.no_reference,
        precision=args.precision,
    )
    print()
    return _finish(args, report, markdown_table(report))


def _bench_quality(args: argparse.Namespace) -> int:
    from wsol.bench_quality import bench_quality, markdown_table
    from wsol.train import TrainConfig

    if args.fcam_seeds not in _methods("all") or args.fcam_seeds == "fcam":
        raise InputError(f"--fcam-seeds {args.fcam_seeds!r}: not a CAM method or pixelcam")
    e_cls, e_pix, e_fcam = args.epochs
    report = bench_quality(
        args.data,
        backbone=args.backbone,
        size=args.size,
        classifier=TrainConfig(epochs=e_cls, batch_size=32, lr=1e-3, seed=args.seed),
        pixelcam=TrainConfig(epochs=e_pix, batch_size=32, lr=1e-4, seed=args.seed),
        fcam=TrainConfig(
            epochs=e_fcam,
            batch_size=32,
            lr=1e-3,
            seed=args.seed,
            bg_fraction=0.5,
            crf_weight=5.0,
            cam_method=args.fcam_seeds,
        ),
        refit=TrainConfig(
            steps=args.pixelcam_refit,
            batch_size=32,
            lr=1e-3,
            seed=args.seed,
            heads=("pixelcam",),
            cam_method="fcam",
            bg_fraction=0.5,
            keep_weight=0.0,  # a refit moves the head to new seeds: nothing to hold
        )
        if args.pixelcam_refit > 0
        else None,
        seed=args.seed,
        pixel_tap=args.pixel_tap,
        checkpoint=args.checkpoint,
        device=args.device,
        log=_log,
    )
    print(f"accuracy {report['accuracy']:.1f}% on {report['test_tiles']} test tiles")
    print(markdown_table(report))
    for method, goal in report["goals"].items():
        print(
            f"{method}: PxAP {goal['pxap_gain']:+.1f} vs the best CAM "
            f"({'met' if goal['pxap_goal_met'] else 'missed'} +15), Dice "
            f"{report['methods'][method]['dice_fg']:.1f} "
            f"({'met' if goal['dice_goal_met'] else 'missed'} 80)"
        )
    if args.json:
        _write_json(args.json, report)
    return 0


def _bench_corrections(args: argparse.Namespace) -> int:
    from wsol.bench_corrections import bench_corrections

    if args.seeds is not None and args.seeds not in _methods("all"):
        raise InputError(f"--seeds {args.seeds!r}: not a method")
    if args.keep is not None and args.keep < 0:
        raise InputError(f"--keep {args.keep}: must be >= 0")
    if args.keep_fg is not None and args.keep_fg < 0:
        raise InputError(f"--keep-fg {args.keep_fg}: must be >= 0")
    if args.focus is not None and not 0 <= args.focus <= 1:
        raise InputError(f"--focus {args.focus}: must be between 0 and 1")
    if args.windows is not None and args.windows < 1:
        raise InputError(f"--windows {args.windows}: must be >= 1")
    if args.check_every is not None and args.check_every < 0:
        raise InputError(f"--check-every {args.check_every}: must be >= 0")
    if args.seconds is not None and args.seconds < 0:
        raise InputError(f"--seconds {args.seconds}: must be >= 0 (0: no limit)")
    if args.repeats < 1:
        raise InputError(f"--repeats {args.repeats}: must be >= 1")
    if args.regions < 1:
        raise InputError(f"--regions {args.regions}: must be >= 1")
    chosen = {
        "steps": args.steps,
        "lr": args.lr,
        "crop": args.crop,
        "keep_weight": args.keep,
        "keep_fg": args.keep_fg,
        "focus": args.focus,
        "windows": args.windows,
        "check_every": args.check_every,
        "seconds": args.seconds,
        "precision": args.precision,
    }
    report = bench_corrections(
        args.data,
        args.checkpoint,
        rounds=args.rounds,
        strokes_per_round=args.strokes,
        regions=args.regions,
        repeats=args.repeats,
        seed_method=args.seeds,
        honour=not args.model_mask,
        reuse=not args.no_reuse,
        device=args.device,
        log=_log,
        **{k: v for k, v in chosen.items() if v is not None},
    )
    for what, key in (("mask", ""), ("head's mask alone", "model_")):
        if what != "mask" and args.model_mask:
            break
        dice = " -> ".join(f"{d:.1f}" for d in report[f"{key}mean_dice"])
        by_seed = ", ".join(f"{g:+.1f}" for g in report[f"{key}gain_by_seed"])
        gain = report[f"{key}gain"]
        print(f"mean Dice by round, {what}: {dice} ({gain:+.1f} points; by seed {by_seed})")
    for label, name in (("fg", "foreground"), ("bg", "background")):
        shares = " / ".join(
            "-" if v is None else f"{100 * v:.0f}%" for v in report["strokes_honoured"][label]
        )
        print(f"{name} stroke pixels the mask agrees with, by round: {shares}")
    settings = report["settings"]
    limit = f", at most {settings['seconds']:g} s" if settings["seconds"] else ""
    print(
        f"round time: median {report['median_round_seconds']:.2f} s, "
        f"max {report['max_round_seconds']:.2f} s "
        f"(up to {settings['steps']} steps{limit}, in {settings['precision_used']}; "
        f"steps taken: median {report['median_round_steps']:g}, "
        f"fewest {report['min_round_steps']})"
    )
    if args.json:
        _write_json(args.json, report)
    return 0


def _bench_dense_crf(args: argparse.Namespace) -> int:
    from wsol.bench_refine import bench_dense_crf, markdown_tables

    report = bench_dense_crf(
        args.data,
        args.checkpoint,
        sizes=[int(s) for s in args.sizes.split(",") if s.strip()],
        repeats=args.repeats,
        device=args.device,
        log=_log,
    )
    return _finish(args, report, markdown_tables(report))


def _bench_multilabel(args: argparse.Namespace) -> int:
    from wsol.bench_multilabel import bench_multilabel, markdown_table

    report = bench_multilabel(
        args.data,
        backbone=args.backbone,
        size=args.size,
        epochs=args.epochs,
        kernel_usage=[float(a) for a in args.kernel_usage.split(",") if a.strip()],
        curves=args.curves,
        seed=args.seed,
        checkpoint=args.checkpoint,
        log=_log,
    )
    return _finish(args, report, markdown_table(report))


def _bench_guided(args: argparse.Namespace) -> int:
    from wsol.bench_guided import bench_guided, markdown_table
    from wsol.train import TrainConfig

    labelled = [int(k) for k in args.labelled.split(",") if k.strip()]
    report = bench_guided(
        args.data,
        args.checkpoint,
        labelled=labelled,
        guided=TrainConfig(epochs=args.epochs, batch_size=32, lr=3e-4, seed=args.seed),
        heads=TrainConfig(
            steps=args.steps,
            batch_size=16,
            lr=3e-4,
            seed=args.seed,
            heads_crop=None,
            bg_fraction=0.5,
            keep_weight=0.0,  # whole masks on a few tiles: no strokes to balance
            crf_weight=5.0,
        ),
        seed=args.seed,
        log=_log,
    )
    print("Dice (fg, %) at each map's best threshold on the test tiles")
    return _finish(args, report, markdown_table(report))


def _bench_slide(args: argparse.Namespace) -> int:
    from wsol.bench_slide import bench_slide

    report = bench_slide(
        args.slide,
        backbone=args.backbone,
        methods=tuple(args.methods),
        tiles=args.tiles,
        repeats=args.repeats,
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
    )
    print(
        f"{report['tiles']} tiles of {report['slide']} ({report['backbone']}, "
        f"{', '.join(report['methods'])}, {report['device']})"
    )
    precision, n = report["precision"], len(report["speedups"])
    print(f"naive loop: {report['naive_tiles_per_s']:.2f} tiles/s (float32)")
    print(f"pipeline:   {report['pipeline_tiles_per_s']:.2f} tiles/s ({precision})")
    if "pipeline_float32_tiles_per_s" in report:
        print(f"pipeline:   {report['pipeline_float32_tiles_per_s']:.2f} tiles/s (float32)")
    print(
        f"model only: {report['model_only_tiles_per_s']:.2f} tiles/s ({precision}, tiles in memory)"
    )
    print(f"speed-up:   {report['speedup_median']:.2f}x (median of {n})")
    if "speedup_float32_median" in report:
        print(
            f"            {report['speedup_float32_median']:.2f}x with the pipeline in float32; "
            f"{precision} alone {report['precision_gain_median']:.2f}x"
        )
        for method, d in report["map_difference"].items():
            print(
                f"            {method}: {precision} vs float32 maps differ by "
                f"{d['mean']:.1e} on average, {d['max']:.1e} at most"
            )
    print(f"pipeline reaches {report['pipeline_over_model_only']:.0%} of the model-only rate")
    if args.json:
        _write_json(args.json, report)
    return 0


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _finish(args: argparse.Namespace, report: dict, table: str) -> int:
    """Print a benchmark's table and write its report where ``--json`` says."""
    print(table)
    if args.json:
        _write_json(args.json, report)
    return 0


def _write_json(path: Path, data: dict) -> None:
    from wsol.atomic import atomic_path

    with atomic_path(path) as tmp:
        # JSON has no NaN: a metric that is undefined (PxAP without any foreground
        # pixel) is written as null, so every JSON reader can open the report.
        tmp.write_text(json.dumps(_finite(data), indent=2, default=str, allow_nan=False) + "\n")
    print(f"wrote {path}", file=sys.stderr)


def _finite(value):
    """``value`` with every non-finite float (NaN, inf) replaced by None."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _version() -> str:
    from wsol import __version__

    return __version__


_COMMANDS = {
    "demo": _demo,
    "cam": _cam,
    "eval": _eval,
    "predict": _predict,
    "train": _train,
    "make-benchmark": _make_benchmark,
    "create-model": _create_model,
    "bench": _bench,
}

if __name__ == "__main__":
    raise SystemExit(main())
