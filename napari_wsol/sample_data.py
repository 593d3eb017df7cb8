"""Sample data contributions: the files of sample_data/ as napari layers."""

from __future__ import annotations

from napari_wsol.reader import SLIDE_KEY, slide_layer_data
from wsol.imageio import read_image
from wsol.samples import SAMPLES, sample_path
from wsol.slide import open_slide


def _layer(key: str) -> list[tuple]:
    sample = SAMPLES[key]
    # The file path lets the app reopen the image (e.g. when a session is restored).
    meta: dict = {"name": key, "rgb": True, "metadata": {SLIDE_KEY: str(sample_path(key))}}
    if sample.mpp is not None:
        # Physical scale: napari's rulers and measurements read in micrometres.
        meta |= {"scale": (sample.mpp, sample.mpp), "units": ("um", "um")}
        meta["metadata"]["mpp"] = sample.mpp
    return [(read_image(sample_path(key)), meta, "image")]


def cmu_small_region() -> list[tuple]:
    """The whole CMU-1-Small-Region.svs slide (Aperio SVS, CC0), read through OpenSlide."""
    return [slide_layer_data(open_slide(sample_path("cmu_small_region")))]


def he_tile() -> list[tuple]:
    """H&E tile cut from CMU-1-Small-Region.svs (CC0), 0.499 µm/px."""
    return _layer("he_tile")


def chelsea() -> list[tuple]:
    """A natural image (scikit-image's Chelsea, CC0)."""
    return _layer("chelsea")
