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
