"""Writer contribution: a Labels layer as (pyramidal OME-)TIFF or QuPath GeoJSON.

GeoJSON coordinates are level-0 slide pixels, QuPath's image coordinates: the layer's
world position (scale and translate, in µm for slides) divided by the slide's pixel
size, which the app's layers carry in ``metadata["slide_mpp"]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from wsol.infer.export import write_labels_geojson, write_labels_tiff


def write_labels(path: str, data, meta: dict) -> list[str]:
    """napari's single-layer writer hook for Labels layers."""
    target = Path(path)
    metadata = meta.get("metadata") or {}
    scale = np.asarray(meta.get("scale", (1.0, 1.0)), dtype=float)[-2:]
    translate = np.asarray(meta.get("translate", (0.0, 0.0)), dtype=float)[-2:]
    # A multiscale layer's data reaches the hook as napari's MultiScaleData (a Sequence
    # of levels), and np.asarray of that is its coarsest level, not its finest.
    levels = list(data) if isinstance(data, Sequence) else [data]
    name = target.name.lower()
    if name.endswith(".geojson") or name.endswith(".json"):
        slide_mpp = metadata.get("slide_mpp") or 1.0
        # napari places pixel centres at index * scale + translate; a pixel's corner is
        # half a pixel before that.
        corner = (translate - scale / 2) / slide_mpp
        names = {int(k): v for k, v in (metadata.get("label_names") or {}).items()}
        write_labels_geojson(
            np.asarray(levels[0]),
            target,
            scale=float(scale[0] / slide_mpp),
            offset=(float(corner[0]), float(corner[1])),
            names=names or None,
        )
    else:
        units = [str(u) for u in meta.get("units", ()) or ()]
        micrometres = bool(units) and all(u in ("um", "micrometer", "µm") for u in units)
        write_labels_tiff(
            levels if len(levels) > 1 else levels[0],
            target,
            pixel_size=float(scale[0]) if micrometres else None,
            pyramid=".ome." in name,
        )
    return [str(target)]
