"""Sample data contributions: images from sample_data/ as napari layers."""

from __future__ import annotations

from wsol.imageio import read_image
from wsol.samples import SAMPLES, sample_path


def _layer(key: str) -> list[tuple]:
    sample = SAMPLES[key]
    meta: dict = {"name": key, "rgb": True, "metadata": {"path": str(sample_path(key))}}
    if sample.mpp is not None:
        # Physical scale: napari's rulers and measurements read in micrometres.
        meta |= {"scale": (sample.mpp, sample.mpp), "units": ("um", "um")}
        meta["metadata"]["mpp"] = sample.mpp
    return [(read_image(sample_path(key)), meta, "image")]


def he_tile() -> list[tuple]:
    """H&E tile cut from CMU-1-Small-Region.svs (CC0), 0.499 µm/px."""
    return _layer("he_tile")


def chelsea() -> list[tuple]:
    """A natural image (scikit-image's Chelsea, CC0)."""
    return _layer("chelsea")
