"""The Export tab: masks, GeoJSON, heatmaps and checkpoints; saving and opening sessions.

A mixin of :class:`napari_wsol.widget.WSOLWidget`.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import asdict
from pathlib import Path

from qtpy.QtWidgets import QFileDialog

from napari_wsol import layers as L
from napari_wsol._pixel_size import slide_key
from napari_wsol.reader import SLIDE_KEY
from wsol.cams import METHODS
from wsol.errors import InputError
from wsol.infer import MapStore
from wsol.region import Region
from wsol.session import Session, SessionState, default_session_folder


class ExportSessionMixin:
    # ================================================================ export
    _last_export_folder: Path | None = None

    def _ask_save_path(self, default: Path, filters: str) -> Path | None:
        path, _ = QFileDialog.getSaveFileName(self, "Export", str(default), filters)
        if not path:
            return None
        self._last_export_folder = Path(path).parent
        return Path(path)

    def _export_folder(self) -> Path:
        """Where an export dialog opens: the folder of the last export, else the slide's
        own folder where the user may write (not the bundled samples), else home."""
        from wsol.samples import sample_dir

        if self._last_export_folder is not None:
            return self._last_export_folder
        layer = self._exported_image()
        path = layer.metadata.get(SLIDE_KEY) if layer is not None else None
        if path:
            folder = Path(path).resolve().parent
            if folder != sample_dir().resolve() and os.access(folder, os.W_OK):
                return folder
        return Path.home()

    def _ask_folder(self, title: str) -> Path | None:
        path = QFileDialog.getExistingDirectory(self, title, str(self.session.folder.parent))
        return Path(path) if path else None

    def _stem(self) -> str:
        from wsol.slide import slide_stem

        layer = self._exported_image()
        path = layer.metadata.get(SLIDE_KEY) if layer is not None else None
        return slide_stem(path) if path else (layer.name if layer is not None else "image")

    def _exported_image(self):
        """The image the exports come from: the one the shown maps are of, whichever
        image is chosen in the Inspect tab now."""
        return self._maps_layer if self._maps_layer is not None else self.image.value

    def export(self, what: str, path: Path | None = None) -> Path | None:
        """Export the mask / GeoJSON / heatmap of the threshold map, or the model.

        The file is written by a background job; returns its path (None when cancelled
        in the dialog or another job is running).
        """
        from wsol.infer.export import (
            write_geojson,
            write_heatmap_tiff,
            write_mask_png,
            write_mask_tiff,
        )

        method = self.thr_method.value
        if what != "model" and (self.store is None or method is None):
            self.status.value = "Compute maps first."
            return None
        stem, level = self._stem(), int(self.export_level.value)
        t = self.session.state.thresholds.get(method, 0.5) if method else 0.5
        defaults = {
            "mask": (
                f"{stem}_{method}_mask.ome.tif",
                "OME-TIFF pyramid (*.ome.tif);;TIFF (*.tif *.tiff);;PNG (*.png)",
            ),
            "geojson": (f"{stem}_{method}.geojson", "GeoJSON (*.geojson)"),
            "heatmap": (f"{stem}_{method}_heatmap.ome.tif", "OME-TIFF pyramid (*.ome.tif)"),
            "model": (
                f"{stem}_wsol_v{self.session.state.current:03d}.safetensors",
                "Checkpoint (*.safetensors)",
            ),
        }
        name, filters = defaults[what]
        path = path or self._ask_save_path(self._export_folder() / name, filters)
        if path is None:
            return None
        store, target_name = self.store, self.target.value
        painted = tuple(self._painted)  # the masks as shown, corrections and all

        def job():
            # Written on the worker: a whole slide's pyramid takes long enough to freeze
            # the viewer.
            yield ("write", 0, 1)
            if what == "mask":
                if path.suffix.lower() == ".png":
                    write_mask_png(store, method, path, t, level, painted)
                else:
                    write_mask_tiff(store, method, path, t, level, painted)
            elif what == "geojson":
                write_geojson(store, method, path, t, class_name=target_name, corrections=painted)
            elif what == "heatmap":
                write_heatmap_tiff(store, method, path, level)
            else:
                self._model_for_job().save(path)
            return path

        started = self._start(
            job, f"Exporting {path.name}", self._steps_progress, self._exported, total=1
        )
        return path if started else None

    def _exported(self, path: Path) -> None:
        self.status.value = f"Wrote {path}"

    # ================================================================ session
    def _save_session(self) -> None:
        self._session_writer.save(self.session)  # written on its own thread
        self._update_session_info()

    def _session_write_failed(self, message: str) -> None:
        self.status.value = f"Error: {message}"

    def _update_session_info(self) -> None:
        self.session_info.value = f"Session folder (saved as you work):\n{self.session.folder}"

    def _save_session_as(self) -> None:
        folder = self._ask_folder("Save the session into a folder")
        if folder is not None:
            self.save_session(folder)

    def save_session(self, folder: str | Path) -> Path | None:
        """Copy the session to ``folder`` (on the worker) and keep working there."""
        self._save_corrections()
        self._session_writer.flush()  # no half-written session file in the copy
        session, folder = self.session, Path(folder)

        def job():
            yield ("copy", 0, 1)
            copy = session.copy_to(folder)
            path = copy.path(copy.state.store)
            store = MapStore.open(path) if path is not None and path.exists() else None
            return copy, store, None if store is None else L.load_levels(store)

        started = self._start(
            job, "Saving the session", self._steps_progress, self._session_saved, total=1
        )
        return folder if started else None

    def _session_saved(self, payload) -> None:
        self.session, store, levels = payload
        if store is not None and self._maps_of_session():
            # The copied maps stay on the image they are of; maps of another image shown
            # now are that image's session's, and stay.
            self._open_store(store, self._maps_layer, levels)
        if self._edit is not None:  # strokes made while the files were copied
            self._saved_corrections = None
            self._save_corrections()
        self._update_session_info()
        self.status.value = f"Session saved to {self.session.folder}"

    def _follow_image(self, layer) -> None:
        """Work on ``layer`` in its own session.

        A session holds one image's maps, labels and corrections (``wsol predict
        --session`` lays them on that slide), so the first job on another image moves
        to the session that image had earlier in this viewer, or to a new one that
        starts from the current model version. Strokes painted on one image then never
        reach another's masks or fine-tuning.
        """
        key = slide_key(layer)
        if self._session_key in (None, key):
            self._session_key = key
            self._record_slide(layer)
            return
        self._save_corrections()
        session = self._sessions.get(key)
        if session is None:
            state = SessionState(**asdict(self.session.state))
            model = self._current_model_path()
            state.base_model = str(model) if model else None
            state.versions, state.current = [], 0
            state.slide = state.slide_mpp = state.store = None
            state.run_region = state.edit_region = None
            session = Session(self._new_session_folder(), state)
        self._use_session(session, key)
        self._record_slide(layer)
        self._save_session()
        self.status.value = f"{layer.name}: working in session {session.folder}"

    def _record_slide(self, layer) -> None:
        """The session's image, from its first job on (pseudo-labels alone included), so
        that *Open session* finds it."""
        if self.session.state.slide is None:
            self.session.state.slide = layer.metadata.get(SLIDE_KEY)
            self.session.state.slide_mpp = layer.metadata.get("mpp")

    def _maps_of_session(self) -> bool:
        """Whether the maps shown are of this session's image (its corrections, store
        and versions apply to them)."""
        return self._maps_layer is not None and slide_key(self._maps_layer) == self._session_key

    def _new_session_folder(self) -> Path:
        taken = {self.session.folder, *(s.folder for s in self._sessions.values())}
        base = default_session_folder()
        for n in itertools.count(1):
            folder = base if n == 1 else base.with_name(f"{base.name}-{n}")
            if folder not in taken and not folder.exists():
                return folder
        raise AssertionError("unreachable")

    def _use_session(self, session: Session, key: str | None) -> None:
        """Make ``session`` the one the widget works in: its model and versions."""
        if self._session_key is not None:  # kept when left, so that going back finds it
            self._sessions[self._session_key] = self.session
        self.session = session
        self._session_key = key
        # The labelled region shown was the old session's: its strokes are not this one's.
        self._drop_label_layers()
        with self.checkpoint.changed.blocked():
            self.checkpoint.value = session.state.base_model or ""
        self._model, self._model_source = None, ()
        self._refresh_versions()
        self._show_model_info()
        self._update_session_info()

    def _open_session_dialog(self) -> None:
        folder = self._ask_folder("Open a session folder")
        if folder is not None:
            self.restore_session(folder)

    def restore_session(self, folder: str | Path) -> None:
        """Reopen a session: slide, model version, overlays, thresholds, labels."""
        try:
            self._session_writer.flush()  # the folder may be this session's own
            session = Session.load(folder)
        except InputError as exc:
            self.status.value = f"Error: {exc}"
            return
        state = session.state
        layer = None
        if state.slide:
            layer = next(
                (lyr for lyr in self._image_layers() if lyr.metadata.get(SLIDE_KEY) == state.slide),
                None,
            )
            if layer is None:
                try:
                    (layer,) = self.viewer.open(state.slide, plugin="napari-wsol")
                except Exception as exc:
                    self.status.value = f"Error: cannot open the session's slide: {exc}"
                    return
        elif self.image.value is None:
            self.status.value = "Error: the session has no slide file; open its image first."
            return
        if layer is not None:
            self.image.value = layer
        layer = self._source()
        self._save_corrections()
        self._use_session(session, slide_key(layer))
        self._restore_pixel_size(layer, state.slide_mpp)
        with self.methods.changed.blocked():
            self.methods.value = [m for m in state.methods if m in METHODS]
        choices = list(self.scope.choices)
        self.scope.value = state.scope if state.scope in choices else choices[0]
        self.dense_crf.value = bool(state.dense_crf)
        with self.keep_corrections.changed.blocked():
            self.keep_corrections.value = bool(state.masks_keep_corrections)
        for widget, saved, key in (
            (self.seed_method, state.seeder, "method"),
            (self.bg_fraction, state.seeder, "bg_fraction"),
            (self.erode, state.seeder, "erode"),
            (self.seeds, state.seeder, "seeds_per_class"),
            (self.heads, state.fine_tune, "heads"),
            (self.steps, state.fine_tune, "steps"),
            (self.seconds, state.fine_tune, "seconds"),
            (self.lr, state.fine_tune, "lr"),
            (self.guide, state.fine_tune, "guide"),
        ):
            with widget.changed.blocked():
                widget.value = saved[key]
        store_path = session.path(state.store)
        if store_path is not None and store_path.exists():
            store = MapStore.open(store_path)
            self._open_store(store, layer, L.load_levels(store))
            self._show_scores()
            for method, t in state.thresholds.items():
                if method in self.store.methods:
                    self.thr_method.value = method
                    self.threshold.value = t
                    self._threshold_changed()
            if state.disagreement:
                self.diff_a.value, self.diff_b.value = state.disagreement
                self.show_disagreement()
        if state.edit_region:
            region = Region.from_dict(state.edit_region)
            pseudo = session.load_labels(region, "pseudo")
            if pseudo is not None:
                corrections = session.load_labels(region, "corrections")
                self._show_labels(layer, region, pseudo, corrections)
        self._update_session_info()
        self.status.value = f"Session restored from {session.folder}"
