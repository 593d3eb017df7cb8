"""Where the app's layers go and how they look: placement on the slide, colours, levels.

Every layer the widget adds sits on its source image layer's world grid. A slide layer
has scale = µm per level-0 pixel; a map stored at ``s`` level-0 px per map pixel gets
scale ``s * px`` and a half-pixel shift, because napari places pixel *centres* at
``index * scale + translate`` and map pixel 0 covers level-0 pixels ``[0, s)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from napari.utils.colormaps import DirectLabelColormap

from napari_wsol.views import MapLevel

#: Overlay colormaps: CAM family warm, the trained heads cool, so they are told apart.
COLORMAPS = {"fcam": "viridis", "pixelcam": "cividis"}
DEFAULT_COLORMAP = "inferno"
FADE = 0.4  # map values below this are partly transparent in overlays

PSEUDO_COLORS = {0: (0, 0, 0, 0), 1: (0.25, 0.45, 1.0, 1.0), 2: (1.0, 0.85, 0.1, 1.0)}
CORRECTION_COLORS = {0: (0, 0, 0, 0), 1: (0.0, 1.0, 1.0, 1.0), 2: (1.0, 0.0, 1.0, 1.0)}
MASK_COLORS = {0: (0, 0, 0, 0), 1: (0.1, 1.0, 0.3, 1.0)}
LABEL_NAMES = {1: "background", 2: "foreground"}


def overlay_colormap(name: str):
    """``name`` with an alpha ramp: low values fade out, so the tissue stays visible
    under a heatmap (a plain colormap tints the whole slide with its zero colour)."""
    from napari.utils.colormaps import Colormap, ensure_colormap

    x = np.linspace(0.0, 1.0, 65)
    rgba = np.asarray(ensure_colormap(name).map(x), dtype=np.float32)
    rgba[:, 3] = np.clip(x / FADE, 0.0, 1.0)
    return Colormap(colors=rgba, controls=x, name=f"{name} (fading)")


def label_colormap(colors: dict[int, tuple]) -> DirectLabelColormap:
    return DirectLabelColormap(color_dict={None: (0, 0, 0, 0), **colors})


def labels_layer(
    data,
    name: str,
    opacity: float,
    colors: dict[int, tuple],
    metadata: dict,
    grid: dict,
    multiscale: bool = False,
):
    """A Labels layer of the app: fixed colours per label, placed on ``grid``."""
    from napari.layers import Labels

    layer = Labels(
        data,
        multiscale=multiscale,
        name=name,
        opacity=opacity,
        colormap=label_colormap(colors),
        metadata=metadata,
        **grid,
    )
    defer_tool_overlays(layer)
    return layer


#: The Labels tools whose canvas visuals napari builds with every layer, used or not.
TOOL_OVERLAYS = ("polygon", "brush_stroke")


def thumbnail_when_hidden(layer) -> None:
    """Give a hidden map overlay the thumbnail napari would show were it visible.

    napari never slices a hidden layer, so its row in the layer list stays black until
    its eye is clicked, and a run adds all its overlays but one hidden. napari makes a
    multiscale image's thumbnail from its coarsest level, shrunk (nearest pixel) to fit
    and coloured by the layer's contrast limits, gamma, colormap and opacity; this does
    the same and hands it to the layer's public ``thumbnail`` setter, which pads it and
    lays it on black as napari's own. Once the layer is shown napari makes its own.
    """
    from scipy import ndimage

    if layer.visible:
        return
    image = np.asarray(shown_levels(layer)[-1], dtype=np.float32)
    box = np.asarray(layer.thumbnail.shape[:2])
    fit = np.clip((box / image.shape).min() * np.asarray(image.shape), 1, box)
    small = ndimage.zoom(image, tuple(fit / image.shape), prefilter=False, order=0)
    low, high = layer.contrast_limits
    small = np.clip(small, low, high)
    if high != low:
        small = (small - low) / (high - low)
    rgba = layer.colormap.map((small**layer.gamma).ravel()).reshape(*small.shape, 4)
    rgba[..., 3] *= layer.opacity
    layer.thumbnail = rgba


def defer_tool_overlays(layer) -> None:
    """Build the visuals of a Labels layer's polygon and brush-stroke tools when the
    user first picks the tool, not inside napari's add of the layer.

    napari builds both (vispy line, polygon and ellipse visuals) as the layer is added,
    a third of the add (67-72 ms instead of 100-106 here, labels_add_cost.py in
    docs/scripts), and the app adds Labels layers while jobs run. napari draws an
    overlay only once it is ``visible`` and gates its use by ``enabled``, which follows
    the layer's mode; so the overlays start hidden and become visible, for good, the
    first time their tool is enabled. ``_overlays`` is napari's own: a tool that a
    napari version lacks, or that has no ``enabled`` there, is left as napari makes it.
    """
    overlays = getattr(layer, "_overlays", {})
    for key in TOOL_OVERLAYS:
        overlay = overlays.get(key)
        if overlay is None or not hasattr(overlay, "enabled") or overlay.enabled:
            continue
        overlay.visible = False
        overlay.events.enabled.connect(_show_when_enabled(overlay))


def make_brush_circle(viewer) -> list:
    """Have napari make its brush-circle visual now; returns its vispy overlays.

    napari draws the brush as a circle once the user paints at a zoom where it is 8+
    screen pixels wide. It makes that visual (two vispy ellipses with anti-aliased
    borders) the first time the circle shows, and its first frame then writes and
    compiles their shaders: 45-50 ms of Python and about 25 ms of OpenGL, once per
    viewer, in the frame after the first pseudo-label job. The app pays this on idle
    turns after the dock appears: this one makes the visual (the overlay shown and
    hidden in one turn: nothing is drawn), :func:`draw_out_of_sight` has it drawn.
    Returns ``[]`` when the circle is in use (already drawn) or where a napari version
    keeps it elsewhere; the first circle is then as slow as napari makes it.
    """
    viewer = _unproxied(viewer)
    try:
        overlay = viewer.canvas.overlays["_brush_circle"]
        made = viewer.window._qt_viewer.canvas._viewer_overlay_to_visual
    except (AttributeError, KeyError, TypeError):
        return []
    if overlay.visible:
        return []
    if overlay not in made:
        overlay.visible = True
        overlay.visible = False
    return [v for v in made.get(overlay, []) if hasattr(v, "_on_visible_change")]


def draw_out_of_sight(vispy_overlays: list) -> None:
    """Draw hidden canvas overlays once, off the canvas, so their shaders are ready.

    Each overlay's visual is shown far outside the canvas until the canvas next draws;
    then its position and visibility are napari's again.
    """
    for vispy_overlay in vispy_overlays:
        node = vispy_overlay.node
        canvas = node.canvas
        if canvas is None or node.visible:
            continue
        where = np.array(node.transform.translate)

        def restore(_event=None, node=node, canvas=canvas, where=where, vo=vispy_overlay):
            canvas.events.draw.disconnect(restore)
            node.transform.translate = where
            vo._on_visible_change()  # napari's rule: shown while in use and hovered

        node.transform.translate = (-1e5, -1e5, 0, 0)
        node.visible = True
        canvas.events.draw.connect(restore, position="last")
        node.update()


@contextmanager
def keeping_active_layer(layers) -> Iterator[None]:
    """Layers appended inside this block do not become napari's active layer.

    The app adds its layers when a job ends: a map run's overlays, a threshold mask, a
    session's layers. They should not take the selection, and with it the layer
    controls, from the layer the user is working on (napari/napari#5767 asks the same
    for a plugin's annotation layer). napari makes every inserted layer the active one
    unless its layer list's private ``_activate_on_insert`` is off; switching the
    active layer is also 10-20 ms of each add here (layer_cost.py --no-select in
    docs/scripts). The flag is set on the list itself: napari hands plugins a proxy
    that warns on private names and means to refuse them. Where a napari version
    lacks the flag, nothing changes.
    """
    target = _unproxied(layers)
    if not hasattr(target, "_activate_on_insert"):
        yield
        return
    before, target._activate_on_insert = target._activate_on_insert, False
    try:
        yield
    finally:
        target._activate_on_insert = before


def refresh_in_place(layer) -> None:
    """Refresh a layer whose arrays changed values in place (same objects, new map).

    The app streams maps into the level objects a layer already shows and points them
    at a new run's maps (:func:`take_levels`); replacing ``data`` instead would make
    napari draw twice. napari 0.9 keeps the coarsest level of a 2D multiscale layer in
    memory for the thumbnail until ``data`` is replaced, so without a reset the
    layer list would keep showing the first, still empty, map. The reset is napari's
    own (private) method, on the layer behind a plugin's proxy; a version without it
    keeps no such copy.
    """
    _forget_thumbnail_level(layer)
    layer.refresh()


def refresh_view(layer) -> None:
    """Redraw what the canvas shows of ``layer`` after its values changed in place.

    Its shape and place are unchanged, so napari's extent is not recomputed; its
    thumbnail is left for :func:`refresh_thumbnail`, since a new thumbnail also
    repaints every row of the layer list.
    """
    layer.refresh(thumbnail=False, extent=False, highlight=False)


def refresh_thumbnail(layer) -> None:
    """The thumbnail of ``layer`` from its current values (see :func:`refresh_in_place`)."""
    _forget_thumbnail_level(layer)
    layer.refresh(data_displayed=False, extent=False, highlight=False)


def _forget_thumbnail_level(layer) -> None:
    # napari 0.9's private copy of the coarsest level, kept for the thumbnail.
    reset = getattr(_unproxied(layer), "_reset_thumbnail_level_data", None)
    if reset is not None:
        reset()


def _unproxied(obj):
    # napari hands plugin widgets its objects behind a PublicOnlyProxy (a wrapt proxy),
    # which warns on private names; the helpers above use them on the object itself.
    return getattr(obj, "__wrapped__", obj)


def _show_when_enabled(overlay):
    def show(*_) -> None:
        if overlay.enabled:
            overlay.visible = True

    return show


def camera_of(viewer):
    """The viewer's camera without napari 0.9's deprecation warning for ``viewer.camera``."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera


@dataclass(frozen=True)
class Placement:
    """How level-0 pixels of the source image map to world coordinates."""

    px: float  # world units per level-0 pixel
    origin: tuple[float, float]  # world position of level-0 pixel (0, 0)'s centre
    units: tuple
    slide_mpp: float | None

    @classmethod
    def of(cls, layer) -> Placement:
        scale = np.asarray(layer.scale[-2:], dtype=float)
        translate = np.asarray(layer.translate[-2:], dtype=float)
        mpp = layer.metadata.get("mpp")
        return cls(
            float(scale[-1]),
            (float(translate[0]), float(translate[1])),
            tuple(layer.units[-2:]),
            mpp,
        )

    def grid(self, step: float, y0: float = 0.0, x0: float = 0.0) -> dict:
        """scale/translate of an array whose pixel (0, 0) covers level-0 ``[y0, y0+step)``."""
        shift = (step - 1) / 2
        return {
            "scale": (step * self.px, step * self.px),
            "translate": (
                self.origin[0] + (y0 + shift) * self.px,
                self.origin[1] + (x0 + shift) * self.px,
            ),
            "units": self.units,
        }

    def to_level0(self, world_y: float, world_x: float) -> tuple[float, float]:
        """Level-0 pixel coordinates (edges, not centres) of a world point."""
        return (
            (world_y - self.origin[0]) / self.px + 0.5,
            (world_x - self.origin[1]) / self.px + 0.5,
        )


def place(layer, grid: dict) -> None:
    """Give an existing layer the scale and translate of ``grid`` (no-op when equal:
    each assignment makes napari recompute the layer's transforms and refresh)."""
    for key in ("scale", "translate"):
        if not np.allclose(getattr(layer, key)[-2:], grid[key]):
            setattr(layer, key, grid[key])


def map_levels(store, method: str) -> list[MapLevel]:
    return [MapLevel(array) for array in store.levels(method)]


def load_levels(store) -> dict[str, list[MapLevel]]:
    """Every map of a finished store, small levels read into memory now.

    Called on the worker thread so that the GUI thread never decompresses a whole level.
    """
    levels = {m: map_levels(store, m) for m in store.methods}
    for method_levels in levels.values():
        for level in method_levels:
            level.frozen = True
            level.values()
    return levels


def shown_levels(layer) -> list:
    """The arrays a layer shows, one per level."""
    return list(layer.data) if layer.multiscale else [layer.data]


def take_levels(layer, levels: list[MapLevel]) -> list[MapLevel] | None:
    """Point the map levels ``layer`` shows at ``levels`` in place (:meth:`MapLevel.take`).

    Returns the layer's own levels, now showing the new map, or None when the layer
    does not show map levels of the same shapes (then it needs new data).
    """
    shown = shown_levels(layer)
    if len(shown) != len(levels) or not all(
        isinstance(a, MapLevel) and a.shape == b.shape for a, b in zip(shown, levels, strict=True)
    ):
        return None
    for a, b in zip(shown, levels, strict=True):
        if a is not b:
            a.take(b)
    return shown


def layer_data(levels: list) -> tuple[object, bool]:
    """napari data and multiscale flag for a list of levels."""
    return (levels, True) if len(levels) > 1 else (levels[0], False)
