"""The WSOL dock widget: inspect maps, set thresholds, correct pseudo-labels, retrain, export.

Tabs follow the pathologist's loop: **Inspect** (model, methods, scope, run; the
disagreement of two maps), **Threshold** (per method: slider, Otsu, area), **Labels**
(pseudo-labels from a map, corrections by brush / fill / click-to-flip), **Train**
(fine-tune the heads on them; each round a model version), **Export / Session**.

Everything slow runs in a napari worker (one job at a time) with napari's progress bar
and a Cancel button; the GUI thread only creates layers and refreshes what is on screen.
Every state change is written to the session folder as it happens.
"""

from __future__ import annotations

import copy
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSlider,
    FloatSpinBox,
    Label,
    PushButton,
    RadioButtons,
    Select,
    SpinBox,
)
from napari.qt.threading import create_worker
from napari.utils import progress
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QFileDialog, QScrollArea, QTabWidget, QVBoxLayout, QWidget

from napari_wsol import layers as L
from napari_wsol.jobs import stream
from napari_wsol.reader import SLIDE_KEY
from napari_wsol.views import DifferenceView, ThresholdView
from wsol.cams import METHODS
from wsol.errors import InputError
from wsol.infer import MapStore
from wsol.region import (
    Region,
    check_editable,
    clip_region,
    effective_labels,
    flip_component,
)
from wsol.samples import sample_model_path
from wsol.session import Session, default_session_folder

if TYPE_CHECKING:
    import napari

SCOPES = ["current view", "drawn region", "whole slide"]
REGION_LAYER = "WSOL region"
PSEUDO_LAYER = "pseudo-labels"
CORRECTIONS_LAYER = "corrections"
#: Analysis pixels per heatmap pixel in the app (finer than ``wsol predict``'s 4, so
#: F-CAM's full-resolution maps keep their edges on screen).
MAP_DOWNSAMPLE = 2
#: Overlay layers are refreshed at most this often while a run streams in (seconds).
REFRESH_EVERY = 0.5


def _label(text: str) -> Label:
    """A Label that wraps, so long messages do not widen the dock (and shrink the canvas)."""
    label = Label(value=text)
    label.native.setWordWrap(True)
    return label


class WSOLWidget(QWidget):
    """Dock widget of the WSOL app (see the module docstring)."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session = Session(default_session_folder())
        self._model = None
        self._model_source: object = ()  # what self._model was loaded from
        self._slides: dict[str, object] = {}
        self.store = None
        self.worker = None
        self._stop = threading.Event()
        self._pbar = None
        self._last_refresh = 0.0
        self._edit: dict | None = None  # region, pseudo labels, rgb of the labelled region
        self._saved_corrections: np.ndarray | None = None
        self._then = None  # a job to start when the current one finishes
        self._tissue_cache: tuple | None = None
        self._stale: list[str] = []  # overlays still showing a previous run's maps
        self._refresh_turn = -1
        self.levels: dict = {}

        self._build()
        start = self._checkpoint_path()
        self.session.state.base_model = str(start) if start else None
        self._refresh_versions()
        self.viewer.layers.events.inserted.connect(self._refresh_images)
        self.viewer.layers.events.removed.connect(self._refresh_images)
        self._refresh_images()
        self._save_timer = QTimer(self)
        self._save_timer.setSingleShot(True)
        self._save_timer.setInterval(300)
        self._save_timer.timeout.connect(self._save_session)
        self._show_model_info()

    # ================================================================ construction
    def _build(self) -> None:
        sample = sample_model_path()
        self.checkpoint = FileEdit(
            label="model",
            mode="r",
            filter="*.safetensors",
            value=str(sample) if sample else "",
            tooltip="A napari-wsol .safetensors checkpoint (default: the sample model).",
        )
        self.model_info = _label("")
        self.version = ComboBox(label="version", choices=self.session.version_names())
        self.image = ComboBox(label="image", choices=self._image_layers, nullable=True)
        self.methods = Select(
            label="methods", choices=list(METHODS), value=["cam", "gradcampp", "fcam", "pixelcam"]
        )
        self.methods.native.setMaximumHeight(120)
        self.target = ComboBox(label="explain class", choices=[])
        self.scope = RadioButtons(label="scope", choices=SCOPES, value=SCOPES[0])
        self.draw_button = PushButton(text="Draw a region")
        self.run_button = PushButton(text="Compute maps")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.status = _label("")
        self.scores = _label("")
        self.diff_a = ComboBox(label="map A", choices=[])
        self.diff_b = ComboBox(label="map B", choices=[])
        self.diff_button = PushButton(text="Show |A - B|")
        inspect = Container(
            widgets=[
                self.checkpoint,
                self.model_info,
                self.version,
                self.image,
                self.methods,
                self.target,
                self.scope,
                self.draw_button,
                self.run_button,
                self.scores,
                _label("Where to review: disagreement of two maps"),
                self.diff_a,
                self.diff_b,
                self.diff_button,
            ]
        )

        self.thr_method = ComboBox(label="map", choices=[])
        self.threshold = FloatSlider(label="threshold", min=0.0, max=1.0, step=0.01, value=0.5)
        self.otsu_button = PushButton(text="Otsu")
        self.area = _label("")
        threshold = Container(
            widgets=[self.thr_method, self.threshold, self.otsu_button, self.area]
        )

        seeder = self.session.state.seeder
        self.seed_method = ComboBox(label="from map", choices=list(METHODS), value=seeder["method"])
        self.bg_fraction = FloatSpinBox(
            label="background = lowest", min=0.05, max=0.95, step=0.05, value=seeder["bg_fraction"]
        )
        self.erode = SpinBox(label="erode fg (px)", min=0, max=32, value=seeder["erode"])
        self.seeds = SpinBox(
            label="seeds per class", min=1, max=4096, value=seeder["seeds_per_class"]
        )
        self.pseudo_button = PushButton(text="Make pseudo-labels")
        self.flip = CheckBox(text="Click to flip a region fg <-> bg", value=False)
        self.labels_info = _label(
            "Paint on 'corrections': label 2 = foreground, 1 = background, 0 = erase."
        )
        labels = Container(
            widgets=[
                self.seed_method,
                self.bg_fraction,
                self.erode,
                self.seeds,
                self.pseudo_button,
                self.flip,
                self.labels_info,
            ]
        )

        tune = self.session.state.fine_tune
        self.heads = Select(label="heads", choices=["fcam", "pixelcam"], value=tune["heads"])
        self.steps = SpinBox(label="steps", min=1, max=1000, value=tune["steps"])
        self.lr = FloatSpinBox(
            label="learning rate", min=1e-6, max=1e-1, step=1e-4, value=tune["lr"]
        )
        self.lr.native.setDecimals(6)
        self.train_button = PushButton(text="Fine-tune heads")
        self.train_info = _label("")
        train = Container(
            widgets=[self.heads, self.steps, self.lr, self.train_button, self.train_info]
        )

        self.export_level = SpinBox(label="map level", min=0, max=16, value=0)
        self.export_mask_button = PushButton(text="Mask…")
        self.export_geojson_button = PushButton(text="GeoJSON (QuPath)…")
        self.export_heatmap_button = PushButton(text="Heatmap…")
        self.export_model_button = PushButton(text="Model checkpoint…")
        self.session_info = _label("")
        self.save_session_button = PushButton(text="Save session as…")
        self.open_session_button = PushButton(text="Open session…")
        export = Container(
            widgets=[
                _label("Exports use the Threshold tab's map and threshold."),
                self.export_level,
                self.export_mask_button,
                self.export_geojson_button,
                self.export_heatmap_button,
                self.export_model_button,
                self.session_info,
                self.save_session_button,
                self.open_session_button,
            ]
        )

        self.tabs = QTabWidget()
        for name, container in (
            ("Inspect", inspect),
            ("Threshold", threshold),
            ("Labels", labels),
            ("Train", train),
            ("Export", export),
        ):
            scroll = QScrollArea()
            scroll.setWidgetResizable(True)
            scroll.setWidget(container.native)
            self.tabs.addTab(scroll, name)
        layout = QVBoxLayout()
        layout.addWidget(self.tabs)
        layout.addWidget(self.cancel_button.native)
        layout.addWidget(self.status.native)
        self.setLayout(layout)

        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self.draw_button.changed.connect(self.draw_region)
        self.checkpoint.changed.connect(self._checkpoint_changed)
        self.version.changed.connect(self._version_changed)
        self.diff_button.changed.connect(self.show_disagreement)
        self.thr_method.changed.connect(self._threshold_method_changed)
        self.threshold.changed.connect(self._threshold_changed)
        self.otsu_button.changed.connect(self.otsu)
        self.pseudo_button.changed.connect(self.make_pseudo_labels)
        self.flip.changed.connect(self._flip_toggled)
        self.train_button.changed.connect(self.fine_tune)
        self.export_mask_button.changed.connect(lambda: self.export("mask"))
        self.export_geojson_button.changed.connect(lambda: self.export("geojson"))
        self.export_heatmap_button.changed.connect(lambda: self.export("heatmap"))
        self.export_model_button.changed.connect(lambda: self.export("model"))
        self.save_session_button.changed.connect(self._save_session_as)
        self.open_session_button.changed.connect(self._open_session_dialog)
        for widget in (self.seed_method, self.bg_fraction, self.erode, self.seeds):
            widget.changed.connect(self._seeder_changed)
        for widget in (self.heads, self.steps, self.lr):
            widget.changed.connect(self._tune_changed)
        self._update_session_info()

    # ================================================================ layers & choices
    def _image_layers(self, _widget: object = None) -> list:
        from napari.layers import Image

        return [
            layer
            for layer in self.viewer.layers
            if isinstance(layer, Image) and not layer.metadata.get("wsol_method")
        ]

    def _refresh_images(self, _event: object = None) -> None:
        self.image.reset_choices()
        if self.image.value is None:
            choices = [c for c in self.image.choices if c is not None]
            if choices:
                active = self.viewer.layers.selection.active
                self.image.value = active if active in choices else choices[0]

    def _slide(self, layer):
        """The :class:`wsol.slide.Slide` behind an image layer (opened once, cached)."""
        from wsol.slide import ImageSlide, open_slide

        path = layer.metadata.get(SLIDE_KEY)
        key = path or f"layer:{id(layer.data)}"
        if key not in self._slides:
            if path:
                self._slides[key] = open_slide(path)
                if layer.metadata.get("mpp"):
                    self._slides[key].assume_mpp(layer.metadata["mpp"])
            else:
                data = layer.data[0] if layer.multiscale else layer.data
                self._slides[key] = ImageSlide.from_array(
                    np.asarray(data), f"<{layer.name}>", mpp=layer.metadata.get("mpp")
                )
        return self._slides[key]

    def _placement(self, layer) -> L.Placement:
        return L.Placement.of(layer)

    # ================================================================ model
    def _checkpoint_path(self) -> Path | None:
        value = str(self.checkpoint.value or "").strip()
        return None if value in ("", ".") else Path(value)

    def _checkpoint_changed(self) -> None:
        """A new start model: a new version history (the session's folder stays)."""
        self.session.state.base_model = (
            str(self._checkpoint_path()) if self._checkpoint_path() else None
        )
        self.session.state.versions = []
        self.session.state.current = 0
        self._model, self._model_source = None, ()
        self._refresh_versions()
        self._show_model_info()
        self._autosave()

    def _current_model_path(self) -> Path | None:
        if self.session.state.current == 0:
            return self._checkpoint_path()
        return self.session.model_path()

    def _model_for_job(self):
        """The current model, loaded on first use (called on the worker thread)."""
        import torch

        from wsol.demo import demo_model

        source = self._current_model_path()
        if self._model is None or self._model_source != source:
            model, _ = demo_model(source)
            device = "cuda" if torch.cuda.is_available() else "cpu"
            self._model = model.to(device)
            self._model_source = source
        return self._model

    def _show_model_info(self) -> None:
        from wsol.checkpoint import read_config
        from wsol.config import ModelConfig

        path = self._current_model_path()
        try:
            config = read_config(path) if path else ModelConfig(class_names=["normal", "lesion"])
        except InputError as exc:
            self.model_info.value = f"cannot read the model: {exc}"
            self.target.choices = []
            return
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu (no CUDA device)"
        mpp = f"{config.mpp:g} µm/px" if config.mpp else "unknown mpp"
        trained = "" if path else " - UNTRAINED demo weights"
        self.model_info.value = (
            f"{config.backbone}, {config.input_size} px at {mpp}\n"
            f"classes: {', '.join(config.class_names)}\ndevice: {device}{trained}"
        )
        names = list(config.class_names)
        if list(self.target.choices) != names:
            self.target.choices = names
        wanted = self.session.state.target
        self.target.value = wanted if wanted in names else names[1 if len(names) == 2 else 0]

    def _refresh_versions(self) -> None:
        names = self.session.version_names()
        with self.version.changed.blocked():
            self.version.choices = names
            self.version.value = names[self.session.state.current]

    def _version_changed(self) -> None:
        names = list(self.version.choices)
        if self.version.value not in names:
            return
        index = names.index(self.version.value)
        if index == self.session.state.current:
            return
        self.session.state.current = index
        self._autosave()
        self.status.value = f"Model version {self.version.value}."
        if self.store is not None:
            self.run()  # show what this version sees

    # ================================================================ jobs
    def _busy(self, busy: bool) -> None:
        for button in (
            self.run_button,
            self.pseudo_button,
            self.train_button,
            self.otsu_button,
            self.open_session_button,
        ):
            button.enabled = not busy
        self.cancel_button.enabled = busy

    def _start(self, job, desc: str, on_yield, on_return, total: int = 0) -> None:
        if self.worker is not None:
            self.status.value = "Busy: wait for the current job or cancel it."
            return
        self._stop.clear()
        self._pbar = progress(total=total, desc=desc)
        # Passing "errored" here replaces napari's default handler, which re-raises.
        worker = create_worker(
            job,
            _start_thread=False,
            _connect={
                "yielded": on_yield,
                "returned": on_return,
                "errored": self._failed,
                "finished": self._finished,
            },
        )
        self.worker = worker
        self._busy(True)
        self.status.value = f"{desc}…"
        worker.start()

    def _set_progress(self, done: int, total: int) -> None:
        if self._pbar is None:
            return
        if self._pbar.total != total:
            self._pbar.total = total
        self._pbar.n = done
        self._pbar.refresh()

    def cancel(self) -> None:
        """Ask the running job to stop after its current step; its results so far stay."""
        if self.worker is not None:
            self._stop.set()
            self.status.value = "Cancelling after the current step…"

    def _failed(self, exc: Exception) -> None:
        self.status.value = f"Error: {exc}"

    def _finished(self) -> None:
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        self.worker = None
        self._busy(False)
        next_job, self._then = self._then, None
        if next_job is not None:
            next_job()

    # ================================================================ scope
    def _source(self):
        layer = self.image.value
        if layer is None:
            raise InputError("choose an image layer (open a slide or a sample first)")
        return layer

    def view_box(self, layer) -> tuple[float, float, float, float]:
        """Level-0 box ``(y, x, h, w)`` of the part of ``layer`` on screen."""
        place = self._placement(layer)
        camera = self.viewer.scene.camera if hasattr(self.viewer, "scene") else self.viewer.camera
        cy, cx = camera.center[-2:]
        h, w = self.viewer.canvas.size
        if min(h, w) < 32:
            raise InputError("the canvas is too small to define a view; enlarge the window")
        zoom = camera.zoom
        y0, x0 = place.to_level0(cy - h / zoom / 2, cx - w / zoom / 2)
        y1, x1 = place.to_level0(cy + h / zoom / 2, cx + w / zoom / 2)
        return y0, x0, y1 - y0, x1 - x0

    def drawn_box(self, layer) -> tuple[float, float, float, float]:
        if REGION_LAYER not in self.viewer.layers or not len(self.viewer.layers[REGION_LAYER].data):
            raise InputError(
                f"draw a region first (button 'Draw a region', layer '{REGION_LAYER}')"
            )
        shape = np.asarray(self.viewer.layers[REGION_LAYER].data[-1])[:, -2:]
        shapes = self.viewer.layers[REGION_LAYER]
        world = shape * np.asarray(shapes.scale[-2:]) + np.asarray(shapes.translate[-2:])
        place = self._placement(layer)
        (y0, x0), (y1, x1) = (place.to_level0(*world.min(0)), place.to_level0(*world.max(0)))
        return y0, x0, y1 - y0, x1 - x0

    def draw_region(self) -> None:
        """Add (or select) the region layer in rectangle mode."""
        layer = self.image.value
        if REGION_LAYER not in self.viewer.layers:
            kwargs = {}
            if layer is not None:
                kwargs = {"scale": layer.scale[-2:], "translate": layer.translate[-2:]}
            self.viewer.add_shapes(
                name=REGION_LAYER,
                edge_color="yellow",
                face_color="transparent",
                edge_width=4,
                **kwargs,
            )
        shapes = self.viewer.layers[REGION_LAYER]
        self.viewer.layers.selection.active = shapes
        shapes.mode = "add_rectangle"
        self.scope.value = "drawn region"
        self.status.value = "Drag a rectangle on the image, then Compute maps."

    def _scope_box(self, layer, scope: str | None = None):
        scope = scope or self.scope.value
        slide = self._slide(layer)
        if scope == "whole slide":
            return None, clip_region(slide, *self.view_box(layer))
        box = self.view_box(layer) if scope == "current view" else self.drawn_box(layer)
        region = clip_region(slide, *box)
        return region, region

    # ================================================================ run maps
    def run(self) -> None:
        """Compute the chosen methods over the scope (the view's region first)."""
        try:
            layer = self._source()
            methods = list(self.methods.value)
            if not methods:
                raise InputError("choose at least one method")
            slide = self._slide(layer)
            restrict, roi = self._scope_box(layer)
        except InputError as exc:
            self.status.value = str(exc)
            return
        self.session.state.methods = methods
        self.session.state.scope = self.scope.value
        self.session.state.target = self.target.value
        self.session.state.slide = layer.metadata.get(SLIDE_KEY)
        self.session.state.slide_mpp = slide.mpp
        self.session.state.run_region = None if restrict is None else restrict.to_dict()
        path = self.session.store_path()
        target_name = self.target.value
        self._run_layer = layer
        self._store_opened = False

        def job():
            from wsol.infer import infer_slide, make_grid
            from wsol.region import tiles_in_box

            model = self._model_for_job()
            names = list(model.config.class_names)
            target = names.index(target_name) if target_name in names else None
            options = {"map_downsample": MAP_DOWNSAMPLE}
            if model.config.mpp and slide.mpp:
                options["mpp"] = model.config.mpp
            else:
                options["level"] = 0
            tiles = None
            if restrict is not None:
                grid = make_grid(slide, model.config.input_size, overlap=0.25, **options)
                tiles = tiles_in_box(grid, *restrict.box)
            yield ("start", 0, 1)
            result = yield from stream(
                infer_slide,
                self._stop,
                model,
                slide,
                path,
                methods,
                target=target,
                roi=roi.box,
                tiles=tiles,
                **options,
            )
            return result, L.load_levels(result.store)

        self._start(job, "WSOL maps", self._run_progress, self._run_done)

    def _run_progress(self, report) -> None:
        if report[0] == "start":
            return
        done, total = report
        self._set_progress(done, total)
        now = time.perf_counter()
        if not self._store_opened:
            self._open_store(self.session.store_path(), self._run_layer, show=False)
            self._store_opened = True
            self._stale = list(self.store.methods)
        if now - self._last_refresh < REFRESH_EVERY:
            return
        self._last_refresh = now
        # One overlay per tick: each update reads the view's part of one map on this
        # thread, and spreading them keeps every pause of the viewer short.
        if self._stale:
            self._show_overlay(self._stale.pop(0))
            return
        methods = [m for m in self.store.methods if m in self.viewer.layers]
        if methods:
            self._refresh_turn = (self._refresh_turn + 1) % len(methods)
            self.viewer.layers[methods[self._refresh_turn]].refresh()

    def _run_done(self, payload) -> None:
        result, levels = payload
        self._open_store(result.store.path, self._run_layer, levels)
        self._show_scores()
        n = result.tiles_run
        what = "Cancelled" if result.cancelled else "Done"
        self.status.value = f"{what}: {n} tiles in {result.seconds:.1f} s" + (
            f" ({result.tiles_total} in scope)" if result.cancelled else ""
        )
        self._autosave()

    def _open_store(self, path: Path, layer, levels: dict | None = None, show: bool = True) -> None:
        """Show the store's maps as overlays (and keep thresholds/disagreement on it).

        ``levels``: finished maps already read into memory (by :func:`L.load_levels` on
        the worker thread); without them the maps are read lazily as they stream in.
        With ``show`` False the overlays are left to :meth:`_show_overlay` (streaming).
        """
        store = MapStore.open(path)
        self.store = store
        self.levels = levels or {m: L.map_levels(store, m) for m in store.methods}
        self.session.state.store = str(Path(path).relative_to(self.session.folder))
        self._overlay_place = self._placement(layer)
        if show:
            for method in store.methods:
                self._show_overlay(method)
        names = list(store.methods)
        for combo in (self.thr_method, self.diff_a, self.diff_b):
            current = combo.value
            with combo.changed.blocked():
                combo.choices = names
                if current in names:
                    combo.value = current
        if len(names) > 1 and self.diff_a.value == self.diff_b.value:
            self.diff_b.value = names[1] if names[0] == self.diff_a.value else names[0]
        self.export_level.max = max(0, len(store.levels(names[0])) - 1)
        for method in names:
            if f"{method} mask" in self.viewer.layers:
                self._mask_layer(method, replace=True)
        if levels is not None:
            self._update_area()

    def _show_overlay(self, method: str) -> None:
        """Create or update the overlay layer of one map of :attr:`store`."""
        place = self._overlay_place
        grid = place.grid(self.store.scale(0))
        data, multiscale = L.layer_data(self.levels[method])
        if method in self.viewer.layers:
            overlay = self.viewer.layers[method]
            overlay.data = data
            overlay.scale, overlay.translate = grid["scale"], grid["translate"]
            return
        self.viewer.add_image(
            data,
            multiscale=multiscale,
            name=method,
            colormap=L.overlay_colormap(L.COLORMAPS.get(method, L.DEFAULT_COLORMAP)),
            opacity=0.7,
            blending="translucent",
            contrast_limits=(0.0, 1.0),
            metadata={"wsol_method": method, "slide_mpp": place.slide_mpp},
            **grid,
        )

    def _run_region_tiles(self) -> np.ndarray:
        from wsol.region import tiles_in_box

        region = self.session.state.run_region
        grid = self.store.grid
        if region is None:
            return np.arange(len(grid))
        return tiles_in_box(grid, *Region.from_dict(region).box)

    def _show_scores(self) -> None:
        probs = self.store.probabilities().reshape(-1, len(self.store.class_names))
        probs = probs[self._run_region_tiles()]
        probs = probs[~np.isnan(probs).any(axis=1)]
        if not len(probs):
            self.scores.value = "No tissue tiles in scope."
            return
        mean = probs.mean(axis=0)
        parts = [f"{n} {p:.2f}" for n, p in zip(self.store.class_names, mean, strict=True)]
        self.scores.value = f"class scores (mean of {len(probs)} tiles): " + ", ".join(parts)

    # ================================================================ disagreement
    def show_disagreement(self) -> None:
        a, b = self.diff_a.value, self.diff_b.value
        if self.store is None or a is None or b is None or a == b:
            self.status.value = "Compute two maps first, then choose two different ones."
            return
        levels = [DifferenceView(x, y) for x, y in zip(self.levels[a], self.levels[b], strict=True)]
        data, multiscale = L.layer_data(levels)
        name = f"|{a} - {b}|"
        place = self._placement(self._source())
        if name in self.viewer.layers:
            self.viewer.layers[name].data = data
        else:
            self.viewer.add_image(
                data,
                multiscale=multiscale,
                name=name,
                colormap=L.overlay_colormap("magma"),
                opacity=0.8,
                contrast_limits=(0.0, 1.0),
                metadata={"wsol_method": name, "slide_mpp": place.slide_mpp},
                **place.grid(self.store.scale(0)),
            )
        self.session.state.disagreement = [a, b]
        self._autosave()

    # ================================================================ thresholds
    def _mask_layer(self, method: str, replace: bool = False):
        name = f"{method} mask"
        t = self.session.state.thresholds.get(method, 0.5)
        views = [ThresholdView(level, t) for level in self.levels[method]]
        data, multiscale = L.layer_data(views)
        place = self._placement(self._source())
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            if replace:
                layer.data = data
            return layer
        class_name = self.target.value or "positive"
        return self.viewer.add_labels(
            data,
            multiscale=multiscale,
            name=name,
            opacity=0.45,
            colormap=L.label_colormap(L.MASK_COLORS),
            metadata={
                "wsol_method": method,
                "slide_mpp": place.slide_mpp,
                "label_names": {1: f"{class_name} ({method})"},
            },
            **place.grid(self.store.scale(0)),
        )

    def _threshold_method_changed(self) -> None:
        method = self.thr_method.value
        if method is None:
            return
        with self.threshold.changed.blocked():
            self.threshold.value = self.session.state.thresholds.get(method, 0.5)
        self._threshold_changed()

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
        layer.refresh()
        self._update_area()
        self._save_timer.start()

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
        positive = (values >= t) & inside
        px_area = scale**2
        mpp = self.store.mpp
        area = positive.sum() * px_area * (mpp**2 if mpp else 1)
        unit = "mm²" if mpp else "px²"
        shown = area / 1e6 if mpp else area
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
        self.area.value = f"{method} >= {t:.2f}: {shown:.4g} {unit}, {percent:.1f}% {what}"

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

    # ================================================================ labels
    def _edit_region(self) -> Region:
        layer = self._source()
        slide = self._slide(layer)
        scope = self.scope.value if self.scope.value != "whole slide" else "current view"
        _, box = self._scope_box(layer, scope)
        model_ds = self._analysis_downsample(slide)
        region = clip_region(slide, *box.box, downsample=model_ds, multiple=32)
        return check_editable(region)

    def _analysis_downsample(self, slide) -> float:
        from wsol.checkpoint import read_config

        path = self._current_model_path()
        mpp = read_config(path).mpp if path else None
        return float(mpp / slide.mpp) if (mpp and slide.mpp) else 1.0

    def make_pseudo_labels(self) -> None:
        """Pseudo-labels of the view (or drawn region) at the model's resolution."""
        try:
            layer = self._source()
            region = self._edit_region()
        except InputError as exc:
            self.status.value = str(exc)
            return
        slide = self._slide(layer)
        method = self.seed_method.value
        bg, erode = float(self.bg_fraction.value), int(self.erode.value)
        target_name = self.target.value
        session = self.session

        def job():
            from wsol.region import pseudo_labels, read_region_rgb, seed_map

            yield ("read", 0, 3)
            rgb = read_region_rgb(slide, region)
            yield ("map", 1, 3)
            model = self._model_for_job()
            names = list(model.config.class_names)
            target = names.index(target_name) if target_name in names else 1
            heat = seed_map(model, rgb, method, target)
            yield ("labels", 2, 3)
            pseudo = pseudo_labels(heat, bg, erode)
            session.save_labels(region, "pseudo", pseudo)
            return region, rgb, pseudo, session.load_labels(region, "corrections")

        self._edit_layer = layer
        self._start(job, "Pseudo-labels", self._steps_progress, self._pseudo_done, total=3)

    def _steps_progress(self, report) -> None:
        _, done, total = report
        self._set_progress(done, total)

    def _pseudo_done(self, result) -> None:
        region, rgb, pseudo, corrections = result
        self._show_labels(self._edit_layer, region, pseudo, corrections, rgb)
        self.status.value = (
            f"Pseudo-labels of {region.shape[1]} x {region.shape[0]} px: "
            f"{(pseudo == 2).mean():.0%} fg, {(pseudo == 1).mean():.0%} bg, rest ignored."
        )

    def _show_labels(self, layer, region, pseudo, corrections, rgb=None) -> None:
        self._edit = {"region": region, "pseudo": pseudo, "rgb": rgb}
        self.session.state.edit_region = region.to_dict()
        place = self._placement(layer)
        grid = place.grid(region.downsample, region.y, region.x)
        meta = {"slide_mpp": place.slide_mpp, "label_names": L.LABEL_NAMES}
        fresh = corrections is None
        if fresh:
            corrections = np.zeros(region.shape, np.uint8)
        self._saved_corrections = corrections.copy()
        # Layers are made once and then given new data: creating a layer costs the GUI
        # thread far more than replacing its pixels.
        if PSEUDO_LAYER in self.viewer.layers:
            self._replace(self.viewer.layers[PSEUDO_LAYER], pseudo, grid, meta)
        else:
            self.viewer.add_labels(
                pseudo,
                name=PSEUDO_LAYER,
                opacity=0.35,
                colormap=L.label_colormap(L.PSEUDO_COLORS),
                metadata=meta,
                **grid,
            ).editable = False
        if CORRECTIONS_LAYER in self.viewer.layers:
            painted = self.viewer.layers[CORRECTIONS_LAYER]
            self._replace(painted, corrections, grid, meta)
        else:
            painted = self.viewer.add_labels(
                corrections,
                name=CORRECTIONS_LAYER,
                opacity=0.8,
                colormap=L.label_colormap(L.CORRECTION_COLORS),
                metadata=meta,
                **grid,
            )
            painted.selected_label = 2
            painted.brush_size = 8
            painted.events.paint.connect(self._corrections_edited)
            painted.events.set_data.connect(self._corrections_edited)  # undo / redo
            painted.mouse_drag_callbacks.append(self._flip_click)
        if fresh:
            self.session.save_labels(region, "corrections", corrections)
        self.viewer.layers.selection.active = painted
        painted.mode = "pan_zoom" if self.flip.value else "paint"
        self._autosave()

    @staticmethod
    def _replace(layer, data, grid: dict, meta: dict) -> None:
        layer.data = data
        layer.scale, layer.translate = grid["scale"], grid["translate"]
        layer.metadata.update(meta)

    def _corrections_edited(self, _event: object = None) -> None:
        """Write the corrections as soon as they change (a crash loses nothing).

        A brush or fill stroke announces itself once its pixels are written; a single
        ``data_setitem`` or programmatic ``paint`` announces itself just *before*
        writing, so the save is repeated once the event loop turns.
        """
        self._save_corrections()
        QTimer.singleShot(0, self._save_corrections)

    def _save_corrections(self) -> None:
        if self._edit is None or CORRECTIONS_LAYER not in self.viewer.layers:
            return
        data = np.asarray(self.viewer.layers[CORRECTIONS_LAYER].data)
        if self._saved_corrections is not None and np.array_equal(data, self._saved_corrections):
            return
        if data.max(initial=0) > 2:
            self.status.value = "Corrections use labels 1 (background) and 2 (foreground) only."
        self.session.save_labels(self._edit["region"], "corrections", np.minimum(data, 2))
        self._saved_corrections = data.copy()

    def _flip_toggled(self) -> None:
        if CORRECTIONS_LAYER in self.viewer.layers:
            layer = self.viewer.layers[CORRECTIONS_LAYER]
            layer.mode = "pan_zoom" if self.flip.value else "paint"
            self.viewer.layers.selection.active = layer

    def _flip_click(self, layer, event) -> None:
        if not self.flip.value or layer.mode != "pan_zoom" or self._edit is None:
            return
        row, col = (round(float(v)) for v in layer.world_to_data(event.position)[-2:])
        self.flip_at(row, col)

    def flip_at(self, row: int, col: int) -> bool:
        """Swap fg/bg of the connected region at ``(row, col)`` (corrections grid)."""
        layer = self.viewer.layers[CORRECTIONS_LAYER]
        labels = effective_labels(self._edit["pseudo"], np.asarray(layer.data))
        found = flip_component(labels, row, col)
        if found is None:
            self.status.value = "Nothing to flip there (pixel not labelled)."
            return False
        indices, value = found
        layer.data_setitem(indices, value)  # one undoable step
        self._save_corrections()
        self.status.value = (
            f"Flipped {len(indices[0])} px to {L.LABEL_NAMES[value]} (Ctrl+Z undoes)."
        )
        return True

    def _seeder_changed(self) -> None:
        self.session.state.seeder = {
            "method": self.seed_method.value,
            "bg_fraction": float(self.bg_fraction.value),
            "erode": int(self.erode.value),
            "seeds_per_class": int(self.seeds.value),
        }
        self._autosave()

    def _tune_changed(self) -> None:
        self.session.state.fine_tune = {
            "heads": list(self.heads.value),
            "steps": int(self.steps.value),
            "lr": float(self.lr.value),
        }
        self._autosave()

    # ================================================================ fine-tuning
    def fine_tune(self) -> None:
        """One round of the ``heads`` stage on the labelled region, then fresh overlays."""
        from wsol.train import TrainConfig

        if self._edit is None or CORRECTIONS_LAYER not in self.viewer.layers:
            self.status.value = "Make pseudo-labels first (Labels tab)."
            return
        heads = tuple(self.heads.value)
        if not heads:
            self.status.value = "Choose the heads to fine-tune."
            return
        self._save_corrections()
        corrections = np.minimum(np.asarray(self.viewer.layers[CORRECTIONS_LAYER].data), 2)
        config = TrainConfig(
            steps=int(self.steps.value),
            batch_size=1,
            heads=heads,
            lr=float(self.lr.value),
            cam_method=self.seed_method.value,
            bg_fraction=float(self.bg_fraction.value),
            erode=int(self.erode.value),
            seeds_per_class=int(self.seeds.value),
        )
        edit = self._edit
        slide = self._slide(self._source())
        target_name = self.target.value
        session = self.session

        def job():
            from wsol.region import fine_tune, read_region_rgb

            rgb = edit["rgb"] if edit["rgb"] is not None else read_region_rgb(slide, edit["region"])
            edit["rgb"] = rgb
            model = copy.deepcopy(self._model_for_job())
            names = list(model.config.class_names)
            target = names.index(target_name) if target_name in names else 1
            result = yield from stream(
                fine_tune, self._stop, model, rgb, target, corrections, config
            )
            saved = None
            if not result.cancelled:  # written here: a 12 MB save would stall the viewer
                saved = model.save(session.next_version_path())
            return model, result, saved

        self._start(
            job, "Fine-tuning heads", self._train_progress, self._train_done, total=config.steps
        )

    def _train_progress(self, report) -> None:
        (p,) = report
        self._set_progress(p.step, p.steps)
        terms = ", ".join(f"{k} {v:.3f}" for k, v in p.losses.items())
        self.train_info.value = f"step {p.step}/{p.steps}: {terms}"

    def _train_done(self, payload) -> None:
        model, result, saved = payload
        if result.cancelled:
            self.status.value = "Fine-tuning cancelled; the model version is unchanged."
            return
        path = self.session.add_version(path=saved)
        self._model, self._model_source = model, path
        self._refresh_versions()
        self.status.value = (
            f"Saved {path.name} ({result.steps_done} steps, {result.seconds:.1f} s)."
        )
        if self.store is not None:
            self._then = self.run  # refresh the overlays with the new heads

    # ================================================================ export
    def _ask_save_path(self, default: Path, filters: str) -> Path | None:
        path, _ = QFileDialog.getSaveFileName(self, "Export", str(default), filters)
        return Path(path) if path else None

    def _ask_folder(self, title: str) -> Path | None:
        path = QFileDialog.getExistingDirectory(self, title, str(self.session.folder.parent))
        return Path(path) if path else None

    def _stem(self) -> str:
        from wsol.slide import slide_stem

        layer = self.image.value
        path = layer.metadata.get(SLIDE_KEY) if layer is not None else None
        return slide_stem(path) if path else (layer.name if layer is not None else "image")

    def export(self, what: str, path: Path | None = None) -> Path | None:
        """Export the mask / GeoJSON / heatmap of the threshold map, or the model."""
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
        path = path or self._ask_save_path(self.session.folder.parent / name, filters)
        if path is None:
            return None
        try:
            if what == "mask":
                if path.suffix.lower() == ".png":
                    write_mask_png(self.store, method, path, t, level)
                else:
                    write_mask_tiff(self.store, method, path, t, level)
            elif what == "geojson":
                write_geojson(self.store, method, path, t, class_name=self.target.value)
            elif what == "heatmap":
                write_heatmap_tiff(self.store, method, path, level)
            else:
                from wsol.checkpoint import load_model

                model = self._model or load_model(self._current_model_path())
                model.save(path)
        except (InputError, ValueError, OSError) as exc:
            self.status.value = f"Error: {exc}"
            return None
        self.status.value = f"Wrote {path}"
        return path

    # ================================================================ session
    def _autosave(self) -> None:
        self._save_session()

    def _save_session(self) -> None:
        self.session.save()
        self._update_session_info()

    def _update_session_info(self) -> None:
        self.session_info.value = f"Session folder (saved as you work):\n{self.session.folder}"

    def _save_session_as(self) -> None:
        folder = self._ask_folder("Save the session into a folder")
        if folder is not None:
            self.save_session(folder)

    def save_session(self, folder: str | Path) -> Path:
        """Copy the session to ``folder`` and keep working there."""
        self._save_corrections()
        self.session = self.session.copy_to(folder)
        if self.store is not None and self.session.state.store:
            self.store = None  # reopened from the copy below
            path = self.session.path(self.session.state.store)
            self._open_store(path, self._source(), L.load_levels(MapStore.open(path)))
        self._update_session_info()
        self.status.value = f"Session saved to {self.session.folder}"
        return self.session.folder

    def _open_session_dialog(self) -> None:
        folder = self._ask_folder("Open a session folder")
        if folder is not None:
            self.restore_session(folder)

    def restore_session(self, folder: str | Path) -> None:
        """Reopen a session: slide, model version, overlays, thresholds, labels."""
        try:
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
                if state.slide_mpp and not layer.metadata.get("mpp"):
                    layer.metadata["mpp"] = state.slide_mpp
                    layer.scale = (state.slide_mpp, state.slide_mpp)
                    layer.units = ("um", "um")
        elif self.image.value is None:
            self.status.value = "Error: the session has no slide file; open its image first."
            return
        self.session = session
        if layer is not None:
            self.image.value = layer
        layer = self._source()
        with self.checkpoint.changed.blocked():
            self.checkpoint.value = state.base_model or ""
        self._model, self._model_source = None, ()
        self._refresh_versions()
        self._show_model_info()
        with self.methods.changed.blocked():
            self.methods.value = [m for m in state.methods if m in METHODS]
        self.scope.value = state.scope if state.scope in SCOPES else SCOPES[0]
        for widget, key in (
            (self.seed_method, "method"),
            (self.bg_fraction, "bg_fraction"),
            (self.erode, "erode"),
            (self.seeds, "seeds_per_class"),
        ):
            with widget.changed.blocked():
                widget.value = state.seeder[key]
        with self.heads.changed.blocked():
            self.heads.value = state.fine_tune["heads"]
        store_path = session.path(state.store)
        if store_path is not None and store_path.exists():
            self._open_store(store_path, layer, L.load_levels(MapStore.open(store_path)))
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
