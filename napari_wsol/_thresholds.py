"""The Threshold tab and the disagreement layer: masks of the maps, live.

A mixin of :class:`napari_wsol.widget.WSOLWidget` (it uses the widget's store, levels,
session and controls); kept apart so each tab of the widget reads on its own.
"""

from __future__ import annotations

import numpy as np
from napari.layers import Image, Labels

from napari_wsol import layers as L
from napari_wsol.views import DifferenceView, ThresholdView
from wsol.region import PaintedLabels, Region, apply_painted


def area_text(area: float, mpp: float | None) -> str:
    """An area as a pathologist reads it: µm² up to 0.1 mm², mm² above; pixels² for
    an image without a pixel size. ``area`` is in µm² (or px² without ``mpp``)."""
    if not mpp:
        return f"{area:,.0f} px²"
    if area < 1e5:
        return f"{area:,.0f} µm²"
    return f"{area / 1e6:,.3g} mm²" if area < 1e8 else f"{area / 1e6:,.0f} mm²"


def difference_name(a: str, b: str) -> str:
    """The name of the layer showing ``|a - b|``."""
    return f"|{a} - {b}|"


class ThresholdsMixin:
    # ================================================================ disagreement
    def show_disagreement(self) -> None:
        a, b = self.diff_a.value, self.diff_b.value
        if self.store is None or a is None or b is None or a == b:
            self.status.value = "Compute two maps first, then choose two different ones."
            return
        self._show_difference(a, b)
        self.session.state.disagreement = [a, b]
        self._save_session()

    def _refresh_disagreement(self) -> None:
        """The |A - B| layer, where one is shown, after a run: the new maps of A and B."""
        if not self.session.state.disagreement:
            return
        a, b = self.session.state.disagreement
        shown = difference_name(a, b) in self.viewer.layers
        if shown and self.store is not None and a in self.levels and b in self.levels:
            self._show_difference(a, b)

    def _show_difference(self, a: str, b: str) -> None:
        name = difference_name(a, b)
        grid = self._overlay_place.grid(self.store.scale(0))
        pairs = list(zip(self.levels[a], self.levels[b], strict=True))
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            views = L.shown_levels(layer)
            self._pause_canvases()
            if len(views) == len(pairs) and all(
                v.a is x and v.b is y for v, (x, y) in zip(views, pairs, strict=True)
            ):
                L.refresh_in_place(layer)  # its views read levels that took the new maps
                return
            # Other levels (another grid, e.g. a new pixel size): new views, new place.
            layer.data = L.layer_data([DifferenceView(x, y) for x, y in pairs])[0]
            L.place(layer, grid)
            return
        data, multiscale = L.layer_data([DifferenceView(x, y) for x, y in pairs])
        layer = Image(
            data,
            multiscale=multiscale,
            name=name,
            colormap=L.overlay_colormap("magma"),
            opacity=0.8,
            contrast_limits=(0.0, 1.0),
            metadata={"wsol_method": name, "slide_mpp": self._overlay_place.slide_mpp},
            **grid,
        )
        self._append_layer(layer)

    # ================================================================ thresholds
    def _mask_layer(self, method: str, replace: bool = False):
        """The mask layer of ``method``, made now if missing (``replace``: new data)."""
        name = f"{method} mask"
        if name not in self.viewer.layers:
            layer = self._new_mask_layer(method)
            self._append_layer(layer)  # now: the caller thresholds it at once
            return layer
        layer = self.viewer.layers[name]
        if replace:
            self._pause_canvases()
            views, levels = L.shown_levels(layer), self.levels[method]
            if len(views) == len(levels) and all(
                v.level is m for v, m in zip(views, levels, strict=True)
            ):
                L.refresh_in_place(layer)  # its views read levels that took the new map
            else:  # another grid (the image's pixel size changed): new views, new place
                layer.data = L.layer_data(self._threshold_views(method))[0]
                L.place(layer, self._overlay_place.grid(self.store.scale(0)))
        return layer

    def _threshold_views(self, method: str) -> list[ThresholdView]:
        t = self.session.state.thresholds.get(method, 0.5)
        views = [
            ThresholdView(level, t, self.store.scale(k))
            for k, level in enumerate(self.levels[method])
        ]
        for view in views:
            view.painted = tuple(self._painted)
        return views

    # ================================================================ corrections on masks
    def _painted_now(self) -> list[PaintedLabels]:
        """Every labelled region's saved corrections with a stroke, in the order the masks
        lay them (:meth:`wsol.session.Session.painted`: the edited region last, owning its
        box), when the masks keep them; each file is read again only once it has changed.
        """
        if not self.keep_corrections.value or not self._maps_of_session():
            return []  # maps of another image: this session's strokes are not on it
        edit = self._edit["region"] if self._edit is not None else None

        def report(exc: Exception) -> None:
            self.status.value = f"Masks without these corrections: {exc}"

        return self.session.painted(edit, read=self._painted_file, on_error=report)

    def _painted_file(self, path, region: Region, outside: Region | None):
        """The corrections of one file, without those in the box ``outside`` (if any)."""
        stamp = path.stat().st_mtime_ns
        key = (stamp, outside)
        cached = self._painted_files.get(path)
        if cached is None or cached[0] != key:
            if cached is not None and cached[0][0] == stamp:
                whole = cached[2]
            else:
                labels = self.session.load_labels(region, "corrections")
                if labels is None:
                    return None
                whole = PaintedLabels(labels, region)
            shown = whole if key[1] is None else whole.outside(key[1])
            cached = (key, shown, whole)
            self._painted_files[path] = cached
        return cached[1]

    def _masks_follow_corrections(self) -> None:
        """The corrections (or the checkbox) changed: every mask and the area follow."""
        self._painted = self._painted_now()
        if self.store is None:
            return
        for method in self.levels:
            name = f"{method} mask"
            if name not in self.viewer.layers:
                continue
            layer = self.viewer.layers[name]
            for view in L.shown_levels(layer):
                view.painted = tuple(self._painted)
            if layer.visible:
                L.refresh_in_place(layer)
        self._update_area()

    def _keep_corrections_toggled(self) -> None:
        self.session.state.masks_keep_corrections = bool(self.keep_corrections.value)
        self._save_session()
        self._masks_follow_corrections()

    def _new_mask_layer(self, method: str) -> Labels:
        data, multiscale = L.layer_data(self._threshold_views(method))
        place = self._overlay_place
        class_name = self.target.value or "positive"
        metadata = {
            "wsol_method": method,
            "slide_mpp": place.slide_mpp,
            "label_names": {1: f"{class_name} ({method})"},
        }
        layer = L.labels_layer(
            data,
            f"{method} mask",
            0.45,
            L.MASK_COLORS,
            metadata,
            place.grid(self.store.scale(0)),
            multiscale=multiscale,
        )
        layer.editable = False  # a view of the map: corrections go on their own layer
        return layer

    def _threshold_moved(self) -> None:
        """The slider (or the method) changed: follow it, making the mask layer first.

        Making the layer (50-70 ms) and napari's adding it (60-75 ms) take turns of
        their own (:meth:`_later`), so the first move of a drag does not freeze the
        viewer for 150-220 ms; the mask then shows the slider's latest value.
        """
        method = self.thr_method.value
        if self.store is None or method is None:
            return
        if f"{method} mask" in self.viewer.layers:
            self._threshold_changed()
            return
        self.session.state.thresholds[method] = float(self.threshold.value)
        self._save_timer.start()
        if method not in self._masks_coming:
            self._masks_coming.add(method)
            self._later(self._make_mask_layer, method)

    def _make_mask_layer(self, method: str) -> None:
        if self.store is None or method not in self.levels:
            self._masks_coming.discard(method)
        elif f"{method} mask" in self.viewer.layers:  # made meanwhile (session restore)
            self._masks_coming.discard(method)
            self._later(self._threshold_changed)
        else:
            self._add_layer(self._new_mask_layer(method), then=self._mask_made)

    def _mask_made(self, layer) -> None:
        self._masks_coming.discard(layer.metadata["wsol_method"])
        self._later(self._threshold_changed)  # the slider may have moved meanwhile

    def _threshold_method_changed(self) -> None:
        method = self.thr_method.value
        if method is None:
            return
        with self.threshold.changed.blocked():
            self.threshold.value = self.session.state.thresholds.get(method, 0.5)
        self._threshold_moved()

    def _threshold_changed(self) -> None:
        """Live: the mask of the view follows the slider (only visible pixels recomputed)."""
        method = self.thr_method.value
        if self.store is None or method is None:
            return
        t = float(self.threshold.value)
        self.session.state.thresholds[method] = t
        layer = self._mask_layer(method)
        data = layer.data if layer.multiscale else [layer.data]
        for view in data:
            view.threshold = t
        L.refresh_view(layer)
        self._thumbnails_due.add(layer.name)
        self._settle_timer.start()
        self._save_timer.start()

    def _threshold_settled(self) -> None:
        """The slider has rested: the masks' thumbnails and the area catch up with it.

        Every mask moved since the last rest, not only the current method's: a user may
        drag one method's slider and switch to another within the settle time.
        """
        due, self._thumbnails_due = self._thumbnails_due, set()
        for name in due & {layer.name for layer in self.viewer.layers}:
            L.refresh_thumbnail(self.viewer.layers[name])
        if self.store is not None and self.thr_method.value is not None:
            self._update_area()

    def _stats_level(self) -> int:
        levels = self.store.levels(self.thr_method.value)
        return next(
            (k for k, a in enumerate(levels) if a.shape[0] * a.shape[1] <= 2**21), len(levels) - 1
        )

    def _update_area(self) -> None:
        method = self.thr_method.value
        if self.store is None or method is None:
            return
        k = self._stats_level()
        values = self.levels[method][k].values()
        t = self.session.state.thresholds.get(method, 0.5)
        scale = self.store.scale(k)
        inside = self._scope_mask(values.shape, scale)
        rows, cols = np.arange(values.shape[0]), np.arange(values.shape[1])
        positive = apply_painted(values >= t, self._painted, scale, rows, cols) & inside
        px_area = scale**2
        mpp = self.store.mpp
        area = float(positive.sum() * px_area * (mpp**2 if mpp else 1))
        tissue = self._tissue_on(values.shape, scale)
        if tissue is not None:
            reference = (tissue & inside).sum()
            what = "of tissue"
        else:
            reference = inside.sum()
            what = "of the region"
        percent = (
            100.0 * (positive & (tissue if tissue is not None else True)).sum() / max(reference, 1)
        )
        self.area.value = f"{method} >= {t:.2f}: {area_text(area, mpp)}, {percent:.1f}% {what}"

    def _scope_mask(self, shape: tuple[int, int], scale: float) -> np.ndarray:
        inside = np.zeros(shape, bool)
        region = self.session.state.run_region
        if region is None:
            inside[:] = True
            return inside
        r = Region.from_dict(region)
        y0, x0 = int(r.y // scale), int(r.x // scale)
        y1, x1 = int(np.ceil((r.y + r.h) / scale)), int(np.ceil((r.x + r.w) / scale))
        inside[y0:y1, x0:x1] = True
        return inside

    def _tissue_on(self, shape: tuple[int, int], scale: float) -> np.ndarray | None:
        key = (str(self.store.path), shape, scale)
        if self._tissue_cache is None or self._tissue_cache[0] != key:
            self._tissue_cache = (key, self._resampled_tissue(shape, scale))
        return self._tissue_cache[1]

    def _resampled_tissue(self, shape: tuple[int, int], scale: float) -> np.ndarray | None:
        tissue = self.store.tissue()
        if tissue is None:
            return None
        mask, ds = tissue
        rows = np.minimum(((np.arange(shape[0]) + 0.5) * scale / ds).astype(int), mask.shape[0] - 1)
        cols = np.minimum(((np.arange(shape[1]) + 0.5) * scale / ds).astype(int), mask.shape[1] - 1)
        return mask[np.ix_(rows, cols)].astype(bool)

    def otsu(self) -> None:
        """Set the threshold to Otsu's on the map inside the scope (and tissue)."""
        import torch

        from wsol.pseudo import otsu_threshold

        method = self.thr_method.value
        if self.store is None or method is None:
            self.status.value = "Compute maps first."
            return
        k = self._stats_level()
        values = self.levels[method][k].values()
        inside = self._scope_mask(values.shape, self.store.scale(k))
        tissue = self._tissue_on(values.shape, self.store.scale(k))
        if tissue is not None:
            inside &= tissue
        picked = values[inside]
        if picked.size < 2 or picked.max() - picked.min() < 1e-6:
            self.status.value = "Otsu: the map is flat here."
            return
        t = float(otsu_threshold(torch.from_numpy(picked)[None])[0])
        self.threshold.value = round(t, 2)
