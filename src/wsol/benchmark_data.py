"""``wsol make-benchmark``: a WSOL dataset with pixel ground truth, made of real H&E.

Background tiles are tissue cut from the *background* slides; positive tiles get 1-3
smooth, irregular "lesions" whose pixels are tissue cut from the *lesion* slides (another
tissue type), blended at the border. The lesion mask is the ground truth; negative tiles
have none. A stain jitter on the whole tile keeps colour alone from giving the answer.
Train, val and test tiles come from disjoint stripes of every slide's tissue.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage

from wsol.atomic import atomic_path
from wsol.errors import InputError
from wsol.slide import Slide, open_slide
from wsol.tissue import TissueMask, detect_tissue
from wsol.train.augment import stain_jitter

SPLITS = ("train", "val", "test")
#: How stripes of tissue are dealt to the splits, in turn (3 : 1 : 1).
STRIPE_SPLITS = ("train", "val", "test", "train", "train")


@dataclass
class BenchmarkSpec:
    size: int = 128  # tile side, pixels
    downsample: float = 2.0  # level-0 pixels per tile pixel
    train: int = 400
    val: int = 100
    test: int = 200
    positive_fraction: float = 0.5
    object_fraction: tuple[float, float] = (0.05, 0.6)  # of the tile, all objects together
    objects: tuple[int, int] = (1, 3)
    blend_sigma: float = 1.5  # pixels of border blending
    jitter: float = 0.1  # stain jitter strength
    min_tissue: float = 0.9
    seed: int = 0


class _Source:
    """Tissue crops of one slide, from the band of its tissue that belongs to a split."""

    def __init__(self, path: Path, spec: BenchmarkSpec) -> None:
        self.slide: Slide = open_slide(path)
        self.spec = spec
        self.tissue: TissueMask = detect_tissue(self.slide)
        ys, xs = np.nonzero(self.tissue.mask)
        if len(ys) == 0:
            raise InputError(f"{path}: no tissue found to cut tiles from")
        # Stripes across the tissue's longer extent, each holding an equal share of tissue
        # pixels, dealt to the splits in turn: the splits never share a pixel, yet each
        # sees most parts of the slide.
        self.axis = 0 if np.ptp(ys) >= np.ptp(xs) else 1
        coords = np.sort(ys if self.axis == 0 else xs) * self.tissue.downsample
        side = spec.size * spec.downsample
        count = max(1, min(len(STRIPE_SPLITS), int(np.ptp(coords) // (2 * side))))
        deal = [STRIPE_SPLITS[i % len(STRIPE_SPLITS)] for i in range(count)]
        edges = [coords[min(len(coords) - 1, i * len(coords) // count)] for i in range(count)]
        edges.append(self.slide.shape[self.axis])
        edges[0] = 0
        self.stripes = {
            s: [(edges[i], edges[i + 1]) for i in range(count) if deal[i] == s] for s in SPLITS
        }
        if not all(self.stripes.values()):
            raise InputError(f"{path}: too little tissue to cut disjoint train/val/test regions")

    def crop(self, split: str, rng: np.random.Generator) -> np.ndarray:
        spec = self.spec
        side = spec.size * spec.downsample  # level-0 pixels
        height, width = self.slide.shape
        for _ in range(50):  # 50 rounds of 64 candidate boxes
            lo, hi = self.stripes[split][rng.integers(len(self.stripes[split]))]
            along = rng.uniform(lo, max(lo, hi - side), 64)
            across = rng.uniform(0, (width if self.axis == 0 else height) - side, 64)
            y, x = (along, across) if self.axis == 0 else (across, along)
            boxes = np.stack([y, x, np.full(64, side), np.full(64, side)], axis=1)
            ok = np.flatnonzero(self.tissue.box_fractions(boxes) >= spec.min_tissue)
            if len(ok):
                return self._read(y[ok[0]], x[ok[0]], side)
        raise InputError(f"{self.slide.path}: no {split} tile with {spec.min_tissue:.0%} tissue")

    def _read(self, y: float, x: float, side: float) -> np.ndarray:
        level = self.slide.best_level(self.spec.downsample)
        ds = self.slide.levels[level].downsample
        n = round(side / ds)
        pixels = self.slide.read_region(level, round(y / ds), round(x / ds), n, n)
        if n != self.spec.size:
            t = torch.from_numpy(pixels).permute(2, 0, 1)[None].float()
            t = F.interpolate(
                t, size=(self.spec.size,) * 2, mode="bilinear", antialias=True, align_corners=False
            )
            pixels = t[0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy()
        return pixels


def lesion_mask(size: int, rng: np.random.Generator, fraction: float, count: int) -> np.ndarray:
    """``count`` smooth irregular blobs covering about ``fraction`` of a square tile.

    Each blob is a star-shaped region whose radius wobbles with a few random harmonics;
    their sizes share one scale, chosen so that the union covers the target area.
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    # A pixel is inside a blob when its distance to the centre, over the blob's wobbling
    # radius profile, is below a common scale; the scale giving the target area is then
    # simply a quantile of the smallest such ratio.
    ratio = np.full((size, size), np.inf, np.float32)
    for _ in range(count):
        cy, cx = rng.uniform(0.2, 0.8, 2) * size
        k = np.arange(2, 6)
        amp, phase = rng.uniform(0, 0.18, 4), rng.uniform(0, 2 * np.pi, 4)
        weight = rng.uniform(0.6, 1.0)
        theta = np.arctan2(yy - cy, xx - cx)[..., None]
        profile = weight * (1 + (amp * np.cos(k * theta + phase)).sum(-1))
        ratio = np.minimum(ratio, np.hypot(yy - cy, xx - cx) / profile)
    return ratio < np.quantile(ratio, fraction)


def make_benchmark(
    out: str | Path,
    backgrounds: list[str | Path],
    lesions: list[str | Path],
    spec: BenchmarkSpec | None = None,
) -> dict:
    """Write ``out/{train,val,test}`` datasets (labels.csv, images, masks/) and a preview.

    Returns the summary also written to ``out/benchmark.json``.
    """
    spec = spec or BenchmarkSpec()
    out = Path(out)
    if not backgrounds or not lesions:
        raise InputError("give at least one background and one lesion source")
    bg_sources = [_Source(Path(p), spec) for p in backgrounds]
    lesion_sources = [_Source(Path(p), spec) for p in lesions]
    rng = np.random.default_rng(spec.seed)
    gen = torch.Generator().manual_seed(spec.seed)
    summary: dict = {
        "spec": asdict(spec),
        "backgrounds": [str(p) for p in backgrounds],
        "lesions": [str(p) for p in lesions],
        "splits": {},
    }
    preview = []
    for split in SPLITS:
        folder = out / split
        (folder / "masks").mkdir(parents=True, exist_ok=True)
        rows, fractions = [], []
        for i in range(getattr(spec, split)):
            tile = bg_sources[rng.integers(len(bg_sources))].crop(split, rng).astype(np.float32)
            mask = np.zeros((spec.size, spec.size), bool)
            positive = rng.random() < spec.positive_fraction
            if positive:
                fraction = rng.uniform(*spec.object_fraction)
                count = int(rng.integers(spec.objects[0], spec.objects[1] + 1))
                mask = lesion_mask(spec.size, rng, fraction, count)
                texture = lesion_sources[rng.integers(len(lesion_sources))].crop(split, rng)
                alpha = ndimage.gaussian_filter(mask.astype(np.float32), spec.blend_sigma)
                tile = tile * (1 - alpha[..., None]) + texture.astype(np.float32) * alpha[..., None]
                mask = alpha >= 0.5
                fractions.append(float(mask.mean()))
            t = torch.from_numpy(tile / 255.0).permute(2, 0, 1)[None].float()
            t = stain_jitter(t, spec.jitter, gen)[0]
            image = (t.permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8)
            name = f"{split}_{i:04d}.png"
            Image.fromarray(image).save(folder / name)
            Image.fromarray(mask.astype(np.uint8) * 255).save(folder / "masks" / name)
            rows.append((name, "lesion" if positive else "normal"))
            if split == "test" and positive and len(preview) < 8:
                preview.append((image, mask))
        with atomic_path(folder / "labels.csv") as tmp, open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["image", "label"])
            writer.writerows(rows)
        summary["splits"][split] = {
            "tiles": len(rows),
            "positive": sum(r[1] == "lesion" for r in rows),
            "object_fraction_mean": float(np.mean(fractions)) if fractions else 0.0,
        }
    if preview:
        _write_preview(out / "preview.png", preview)
    with atomic_path(out / "benchmark.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _write_preview(path: Path, tiles: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """Tiles on top, the same tiles with the ground-truth outline below."""
    size = tiles[0][0].shape[0]
    cols = len(tiles)
    sheet = np.full((2 * size + 4, cols * (size + 4), 3), 255, np.uint8)
    for i, (image, mask) in enumerate(tiles):
        x = i * (size + 4)
        sheet[:size, x : x + size] = image
        edge = mask ^ ndimage.binary_erosion(mask, iterations=1)
        outlined = image.copy()
        outlined[edge] = (0, 200, 0)
        sheet[size + 4 :, x : x + size] = outlined
    Image.fromarray(sheet).save(path)


def default_sources(shared: Path) -> tuple[list[Path], list[Path]]:
    """Background and lesion slides of ``../shared/data/wsi``: skin (CMU) and carcinoma."""
    folder = shared / "data" / "wsi"
    background = sorted(folder.glob("cmu-*.svs"))
    lesion = sorted(folder.glob("tcga-*.svs"))
    if not background or not lesion:
        raise InputError(
            f"{folder}: the default slides are missing; give --background and --lesion"
        )
    return background, lesion


__all__ = ["BenchmarkSpec", "default_sources", "lesion_mask", "make_benchmark"]
