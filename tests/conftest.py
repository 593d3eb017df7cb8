from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

import wsol

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def display() -> None:
    """Skip GUI tests without an X server; pytest-xvfb starts one when Xvfb is installed.

    Checked at run time: pytest-xvfb sets DISPLAY after this conftest is imported.
    """
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        pytest.skip("no display: install Xvfb (apt-get install xvfb) for the GUI tests")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def resnet18() -> wsol.WSOLModel:
    torch.manual_seed(0)
    return wsol.create_model("resnet18", 2, class_names=["normal", "lesion"])


@pytest.fixture(scope="session")
def he_tile() -> np.ndarray:
    from wsol.imageio import read_image
    from wsol.samples import sample_path

    return read_image(sample_path("he_tile"))


WSI_DIR = REPO.parent / "shared" / "data" / "wsi"
REAL_SLIDES = sorted(WSI_DIR.glob("*.svs")) if WSI_DIR.is_dir() else []


def real_slide(name: str) -> Path:
    """A slide from ../shared/data/wsi, or skip the test when the folder is absent."""
    path = WSI_DIR / name
    if not path.exists():
        pytest.skip(f"{path} not available (../shared is not beside this checkout)")
    return path


@pytest.fixture(scope="session")
def synthetic_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1500 x 2100 three-level OME-TIFF at 0.25 µm/px with 30% tissue."""
    from wsol.synthetic import write_synthetic_slide

    path = tmp_path_factory.mktemp("slides") / "synthetic.ome.tif"
    return write_synthetic_slide(path, (1500, 2100), tile=256, feature=500, tissue_fraction=0.3)
