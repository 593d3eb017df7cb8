"""Errors the engine raises for bad input; each message names the file and the problem."""

from __future__ import annotations

from pathlib import Path


class WSOLError(Exception):
    """Base class of napari-wsol's own errors."""


class InputError(WSOLError, ValueError):
    """A file or argument given by the user cannot be used."""


class CheckpointError(InputError):
    """A file is not a usable napari-wsol checkpoint."""


class ImageReadError(InputError):
    """An image or mask file cannot be read."""


class DatasetError(InputError):
    """A dataset folder, its labels.csv or its masks are inconsistent."""


class PretrainedWeightsError(WSOLError, RuntimeError):
    """Pretrained encoder weights could not be fetched or read."""


def require_file(path: Path, what: str, error: type[InputError] = InputError) -> Path:
    """Return ``path`` if it is a non-empty file; otherwise raise ``error`` naming it."""
    if not path.exists():
        raise error(f"{path}: {what} not found")
    if path.is_dir():
        raise error(f"{path}: is a directory, expected {what}")
    if path.stat().st_size == 0:
        raise error(f"{path}: empty file")
    return path


class SlideError(InputError):
    """A slide or image file cannot be opened or read."""
