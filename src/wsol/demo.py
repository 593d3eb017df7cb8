"""``wsol demo``: the model summary and every method's overlay for a sample image, headless."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from wsol.atomic import atomic_path
from wsol.cams import METHODS
from wsol.checkpoint import load_model
from wsol.imageio import read_image
from wsol.infer_image import image_maps
from wsol.model import WSOLModel, create_model
from wsol.overlay import blend
from wsol.samples import sample_path


def demo_model(checkpoint: str | Path | None) -> tuple[WSOLModel, str]:
    """The checkpoint if given; else a seeded, untrained resnet18 (no weights ship yet)."""
    if checkpoint is not None:
        return load_model(checkpoint), f"checkpoint {checkpoint}"
    torch.manual_seed(0)
    model = create_model("resnet18", 2, class_names=["normal", "lesion"], mpp=0.5)
    return (
        model,
        "UNTRAINED resnet18 (random init, seed 0): overlays show the machinery, not tissue",
    )


def run_demo(
    out_dir: str | Path,
    image: str | Path | None = None,
    checkpoint: str | Path | None = None,
    methods: Sequence[str] = METHODS,
    log: Callable[[str], None] = print,
) -> list[Path]:
    """Write one overlay PNG per method and an overview sheet; return their paths."""
    model, origin = demo_model(checkpoint)
    log(model.summary())
    log(f"  weights        {origin}")
    image_path = Path(image) if image is not None else sample_path("he_tile")
    rgb = read_image(image_path)
    start = time.perf_counter()
    result = image_maps(model, rgb, methods)
    elapsed = time.perf_counter() - start
    names = model.config.class_names
    scores = ", ".join(f"{n} {p:.3f}" for n, p in zip(names, result.probabilities, strict=True))
    log(f"\n{image_path.name} ({rgb.shape[1]}x{rgb.shape[0]}): class probabilities {scores}")
    log(f"maps explain class {names[result.target]!r}; {len(methods)} methods in {elapsed:.1f} s")

    out = Path(out_dir)
    written = []
    tiles = [_label(rgb, "image")]
    for method, heatmap in result.maps.items():
        overlay = blend(rgb, heatmap, alpha=0.5)
        path = out / f"{image_path.stem}_{method}.png"
        with atomic_path(path) as tmp:
            Image.fromarray(overlay).save(tmp, format="PNG")
        written.append(path)
        tiles.append(_label(overlay, method))
    sheet = out / f"{image_path.stem}_overview.png"
    with atomic_path(sheet) as tmp:
        Image.fromarray(_grid(tiles, columns=5)).save(tmp, format="PNG")
    written.append(sheet)
    log(f"wrote {len(written)} files to {out}/ (overview: {sheet.name})")
    return written


def _label(rgb: np.ndarray, text: str) -> np.ndarray:
    img = Image.fromarray(rgb)
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, 8 + 7 * len(text), 16), fill=(0, 0, 0))
    draw.text((4, 2), text, fill=(255, 255, 255))
    return np.asarray(img)


def _grid(tiles: list[np.ndarray], columns: int) -> np.ndarray:
    h, w = tiles[0].shape[:2]
    rows = -(-len(tiles) // columns)
    sheet = np.full((rows * h, columns * w, 3), 255, dtype=np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        sheet[r * h : (r + 1) * h, c * w : (c + 1) * w] = tile
    return sheet
