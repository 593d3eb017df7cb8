"""Tiled whole-slide inference streaming into multiscale zarr, and its exports."""

from wsol.infer.grid import TileGrid, make_grid
from wsol.infer.pipeline import InferenceResult, infer_slide, model_fingerprint
from wsol.infer.store import MapStore

__all__ = [
    "InferenceResult",
    "MapStore",
    "TileGrid",
    "infer_slide",
    "make_grid",
    "model_fingerprint",
]
