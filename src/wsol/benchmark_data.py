"""``wsol make-benchmark``: a WSOL dataset with pixel ground truth, made of real H&E.

Background tiles are tissue cut from the *background* slides; positive tiles get 1-3
smooth, irregular "lesions" whose pixels are tissue cut from the *lesion* slides (another
tissue type), blended at the border. The lesion mask is the ground truth; negative tiles
have none. A stain jitter on the whole tile keeps colour alone from giving the answer.
Train, val and test tiles come from disjoint stripes of every slide's tissue.

The multi-label variant (``BenchmarkSpec.multilabel``) has two lesion classes that differ
in texture: ``lesion_a`` is lesion tissue at ``downsample``, ``lesion_b`` lesion tissue at
the coarser ``downsample_b`` (by default the same carcinoma at lower magnification, so its
nuclei are smaller and denser). Every tile holds one or both classes, in disjoint blobs,
with per-class masks in ``masks/<class>/`` beside the union in ``masks/``.
"""

from __future__ import annotations

import csv
import json
import math
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
#: The label of positive tiles in the single-label benchmark, and of negative ones.
LESION, NORMAL = "lesion", "normal"
#: The two classes of the multi-label benchmark, in label order.
LESION_CLASSES = ("lesion_a", "lesion_b")
#: Ground-truth outline colours of the preview.
OUTLINE = {LESION: (0, 200, 0), "lesion_a": (0, 200, 0), "lesion_b": (255, 200, 0)}


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
    # The multi-label variant; the fields below matter only when it is on.
    multilabel: bool = False
    # Class b's level-0 pixels per tile pixel. 8 (4x class a) would leave the default
    # TCGA slide too little tissue for three disjoint stripes of 128-px tiles; 5.75 is
    # the limit there, 5.5 keeps a margin.
    downsample_b: float = 5.5
    class_mix: tuple[float, float, float] = (0.5, 0.25, 0.25)  # P(both), P(a only), P(b only)
    class_fraction: tuple[float, float] = (0.08, 0.35)  # of the tile, per present class
    class_objects: tuple[int, int] = (1, 2)  # blobs per present class


#: Fields left out of single-label summaries, which thus stay as they were before them.
_MULTILABEL_FIELDS = ("multilabel", "downsample_b", "class_mix", "class_fraction", "class_objects")


class _Source:
    """Tissue crops of one slide, from the band of its tissue that belongs to a split.

    ``stripe_side`` (level-0 pixels, default the tile side at ``spec.downsample``) sizes
    the stripes: give the largest tile side the slide is cut at, so that crops at several
    magnifications share one set of stripes and the splits stay disjoint across them.
    """

    def __init__(self, path: Path, spec: BenchmarkSpec, stripe_side: float | None = None) -> None:
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
        side = stripe_side or spec.size * spec.downsample
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

    def crop(
        self, split: str, rng: np.random.Generator, downsample: float | None = None
    ) -> np.ndarray:
        """A ``size x size`` RGB tile of ``split``'s tissue, at ``spec.downsample`` or this."""
        spec = self.spec
        downsample = downsample or spec.downsample
        side = spec.size * downsample  # level-0 pixels
        height, width = self.slide.shape
        for _ in range(50):  # 50 rounds of 64 candidate boxes
            lo, hi = self.stripes[split][rng.integers(len(self.stripes[split]))]
            along = rng.uniform(lo, max(lo, hi - side), 64)
            across = rng.uniform(0, (width if self.axis == 0 else height) - side, 64)
            y, x = (along, across) if self.axis == 0 else (across, along)
            boxes = np.stack([y, x, np.full(64, side), np.full(64, side)], axis=1)
            ok = np.flatnonzero(self.tissue.box_fractions(boxes) >= spec.min_tissue)
            if len(ok):
                return self._read(y[ok[0]], x[ok[0]], side, downsample)
        raise InputError(f"{self.slide.path}: no {split} tile with {spec.min_tissue:.0%} tissue")

    def _read(self, y: float, x: float, side: float, downsample: float) -> np.ndarray:
        level = self.slide.best_level(downsample)
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


def _blob_field(
    size: int,
    rng: np.random.Generator,
    count: int,
    low: tuple[float, float] = (0.2, 0.2),
    high: tuple[float, float] = (0.8, 0.8),
) -> np.ndarray:
    """Per pixel, the distance to the nearest of ``count`` blobs over its radius profile.

    Each blob is a star-shaped region whose radius wobbles with a few random harmonics;
    its centre is uniform in the box ``low``-``high`` (fractions of the tile, (y, x)).
    Thresholding the field at any level gives blobs of one common scale.
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    ratio = np.full((size, size), np.inf, np.float32)
    for _ in range(count):
        cy, cx = rng.uniform(low, high) * size
        k = np.arange(2, 6)
        amp, phase = rng.uniform(0, 0.18, 4), rng.uniform(0, 2 * np.pi, 4)
        weight = rng.uniform(0.6, 1.0)
        theta = np.arctan2(yy - cy, xx - cx)[..., None]
        profile = weight * (1 + (amp * np.cos(k * theta + phase)).sum(-1))
        ratio = np.minimum(ratio, np.hypot(yy - cy, xx - cx) / profile)
    return ratio


def lesion_mask(size: int, rng: np.random.Generator, fraction: float, count: int) -> np.ndarray:
    """``count`` smooth irregular blobs covering about ``fraction`` of a square tile.

    Each blob is a star-shaped region whose radius wobbles with a few random harmonics;
    their sizes share one scale, chosen so that the union covers the target area.
    """
    # The scale giving the target area is simply a quantile of the blob field.
    ratio = _blob_field(size, rng, count)
    return ratio < np.quantile(ratio, fraction)


def disjoint_lesion_masks(
    size: int,
    rng: np.random.Generator,
    fractions: tuple[float, float],
    counts: tuple[int, int],
    gap: int = 3,
) -> tuple[np.ndarray, np.ndarray]:
    """Blob masks of two classes that never touch, each covering about its ``fraction``.

    Parameters
    ----------
    size : int
        Tile side, pixels.
    rng : numpy.random.Generator
        The source of the blobs' shapes and places.
    fractions : (float, float)
        Target area of each class, as a fraction of the tile; best below 0.5 when both
        classes are present, as each then has about half of the tile.
    counts : (int, int)
        Blobs of each class; 0 leaves that class's mask empty.
    gap : int
        Pixels kept free between the two classes.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``bool [size, size]`` masks of class a and class b, disjoint.
    """
    masks = [np.zeros((size, size), bool) for _ in range(2)]
    present = [c for c in range(2) if counts[c] > 0]
    if len(present) == 1:
        c = present[0]
        masks[c] = lesion_mask(size, rng, fractions[c], counts[c])
        return masks[0], masks[1]
    if not present:
        return masks[0], masks[1]
    # Both classes: their blob centres lie on opposite halves of the tile (across a random
    # axis, a random side each), so the classes sit side by side rather than one inside
    # the other.
    axis, a_first = int(rng.integers(2)), rng.random() < 0.5
    boxes = [((0.15, 0.4), (0.6, 0.85))[i if a_first else 1 - i] for i in range(2)]
    field = []
    for c in range(2):
        low, high = [0.2, 0.2], [0.8, 0.8]
        low[axis], high[axis] = boxes[c]
        field.append(_blob_field(size, rng, counts[c], (low[0], low[1]), (high[0], high[1])))
    # Where the two would overlap, a pixel goes to the class it lies deeper in, measured
    # against each class's own blob size (as if alone): contacts then curve around the
    # smaller blob like two lesions pressed together, rather than cutting both straight.
    # Each class grows back its area inside its own territory, and b keeps ``gap`` pixels
    # off a so that the blended borders of the two never mix.
    depth = [f / np.quantile(f, fraction) for f, fraction in zip(field, fractions, strict=True)]
    territory_a = depth[0] <= depth[1]
    masks[0] = _grow(field[0], territory_a, fractions[0])
    masks[1] = _grow(field[1], ~territory_a & ~_dilate(masks[0], gap), fractions[1])
    return masks[0], masks[1]


def _grow(field: np.ndarray, allowed: np.ndarray, fraction: float) -> np.ndarray:
    """The pixels of ``allowed`` lowest in ``field``, ``fraction`` of the tile (or all)."""
    values = field[allowed]
    share = fraction * field.size / max(1, len(values))
    if share >= 1:
        return allowed.copy()
    return allowed & (field < np.quantile(values, share))


def _dilate(mask: np.ndarray, pixels: int) -> np.ndarray:
    return ndimage.binary_dilation(mask, iterations=pixels) if pixels > 0 else mask


def _blend(
    tile: np.ndarray, masks: list[np.ndarray], textures: list[np.ndarray], sigma: float
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Paste each texture into ``tile`` (float RGB) over its mask, with soft borders.

    Returns the tile and the masks as they look after blending: the pixels at least half
    made of a texture, each given to the texture that weighs most there.
    """
    alphas = [ndimage.gaussian_filter(m.astype(np.float32), sigma) for m in masks]
    # The masks are disjoint, so their blurs sum to at most 1 and the background keeps
    # the rest.
    total = np.sum(alphas, axis=0)
    out = tile * (1 - total[..., None])
    for texture, alpha in zip(textures, alphas, strict=True):
        out = out + texture.astype(np.float32) * alpha[..., None]
    owner = np.argmax(alphas, axis=0)
    return out, [(owner == i) & (alpha >= 0.5) for i, alpha in enumerate(alphas)]


def _check_multilabel(spec: BenchmarkSpec) -> None:
    mix = np.asarray(spec.class_mix, float)
    if len(mix) != 3 or (mix < 0).any() or not math.isclose(mix.sum(), 1, abs_tol=1e-6):
        raise InputError(f"class_mix {spec.class_mix}: give P(both), P(a only), P(b only)")
    lo, hi = spec.class_fraction
    if not 0 < lo <= hi < 1:
        raise InputError(f"class_fraction {spec.class_fraction}: need 0 < low <= high < 1")
    if not 1 <= spec.class_objects[0] <= spec.class_objects[1]:
        raise InputError(f"class_objects {spec.class_objects}: need 1 <= low <= high")


def make_benchmark(
    out: str | Path,
    backgrounds: list[str | Path],
    lesions: list[str | Path],
    spec: BenchmarkSpec | None = None,
    lesions_b: list[str | Path] | None = None,
) -> dict:
    """Write ``out/{train,val,test}`` datasets (labels.csv, images, masks/) and a preview.

    Parameters
    ----------
    out : path
        The benchmark folder.
    backgrounds, lesions : list of path
        Slides of background tissue, and of lesion tissue (class ``lesion_a`` when
        multi-label).
    spec : BenchmarkSpec, optional
        Sizes, counts and randomness; ``spec.multilabel`` picks the two-class variant.
    lesions_b : list of path, optional
        Slides of class ``lesion_b``, read at ``spec.downsample_b`` (multi-label only;
        default: ``lesions``).

    Returns
    -------
    dict
        The summary also written to ``out/benchmark.json``.
    """
    spec = spec or BenchmarkSpec()
    out = Path(out)
    lesions_b = list(lesions if lesions_b is None else lesions_b)
    if not backgrounds or not lesions or (spec.multilabel and not lesions_b):
        raise InputError("give at least one background and one lesion source")
    if spec.multilabel:
        _check_multilabel(spec)
    roles = [(backgrounds, spec.downsample), (lesions, spec.downsample)]
    if spec.multilabel:
        roles.append((lesions_b, spec.downsample_b))
    # One source per slide, its stripes sized for the largest tile cut from it.
    sides: dict[Path, float] = {}
    for paths, downsample in roles:
        for p in map(Path, paths):
            sides[p] = max(sides.get(p, 0.0), spec.size * downsample)
    opened = {p: _Source(p, spec, side) for p, side in sides.items()}
    bg_sources = [opened[Path(p)] for p in backgrounds]
    a_sources = [opened[Path(p)] for p in lesions]
    b_sources = [opened[Path(p)] for p in lesions_b] if spec.multilabel else []
    rng = np.random.default_rng(spec.seed)
    gen = torch.Generator().manual_seed(spec.seed)
    summary: dict = {
        # The multi-label fields mean nothing to a single-label benchmark.
        "spec": {
            k: v for k, v in asdict(spec).items() if spec.multilabel or k not in _MULTILABEL_FIELDS
        },
        "backgrounds": [str(p) for p in backgrounds],
        "lesions": [str(p) for p in lesions],
    }
    if spec.multilabel:
        summary["lesions_b"] = [str(p) for p in lesions_b]
    summary["splits"] = {}
    preview = []
    for split in SPLITS:
        folder = out / split
        for sub in LESION_CLASSES if spec.multilabel else ("",):
            (folder / "masks" / sub).mkdir(parents=True, exist_ok=True)
        rows, fractions = [], []
        for i in range(getattr(spec, split)):
            tile = bg_sources[rng.integers(len(bg_sources))].crop(split, rng).astype(np.float32)
            if spec.multilabel:
                tile, masks = _two_class_tile(tile, split, rng, spec, a_sources, b_sources)
            else:
                tile, masks = _lesion_tile(tile, split, rng, spec, a_sources)
            image = _stain(tile, spec.jitter, gen)
            name = f"{split}_{i:04d}.png"
            _write_tile(folder, name, image, masks, spec.multilabel)
            rows.append((name, ";".join(sorted(masks)) or NORMAL))
            fractions.append({c: float(m.mean()) for c, m in masks.items()})
            if split == "test" and masks and len(preview) < 8:
                preview.append((image, [(masks[c], OUTLINE[c]) for c in sorted(masks)]))
        with atomic_path(folder / "labels.csv") as tmp, open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["image", "label"])
            writer.writerows(rows)
        summary["splits"][split] = _split_summary(fractions, spec.multilabel)
    if preview:
        _write_preview(out / "preview.png", preview)
    with atomic_path(out / "benchmark.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _lesion_tile(
    tile: np.ndarray,
    split: str,
    rng: np.random.Generator,
    spec: BenchmarkSpec,
    sources: list[_Source],
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A single-label tile: with ``positive_fraction``, lesion blobs pasted into it.

    Returns the tile and ``{"lesion": mask}``, or ``{}`` for a negative tile.
    """
    if not rng.random() < spec.positive_fraction:
        return tile, {}
    fraction = rng.uniform(*spec.object_fraction)
    count = int(rng.integers(spec.objects[0], spec.objects[1] + 1))
    mask = lesion_mask(spec.size, rng, fraction, count)
    texture = sources[rng.integers(len(sources))].crop(split, rng)
    tile, (mask,) = _blend(tile, [mask], [texture], spec.blend_sigma)
    return tile, {LESION: mask}


def _two_class_tile(
    tile: np.ndarray,
    split: str,
    rng: np.random.Generator,
    spec: BenchmarkSpec,
    a_sources: list[_Source],
    b_sources: list[_Source],
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A multi-label tile: blobs of one or both classes, as ``class_mix`` says.

    Returns the tile and a mask per present class (a pixel belongs to one class at most).
    """
    both, a_only, _ = spec.class_mix
    draw = rng.random()
    if draw < both:
        present = (True, True)
    elif draw < both + a_only:
        present = (True, False)
    else:
        present = (False, True)
    fractions = [float(rng.uniform(*spec.class_fraction)) if p else 0.0 for p in present]
    lo, hi = spec.class_objects
    counts = [int(rng.integers(lo, hi + 1)) if p else 0 for p in present]
    # About two blur widths between the classes, so that no pixel blends both textures.
    gap = math.ceil(2 * spec.blend_sigma)
    masks = disjoint_lesion_masks(
        spec.size, rng, (fractions[0], fractions[1]), (counts[0], counts[1]), gap
    )
    kinds = ((a_sources, spec.downsample), (b_sources, spec.downsample_b))
    names, pasted, textures = [], [], []
    for name, p, mask, (sources, downsample) in zip(
        LESION_CLASSES, present, masks, kinds, strict=True
    ):
        if p:
            names.append(name)
            pasted.append(mask)
            textures.append(sources[rng.integers(len(sources))].crop(split, rng, downsample))
    tile, blended = _blend(tile, pasted, textures, spec.blend_sigma)
    return tile, dict(zip(names, blended, strict=True))


def _stain(tile: np.ndarray, strength: float, gen: torch.Generator) -> np.ndarray:
    """Stain-jitter a float RGB tile (0-255) into uint8."""
    t = torch.from_numpy(tile / 255.0).permute(2, 0, 1)[None].float()
    t = stain_jitter(t, strength, gen)[0]
    return (t.permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8)


def _write_tile(
    folder: Path, name: str, image: np.ndarray, masks: dict[str, np.ndarray], multilabel: bool
) -> None:
    """The image, the union mask in ``masks/`` and, multi-label, one mask per class."""
    Image.fromarray(image).save(folder / name)
    union = np.zeros(image.shape[:2], bool)
    for mask in masks.values():
        union |= mask
    Image.fromarray(union.astype(np.uint8) * 255).save(folder / "masks" / name)
    if multilabel:
        for cls in LESION_CLASSES:  # absent classes too: all-zero is ground truth as well
            mask = masks.get(cls, np.zeros_like(union))
            Image.fromarray(mask.astype(np.uint8) * 255).save(folder / "masks" / cls / name)


def _split_summary(fractions: list[dict[str, float]], multilabel: bool) -> dict:
    """Tile counts and mean lesion areas of one split, from each tile's class fractions."""

    def mean(values: list[float]) -> float:
        return float(np.mean(values)) if values else 0.0

    if not multilabel:
        positive = [f[LESION] for f in fractions if LESION in f]
        return {
            "tiles": len(fractions),
            "positive": len(positive),
            "object_fraction_mean": mean(positive),
        }
    return {
        "tiles": len(fractions),
        "both": sum(len(f) == len(LESION_CLASSES) for f in fractions),
        "classes": {
            c: {
                "tiles": sum(c in f for f in fractions),
                "fraction_mean": mean([f[c] for f in fractions if c in f]),
            }
            for c in LESION_CLASSES
        },
    }


def _write_preview(
    path: Path, tiles: list[tuple[np.ndarray, list[tuple[np.ndarray, tuple[int, int, int]]]]]
) -> None:
    """Tiles on top, the same tiles with each ground-truth mask outlined in its colour below."""
    size = tiles[0][0].shape[0]
    cols = len(tiles)
    sheet = np.full((2 * size + 4, cols * (size + 4), 3), 255, np.uint8)
    for i, (image, outlines) in enumerate(tiles):
        x = i * (size + 4)
        sheet[:size, x : x + size] = image
        outlined = image.copy()
        for mask, colour in outlines:
            outlined[mask ^ ndimage.binary_erosion(mask, iterations=1)] = colour
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


__all__ = [
    "LESION_CLASSES",
    "BenchmarkSpec",
    "default_sources",
    "disjoint_lesion_masks",
    "lesion_mask",
    "make_benchmark",
]
