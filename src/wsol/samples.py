"""The sample images shipped with napari-wsol (see sample_data/README.md)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SampleImage:
    file: str
    title: str
    mpp: float | None  # microns per pixel; None for natural images


SAMPLES = {
    "cmu_small_region": SampleImage(
        "CMU-1-Small-Region.svs", "H&E slide (CMU-1-Small-Region.svs, Aperio, 0.5 µm/px)", 0.499
    ),
    "he_tile": SampleImage("he_tile.png", "H&E tile (CMU-1-Small-Region, 0.5 µm/px)", 0.499),
    "chelsea": SampleImage("chelsea.png", "Natural image (Chelsea the cat)", None),
}


def sample_dir() -> Path:
    """Folder of the sample files: inside the installed wheel, or the repository's."""
    packaged = Path(__file__).parent / "_sample_data"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "sample_data"


#: The model shipped for the demo (see sample_data/README.md for how it was trained).
SAMPLE_MODEL = "sample_model.safetensors"


def sample_model_path() -> Path | None:
    """The shipped sample model, or None if this installation lacks it."""
    path = sample_dir() / SAMPLE_MODEL
    return path if path.is_file() else None


def sample_path(name: str) -> Path:
    """Path of a sample image by key of :data:`SAMPLES`."""
    if name not in SAMPLES:
        raise KeyError(f"unknown sample {name!r}; choose from {', '.join(SAMPLES)}")
    path = sample_dir() / SAMPLES[name].file
    if not path.is_file():
        raise FileNotFoundError(f"{path}: sample file missing from this installation")
    return path
