"""The CAM family and the heads' maps: ``wsol.cams.compute(model, images, method)``."""

from wsol.cams.compute import (
    CAM_METHODS,
    HEAD_METHODS,
    METHODS,
    CamResult,
    compute,
    compute_many,
)

__all__ = ["CAM_METHODS", "HEAD_METHODS", "METHODS", "CamResult", "compute", "compute_many"]
