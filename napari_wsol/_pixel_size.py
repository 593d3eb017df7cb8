"""The image's pixel size: read from the file, or set by the user where the file has none.

A mixin of :class:`napari_wsol.widget.WSOLWidget`. The model sees tissue at the scale it
was trained at (µm per pixel), so an image that records no pixel size is read as if
each of its pixels were the model's size, and on a 40x slide the maps are then
unreliable. The user can type the pixel size in; everything on the image follows it:
its layer's physical scale, the app's layers on it, the view (the same tissue stays
on screen), the maps (computed again) and the pseudo-labels, with the corrections
carried onto the new grid. A pixel size the file records is shown and never changed.
"""

from __future__ import annotations

import numpy as np

from napari_wsol.layers import camera_of
from napari_wsol.reader import SLIDE_KEY
from wsol.errors import InputError
from wsol.region import Region, check_editable, clip_region, resample_labels

#: Layer metadata: the layer's ``mpp`` was set by the user (the file records none).
USER_MPP = "wsol_mpp_set_by_user"
UNKNOWN = "not recorded: set it"


def file_mpp(layer) -> float | None:
    """The pixel size the image's file records (None: none, or only a user's)."""
    meta = layer.metadata
    return None if meta.get(USER_MPP) else meta.get("mpp")


def slide_key(layer) -> str:
    """Which :class:`wsol.slide.Slide` the widget opens for ``layer``: its file, else
    the layer's pixels."""
    return layer.metadata.get(SLIDE_KEY) or f"layer:{id(layer.data)}"


class PixelSizeMixin:
    def _show_pixel_size(self, _event: object = None) -> None:
        """The field shows the chosen image's pixel size; editable where the file has none."""
        layer = self.image.value
        recorded = None if layer is None else file_mpp(layer)
        value = recorded or (layer.metadata.get("mpp") if layer is not None else None) or 0.0
        with self.pixel_size.changed.blocked():
            self.pixel_size.value = value
        self.pixel_size.enabled = layer is not None and recorded is None and self.worker is None
        self.pixel_size.tooltip = (
            "Recorded in the image's file."
            if recorded
            else "µm per pixel of the full-resolution image, which its file does not record "
            "(about 0.25 at 40x, 0.5 at 20x). The maps are computed at the model's scale."
        )

    def _pixel_size_changed(self) -> None:
        layer = self.image.value
        if layer is None or file_mpp(layer) is not None:
            self._show_pixel_size()  # the file's value stands
            return
        mpp = float(self.pixel_size.value) or None
        if mpp == layer.metadata.get("mpp"):
            return
        if self.worker is not None:  # the field is disabled meanwhile; a race at most
            self._show_pixel_size()
            self.status.value = "Busy: set the pixel size when the current job has ended."
            return
        self.set_pixel_size(layer, mpp)

    def set_pixel_size(self, layer, mpp: float | None) -> None:
        """Give ``layer`` (an image whose file records no pixel size) ``mpp`` µm/px.

        The app's layers on it are moved with it, then its maps are computed again and
        its pseudo-labels made again at the model's scale, the corrections carried
        over (:func:`wsol.region.resample_labels`) and saved before anything else.
        """
        maps_here = self.store is not None and self._maps_layer is layer
        edit = None
        if self._edit is not None and self._edit_layer is layer:
            self._save_corrections()  # the strokes of this scale are on disk first
            edit = self._edit["region"]
        self._rescale_image(layer, mpp)
        if slide_key(layer) == self._session_key:  # another image's session keeps its own
            self.session.state.slide_mpp = mpp
            self._save_session()
        self._show_pixel_size()
        size = f"{mpp:g} µm/px" if mpp else "not recorded (its pixels read at the model's scale)"
        note = f"Pixel size of {layer.name}: {size}."
        region = None
        if edit is not None:
            try:
                region = self._carry_corrections(layer, edit)
            except InputError as exc:
                # Labels at the old scale would train the heads on it: off the view.
                self._drop_labels()
                note += (
                    f" Its labels cannot follow ({exc}); they were taken off the view, "
                    "and its corrections stay saved in the session."
                )
        if maps_here:
            self.run()
            if self.worker is not None:  # started: the labels follow when it ends
                if region is not None:
                    self._then = lambda: self.make_pseudo_labels(region)
                self.status.value = f"{note} Computing its maps again…"
                return
        if region is not None:
            self.make_pseudo_labels(region)
            if self.worker is not None:
                self.status.value = f"{note} Making its pseudo-labels again…"
                return
        self.status.value = note + (" Compute its maps again." if maps_here else "")

    def _rescale_image(self, layer, mpp: float | None) -> None:
        """New scale for ``layer`` and the app's layers on it, the same tissue in view."""
        new = mpp or 1.0
        factor = new / float(layer.scale[-1])
        origin = np.asarray(layer.translate[-2:], dtype=float)
        units = ("um", "um") if mpp else ("pixel", "pixel")

        def moved(point) -> tuple:
            return tuple(origin + (np.asarray(point[-2:], dtype=float) - origin) * factor)

        for other in self._placed_on(layer):
            other.scale = tuple(np.asarray(other.scale[-2:], dtype=float) * factor)
            other.translate = moved(other.translate)
            other.units = units
            if "slide_mpp" in other.metadata:  # the writer's world -> level-0 px
                other.metadata["slide_mpp"] = mpp
        camera = camera_of(self.viewer)
        center, zoom = camera.center, camera.zoom
        layer.metadata["mpp"] = mpp
        layer.metadata[USER_MPP] = mpp is not None
        layer.scale = (new, new)
        layer.units = units
        camera.center = (*center[:-2], *moved(center))
        camera.zoom = zoom / factor
        self._slides.pop(slide_key(layer), None)  # reopened at the new pixel size

    def _placed_on(self, layer) -> list:
        """The app's layers that sit on ``layer``'s pixels: its maps and masks, its
        labels, the drawn region."""
        from napari_wsol._labels import CORRECTIONS_LAYER, PSEUDO_LAYER
        from napari_wsol.widget import REGION_LAYER

        names = {REGION_LAYER}
        if self._edit_layer is layer:
            names |= {PSEUDO_LAYER, CORRECTIONS_LAYER}
        maps_here = self._maps_layer is layer
        return [
            other
            for other in self.viewer.layers
            if other.name in names or (maps_here and other.metadata.get("wsol_method"))
        ]

    def _carry_corrections(self, layer, old: Region) -> Region:
        """The labelled box at the new scale, its corrections carried there and saved."""
        corrections = self.session.load_labels(old, "corrections")
        if corrections is None:
            corrections = np.zeros(old.shape, np.uint8)
        slide = self._slide(layer)
        region = check_editable(
            clip_region(slide, *old.box, downsample=self._analysis_downsample(slide), multiple=32)
        )
        carried = resample_labels(corrections, old, region)
        saved = self.session.load_labels(region, "corrections")
        if saved is not None:  # painted at this scale before: the newer strokes win
            carried = np.where(carried != 0, carried, saved).astype(np.uint8)
        self.session.save_labels(region, "corrections", carried)
        return region

    def _drop_labels(self) -> None:
        self.session.state.edit_region = None
        self._drop_label_layers()
        self._save_session()

    def _drop_label_layers(self) -> None:
        """Take the labelled region off the viewer (its files stay in the session)."""
        from napari_wsol._labels import CORRECTIONS_LAYER, PSEUDO_LAYER

        self._edit, self._saved_corrections = None, None
        for name in (PSEUDO_LAYER, CORRECTIONS_LAYER):
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)

    def _restore_pixel_size(self, layer, mpp: float | None) -> None:
        """A restored session's pixel size, for an image whose file records none."""
        if mpp and file_mpp(layer) is None and layer.metadata.get("mpp") != mpp:
            self._rescale_image(layer, mpp)
        self._show_pixel_size()
