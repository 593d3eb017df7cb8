"""Reader contribution: slides and images through ``wsol.slide`` as one RGB image layer.

Pyramids stay lazy (dask arrays read tile by tile from the file), the layer's scale is
the slide's pixel size in micrometres when it is known, and contrast limits are set
from the dtype so napari never scans a gigapixel array for them.
"""

from __future__ import annotations

from collections.abc import Callable

from wsol.slide import SLIDE_SUFFIXES, Slide, open_slide, slide_stem

LayerData = list[tuple]

#: Layer metadata key holding the file a layer was read from (the widget reopens it).
SLIDE_KEY = "wsol_slide"


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], LayerData] | None:
    """napari's reader hook: our reader for slide/image suffixes, else None."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    name = str(path).lower()
    if not name.endswith(SLIDE_SUFFIXES):
        return None
    return read_slide


def read_slide(path: str | list[str]) -> LayerData:
    """Open ``path`` and return its layer data; a damaged file raises ``SlideError``."""
    if isinstance(path, list):
        path = path[0]
    slide = open_slide(path)
    return [slide_layer_data(slide)]


def slide_layer_data(slide: Slide, name: str | None = None) -> tuple:
    """``(data, kwargs, "image")`` of a slide: multiscale when it has several levels."""
    if slide.level_count > 1:
        data, multiscale = slide.pyramid(), True
    elif slide.backend == "image":
        h, w = slide.shape
        data, multiscale = slide.read_region(0, 0, 0, h, w), False
    else:
        data, multiscale = slide.pyramid()[0], False
    metadata = {
        SLIDE_KEY: str(slide.path),
        "mpp": slide.mpp,
        "vendor": slide.vendor,
        "levels": [list(level.shape) for level in slide.levels],
        "properties": dict(slide.properties),
    }
    kwargs: dict = {
        "name": name or slide_stem(slide.path),
        "rgb": True,
        "multiscale": multiscale,
        "contrast_limits": (0, 255),
        "metadata": metadata,
    }
    if slide.mpp:
        kwargs |= {"scale": (slide.mpp, slide.mpp), "units": ("um", "um")}
    return data, kwargs, "image"
