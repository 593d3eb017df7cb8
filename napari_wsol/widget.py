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

import threading
import time
from collections import deque
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
from napari.layers import Image
from napari.qt.threading import create_worker
from napari.utils import progress
from qtpy.QtCore import Qt, QTimer, Signal
from qtpy.QtGui import QMovie
from qtpy.QtOpenGLWidgets import QOpenGLWidget
from qtpy.QtWidgets import (
    QLabel,
    QScrollArea,
    QSizePolicy,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from napari_wsol import layers as L
from napari_wsol._export import ExportSessionMixin
from napari_wsol._heap import freeze_startup_heap
from napari_wsol._labels import LabelsMixin
from napari_wsol._pixel_size import UNKNOWN, PixelSizeMixin, slide_key
from napari_wsol._thresholds import ThresholdsMixin
from napari_wsol.jobs import stream
from napari_wsol.reader import SLIDE_KEY
from wsol.cams import METHODS
from wsol.errors import InputError
from wsol.infer import MapStore
from wsol.refine import DenseCRFParams
from wsol.region import (
    Region,
    clip_region,
)
from wsol.samples import sample_model_path
from wsol.session import Session, SessionWriter, default_session_folder
from wsol.train import RoundCache

if TYPE_CHECKING:
    import napari

SCOPES = ["current view", "drawn region", "whole slide"]
REGION_LAYER = "WSOL region"
#: Analysis pixels per heatmap pixel in the app (finer than ``wsol predict``'s 4, so
#: F-CAM's full-resolution maps keep their edges on screen).
MAP_DOWNSAMPLE = 2
#: Overlay layers are refreshed at most this often while a run streams in (seconds).
REFRESH_EVERY = 0.5
TURN_PAUSE_MS = 5
#: After the dock's first frames, before a click can start a job (the demo's: 300 ms).
WARM_AFTER_MS = 150
#: How long the threshold slider rests before the mask's thumbnail and the area follow
#: it. During a drag only the canvas follows: a move then costs the canvas's frame, not
#: also the layer list's repaint of a new thumbnail and the area's statistics.
SETTLE_MS = 150
#: The map a run shows first, the first of these it computed (else its first method);
#: the other overlays are added hidden: stacked heatmaps hide one another.
LEAD_METHODS = ("fcam", "pixelcam")


def _label(text: str) -> Label:
    """A Label that wraps, so long messages do not widen the dock (and shrink the canvas)."""
    label = Label(value=text)
    label.native.setWordWrap(True)
    return label


def _show_every_row(select: Select) -> None:
    """Size a multiple-choice list to its rows: none is chosen out of sight below a
    scroll bar, and a short list leaves no empty box."""
    rows = select.native
    rows.setFixedHeight(rows.sizeHintForRow(0) * rows.count() + 2 * rows.frameWidth())


def _warm_labels() -> None:
    """Pay napari's one-off imports for Labels layers now, with the widget's start-up.

    The first Labels layer of a process imports pandas and ~500 other modules (0.5 s on
    a 2-core CPU); left to the first pseudo-label or mask layer, that freezes the viewer
    in the middle of the user's work.
    """
    from napari.layers import Labels

    Labels(np.zeros((1, 1), np.uint8))
    # A Labels layer's polygon tool has line visuals that each build vispy's dash atlas;
    # the patterns are cached after the first build, which takes 60-80 ms of pure
    # Python. The app's layers build the tool when it is first picked
    # (layers.defer_tool_overlays), other Labels layers inside their add.
    try:
        from vispy.visuals.line.dash_atlas import DashAtlas
    except ImportError:  # moved in a later vispy: only the first add is slower
        return
    DashAtlas()


def faithfulness_html(target: str, scores: dict[str, dict]) -> str:
    """A small rich-text table of :func:`wsol.region.view_faithfulness`'s scores."""
    from wsol.evaluate import FAITHFULNESS_COLUMNS

    columns = [
        (key, title)
        for key, title in FAITHFULNESS_COLUMNS
        if any(row[key] == row[key] for row in scores.values())  # skip all-NaN columns
    ]
    head = "".join(f"<th>{title}</th>" for _, title in columns)
    body = "".join(
        f"<tr><td>{method}</td>"
        + "".join(f"<td align='right'>{row[key]:.1f}</td>" for key, _ in columns)
        + "</tr>"
        for method, row in scores.items()
    )
    tiles = max((row["pairs"] for row in scores.values()), default=0)
    return (
        f"<table cellspacing='4'><tr><th>{target}</th>{head}</tr>{body}</table>"
        f"<small>{tiles} tiles of the view, all in %</small>"
    )


class WSOLWidget(ThresholdsMixin, LabelsMixin, PixelSizeMixin, ExportSessionMixin, QWidget):
    """Dock widget of the WSOL app (see the module docstring)."""

    _write_failed = Signal(str)  # from the session writer's thread

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session = Session(default_session_folder())
        self._write_failed.connect(self._session_write_failed)
        self._session_writer = SessionWriter(self._write_failed.emit)
        self._model = None
        self._model_source: object = ()  # what self._model was loaded from
        self._slides: dict[str, object] = {}
        # Each slide's tissue mask, detected by its first maps job: the refresh after
        # every fine-tuning round then skips about a second of overview and thresholds.
        self._tissue: dict[str, object] = {}
        self.store = None
        self.worker = None
        self._stop = threading.Event()
        self._pbar = None
        self._last_refresh = 0.0
        self._edit: dict | None = None  # region, pseudo labels, rgb of the labelled region
        # The labelled region's encoder features and heads' maps, from one fine-tuning
        # round to the next.
        self._round_cache = RoundCache()
        self._edit_layer = None  # the image layer the pseudo-labels are on
        # One session per image (slide_key): work on another image moves to its own.
        self._session_key: str | None = None
        self._sessions: dict[str, Session] = {}
        self._maps_layer = None  # the image layer the shown maps are of
        self._lead = None  # the overlay a run shows (LEAD_METHODS)
        self._added_hidden: list[str] = []  # overlays this run added hidden
        self._saved_corrections: np.ndarray | None = None
        self._then = None  # a job to start when the current one finishes
        self._tissue_cache: tuple | None = None
        self._masks_coming: set[str] = set()  # mask layers queued to be made
        self._thumbnails_due: set[str] = set()  # masks moved since the slider last rested
        self._painted: list = []  # PaintedLabels the masks keep (oldest first)
        self._painted_files: dict = {}  # path -> corrections read once (_painted_file)
        self._refresh_turn = -1
        self.levels: dict = {}
        self._turns: deque = deque()  # GUI steps waiting for their own event-loop turn
        self._in_turn = False
        self._canvases: list = []  # the viewer's OpenGL canvases, found once
        self._turn_timer = QTimer(self)
        self._turn_timer.setSingleShot(True)
        # A pause between steps, not 0: a zero timer would be due before the other
        # timers (napari's and Qt's) that waited through the step's repaint.
        self._turn_timer.setInterval(TURN_PAUSE_MS)
        self._turn_timer.timeout.connect(self._next_turn)
        _warm_labels()

        self._build()
        start = self._checkpoint_path()
        self.session.state.base_model = str(start) if start else None
        self._refresh_versions()
        self.viewer.layers.events.inserted.connect(self._refresh_images)
        self.viewer.layers.events.removed.connect(self._refresh_images)
        self._refresh_images()
        self._show_pixel_size()
        self._save_timer = QTimer(self)
        self._save_timer.setSingleShot(True)
        self._save_timer.setInterval(300)
        self._save_timer.timeout.connect(self._save_session)
        self._settle_timer = QTimer(self)
        self._settle_timer.setSingleShot(True)
        self._settle_timer.setInterval(SETTLE_MS)
        self._settle_timer.timeout.connect(self._threshold_settled)
        self._show_model_info()
        freeze_startup_heap()
        # One-off costs of napari's, paid once the dock has shown, not in the first paint.
        self._warm_timer = QTimer(self)
        self._warm_timer.setSingleShot(True)
        self._warm_timer.setInterval(WARM_AFTER_MS)
        self._warm_timer.timeout.connect(self._warm_up)
        self._warm_timer.start()

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
        self.pixel_size = FloatSpinBox(label="pixel size (µm)", min=0.0, max=1000.0, step=0.05)
        # Decimals before any value (the spin box rounds to them); a value applies on
        # Enter or leaving the field, not at every keystroke of "0.25".
        self.pixel_size.native.setDecimals(4)
        self.pixel_size.native.setSpecialValueText(UNKNOWN)
        self.pixel_size.native.setKeyboardTracking(False)
        self.methods = Select(
            label="methods", choices=list(METHODS), value=["cam", "gradcampp", "fcam", "pixelcam"]
        )
        _show_every_row(self.methods)
        self.target = ComboBox(label="explain class", choices=[])
        self.scope = RadioButtons(label="scope", choices=SCOPES, value=SCOPES[0])
        self.dense_crf = CheckBox(
            text="Refine maps (dense CRF)",
            value=bool(self.session.state.dense_crf),
            tooltip="Fully connected CRF on each tile's pixels: snaps the maps to tissue edges.",
        )
        self.draw_button = PushButton(text="Draw a region")
        self.run_button = PushButton(text="Compute maps")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.status = _label("")
        self.scores = _label("")
        self.diff_a = ComboBox(label="map A", choices=[])
        self.diff_b = ComboBox(label="map B", choices=[])
        self.diff_button = PushButton(text="Show |A - B|")
        self.faith_button = PushButton(
            text="Faithfulness of the view",
            tooltip="AD: Average Drop, IC: Increase in Confidence, AR: Average Retention, "
            "Del/Ins: deletion/insertion AUC (arrows: which way is better).",
        )
        self.faith_table = _label("")
        inspect = Container(
            widgets=[
                self.checkpoint,
                self.model_info,
                self.version,
                self.image,
                self.pixel_size,
                self.methods,
                self.target,
                self.scope,
                self.dense_crf,
                self.draw_button,
                self.run_button,
                self.scores,
                _label("Where to review: two maps' disagreement"),
                self.diff_a,
                self.diff_b,
                self.diff_button,
                _label("Do the chosen maps follow the classifier?"),
                self.faith_button,
                self.faith_table,
            ]
        )

        self.thr_method = ComboBox(label="map", choices=[])
        self.threshold = FloatSlider(label="threshold", min=0.0, max=1.0, step=0.01, value=0.5)
        self.otsu_button = PushButton(text="Otsu")
        self.area = _label("Compute maps (Inspect tab) to threshold one here.")
        self.keep_corrections = CheckBox(
            text="masks keep the corrections",
            value=self.session.state.masks_keep_corrections,
            tooltip="Pixels painted in the Labels tab are foreground or background in "
            "every mask, its area and its exports, whatever the threshold says. "
            "Untick to see a map's own threshold.",
        )
        threshold = Container(
            widgets=[
                self.thr_method,
                self.threshold,
                self.otsu_button,
                self.keep_corrections,
                self.area,
            ]
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
            "Paint on 'corrections': label 2 = foreground, 1 = background, 0 = erase. "
            "The masks keep what you paint (Threshold tab)."
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
        _show_every_row(self.heads)
        self.steps = SpinBox(label="steps (at most)", min=1, max=1000, value=tune["steps"])
        # A round stops early, on a step, to stay within this (0: every step), so it
        # takes about as long on a slow CPU as on a fast one, with fewer steps there.
        self.seconds = FloatSpinBox(
            label="time limit (s)", min=0.0, max=3600.0, step=0.5, value=tune["seconds"]
        )
        self.lr = FloatSpinBox(label="learning rate", min=1e-6, max=1e-1, step=1e-4)
        # Decimals first: the spin box rounds its value to them (1.5e-4 became 1e-4).
        self.lr.native.setDecimals(6)
        self.lr.value = tune["lr"]
        self.guide = CheckBox(
            text="Also guide the classifier's own CAM", value=bool(tune.get("guide", False))
        )
        self.guide_info = _label(
            "Slower: trains the encoder on your corrections (a full forward and backward "
            "per step), so every map changes, CAMs included. Needs painted corrections."
        )
        self.train_button = PushButton(text="Fine-tune heads")
        self.train_info = _label("")
        train = Container(
            widgets=[
                self.heads,
                self.steps,
                self.seconds,
                self.lr,
                self.guide,
                self.guide_info,
                self.train_button,
                self.train_info,
            ]
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
        tabs = (
            ("Inspect", inspect),
            ("Threshold", threshold),
            ("Labels", labels),
            ("Train", train),
            ("Export", export),
        )
        for name, container in tabs:
            scroll = QScrollArea()
            scroll.setWidgetResizable(True)
            scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
            scroll.setWidget(container.native)
            self.tabs.addTab(scroll, name)
            # Controls keep their natural height and stack at the top of the tab; Qt
            # otherwise shares the tab's spare height out and spreads them apart.
            container.native.layout().addStretch(1)
        # Let every control shrink to the dock's width (texts wrap, fields narrow)
        # instead of being cut off at the dock's edge.
        for control in [c for _, container in tabs for c in container] + [self.status]:
            native = control.native
            native.setMinimumWidth(0)
            policy = native.sizePolicy()
            policy.setHorizontalPolicy(QSizePolicy.Policy.Ignored)
            policy.setVerticalPolicy(QSizePolicy.Policy.Maximum)
            native.setSizePolicy(policy)
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
        self.image.changed.connect(self._show_pixel_size)
        self.pixel_size.changed.connect(self._pixel_size_changed)
        self.diff_button.changed.connect(self.show_disagreement)
        self.faith_button.changed.connect(self.faithfulness)
        self.thr_method.changed.connect(self._threshold_method_changed)
        self.threshold.changed.connect(self._threshold_moved)
        self.otsu_button.changed.connect(self.otsu)
        self.keep_corrections.changed.connect(self._keep_corrections_toggled)
        self.pseudo_button.changed.connect(lambda: self.make_pseudo_labels())
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
        for widget in (self.heads, self.steps, self.seconds, self.lr, self.guide):
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
        key = slide_key(layer)
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
        self._save_session()

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

        from wsol.precision import autocast_dtype, dtype_name

        device = "cuda" if torch.cuda.is_available() else "cpu (no CUDA device)"
        # What the maps are computed in (infer_slide's default), so a user comparing
        # two machines' maps knows why they differ in the last digits.
        device += f", maps in {dtype_name(autocast_dtype(device.split()[0]))}"
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
            # Emptied first: magicgui keeps the items that survive a change of choices
            # where they were and appends the rest, which scrambled the order.
            self.version.choices = []
            self.version.choices = names
            self.version.value = names[self.session.state.current]

    def _version_changed(self) -> None:
        names = self.session.version_names()  # by name: never trust the box's order
        if self.version.value not in names:
            return
        index = names.index(self.version.value)
        if index == self.session.state.current:
            return
        self.session.state.current = index
        self._save_session()
        self.status.value = f"Model version {self.version.value}."
        if self.store is not None and self._maps_of_session():
            # Show what this version sees, where the shown maps are of this session's
            # image (maps of another image belong to that image's session).
            self._run_maps(self._maps_layer)

    # ================================================================ jobs
    def _busy(self, busy: bool) -> None:
        for button in (
            self.run_button,
            self.pseudo_button,
            self.train_button,
            self.otsu_button,
            self.open_session_button,
            # A job runs with one model: choosing another mid-job would leave the
            # session on it and the overlays on the job's.
            self.version,
            self.checkpoint,
        ):
            button.enabled = not busy
        self.cancel_button.enabled = busy
        self._show_pixel_size()  # not while a job works on the image

    def _refuse_if_busy(self) -> bool:
        if self.worker is not None:
            self.status.value = "Busy: wait for the current job or cancel it."
            return True
        return False

    def _start(self, job, desc: str, on_yield, on_return, total: int = 0) -> bool:
        """Run ``job`` (a generator function) in a napari worker; False when busy."""
        if self._refuse_if_busy():
            return False
        self._stop.clear()
        self._pbar = progress(total=total, desc=desc)
        self._still_activity_indicator()
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
        return True

    def _still_activity_indicator(self) -> None:
        """Hold napari's animated "in progress" indicator on its first frame.

        In a window with an OpenGL canvas each frame of that GIF makes Qt composite the
        whole window through OpenGL. With a software renderer (Mesa's llvmpipe) that
        took about one of two cores for as long as a job ran, away from the job: a
        fine-tuning round on the view took 2.5x as long (docs/BENCHMARKS.md). The
        progress bar in napari's activity dialog still moves with every step.
        """
        top = self
        while top.parentWidget() is not None:  # the viewer's window, docked or floating
            top = top.parentWidget()
        button = top.findChild(QToolButton, "QtActivityButton")
        if button is None or button.parentWidget() is None:
            return
        for label in button.parentWidget().findChildren(QLabel):
            movie = label.movie()
            if movie is not None and movie.state() == QMovie.MovieState.Running:
                movie.setPaused(True)

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
            self._then = None  # nor the job queued after it
            self.status.value = "Cancelling after the current step…"

    def _failed(self, exc: Exception) -> None:
        self.status.value = f"Error: {exc}"

    def _later(self, step, *args, first: bool = False) -> None:
        """Run ``step(*args)`` on an event-loop turn of its own, after the steps queued
        before (``first``: before them, on the very next turn).

        A new napari layer costs the GUI thread 70-160 ms here and a repaint 40-100 ms;
        done back to back in one handler they froze the viewer for 300+ ms. One per
        turn, napari repaints and takes input between them.
        """
        if first:
            self._turns.appendleft((step, args))
        else:
            self._turns.append((step, args))
        if not self._in_turn and not self._turn_timer.isActive():
            self._turn_timer.start()

    def _stepper(self, spread: bool):
        """``run(step, *args)``: on a turn of its own (``spread``) or right now."""
        return self._later if spread else lambda step, *args: step(*args)

    def _next_turn(self) -> None:
        step, args = self._turns.popleft()
        self._in_turn = True
        try:
            step(*args)
        finally:
            self._in_turn = False
            if self._turns:
                self._turn_timer.start()

    def _resume_window(self) -> None:
        self.window().setUpdatesEnabled(True)  # and schedules a repaint

    def _resume_canvases(self) -> None:
        for canvas in self._canvas_widgets():
            canvas.setUpdatesEnabled(True)

    def _canvas_widgets(self) -> list:
        # They live as long as the window; finding them walks its ~1000 widgets (2 ms).
        if not self._canvases:
            self._canvases = self.window().findChildren(QOpenGLWidget)
        return self._canvases

    def _finished(self) -> None:
        # The job counts as running until the layers its result queued exist.
        if self._turns:
            self._later(self._finish)
        else:
            self._finish()

    def _finish(self) -> None:
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        self.worker = None
        self._busy(False)
        next_job, self._then = self._then, None
        if next_job is not None:
            next_job()

    def _warm_up(self) -> None:
        """napari's one-off costs of a first job, each on an idle turn of its own."""
        self._later(self._warm_progress)
        self._later(self._warm_brush_circle)

    def _warm_progress(self) -> None:
        """Make and close one napari progress bar before the first job does.

        The first of a process shows napari's activity indicator in the status bar,
        which grows it by a pixel: inside the call the canvas is resized and drawn
        twice (60-75 ms in software OpenGL), in the first job's start. Later ones take
        2-3 ms.
        """
        progress(total=0, desc="napari-wsol").close()

    def _warm_brush_circle(self) -> None:
        made = L.make_brush_circle(self.viewer)  # this turn: the visual
        if made:
            self._later(L.draw_out_of_sight, made)  # the next: its shaders, drawn

    # ================================================================ scope
    def _source(self):
        layer = self.image.value
        if layer is None:
            raise InputError("choose an image layer (open a slide or a sample first)")
        return layer

    def view_box(self, layer) -> tuple[float, float, float, float]:
        """Level-0 box ``(y, x, h, w)`` of the part of ``layer`` on screen."""
        place = L.Placement.of(layer)
        camera = L.camera_of(self.viewer)
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
        place = L.Placement.of(layer)
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
        self._run_maps(None)

    def _run_maps(self, layer) -> None:
        """:meth:`run` on ``layer`` while it is open, else on the image chosen in the
        Inspect tab."""
        if self._refuse_if_busy():
            return
        try:
            if layer is None or layer not in self.viewer.layers:
                layer = self._source()
            methods = list(self.methods.value)
            if not methods:
                raise InputError("choose at least one method")
            slide = self._slide(layer)
            restrict, roi = self._scope_box(layer)
        except InputError as exc:
            self.status.value = str(exc)
            return
        self._follow_image(layer)
        self.session.state.methods = methods
        self.session.state.scope = self.scope.value
        self.session.state.dense_crf = bool(self.dense_crf.value)
        self.session.state.target = self.target.value
        self.session.state.slide = layer.metadata.get(SLIDE_KEY)
        self.session.state.slide_mpp = slide.mpp
        self.session.state.run_region = None if restrict is None else restrict.to_dict()
        self._scale_note = self._pixel_size_note(slide)
        self._added_hidden = []
        path = self.session.store_path()
        target_name = self.target.value
        refine = DenseCRFParams() if self.dense_crf.value else None
        tissue_mask = self._tissue.get(slide_key(layer))
        self._run_layer = layer
        self._store_opened = False
        layers_made = self._layers_made = threading.Event()

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
                refine=refine,
                tissue_mask=tissue_mask,
                hold_after_first=layers_made,
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
            # The store exists and the engine waits (``hold_after_first``) until the
            # overlays are made or pointed at it, one per turn, with no inference
            # competing for the CPU: napari's layer creation then stays under 100 ms.
            self._store_opened = True
            try:
                store = MapStore.open(self.session.store_path())
                self._open_store(store, self._run_layer, spread=True)
            finally:
                self._later(self._layers_made.set)
            self._last_refresh = now
            return
        if now - self._last_refresh < REFRESH_EVERY:
            return
        self._last_refresh = now
        # One overlay per tick: each refresh reads the view's part of one map on this
        # thread, and spreading them keeps every pause of the viewer short.
        methods = [m for m in self.store.methods if m in self.viewer.layers]
        if methods:
            self._refresh_turn = (self._refresh_turn + 1) % len(methods)
            self._pause_canvases()
            L.refresh_in_place(self.viewer.layers[methods[self._refresh_turn]])

    def _run_done(self, payload) -> None:
        result, levels = payload
        if result.tissue_mask is not None:
            self._tissue[slide_key(self._run_layer)] = result.tissue_mask
        self._open_store(result.store, self._run_layer, levels, spread=True)
        # Hidden, not removed: removing a mask layer in this state (by hand too) crashed
        # llvmpipe's next frame of the slide (docs/scripts/stale_layer_crash.py).
        self._later(self._hide_layers, self._stale_layers(result.store.methods))
        self._show_scores()
        n = result.tiles_run
        if result.cancelled:
            done = f"Cancelled: {n} tiles in {result.seconds:.1f} s ({result.tiles_total} in scope)"
        elif n == 0:
            # A version's maps are kept: picking it again, or a scope already computed,
            # shows them without computing a tile.
            done = f"Done: the stored maps of all {result.tiles_total} tiles, none recomputed"
        else:
            done = f"Done: {n} tiles in {result.seconds:.1f} s"
        if result.no_tissue_found:
            done += ". No tissue found on the slide (no stain), so every tile was run"
        if self._added_hidden:
            done += (
                f". Showing {self._lead}; {', '.join(self._added_hidden)} added hidden "
                f"(click their eye in the layer list)."
            )
        self.status.value = done + self._scale_note
        self._save_session()

    def _model_mpp(self) -> float | None:
        """The current model's training µm/px (None: unknown); InputError for a bad file."""
        from wsol.checkpoint import read_config

        path = self._current_model_path()
        return read_config(path).mpp if path else None

    def _pixel_size_note(self, slide) -> str:
        """A warning for the status line when the image records no pixel size but the
        model was trained at one: the maps then assume the model's scale."""
        try:
            model_mpp = self._model_mpp()
        except InputError:  # the run reports a bad checkpoint itself
            return ""
        if slide.mpp or not model_mpp:
            return ""
        return (
            f"\nThe image records no pixel size: each of its pixels was read as "
            f"{model_mpp:g} µm, the model's scale. At another scale the maps are unreliable: "
            f"set its pixel size above."
        )

    def _open_store(
        self,
        store: MapStore,
        layer,
        levels: dict | None = None,
        spread: bool = False,
    ) -> None:
        """Show the store's maps as overlays (and keep thresholds/disagreement on it).

        ``levels``: finished maps already read into memory (by :func:`L.load_levels` on
        the worker thread); without them the maps are read lazily as they stream in.
        With ``spread`` each layer is made or updated on its own turn (:meth:`_later`).
        """
        run = self._stepper(spread)
        self.store = store
        self._maps_layer = layer  # first: which image's corrections apply follows from it
        self._painted = self._painted_now()
        self._lead = next((m for m in LEAD_METHODS if m in store.methods), store.methods[0])
        self.levels = levels or {m: L.map_levels(store, m) for m in store.methods}
        self.session.state.store = str(store.path.relative_to(self.session.folder))
        self._overlay_place = L.Placement.of(layer)
        for method in store.methods:
            run(self._show_overlay, method)
        if levels is not None:  # finished maps: hidden overlays get their thumbnails
            for method in store.methods:
                run(self._thumbnail_when_hidden, method)
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
                run(self._mask_layer, method, True)
        if self.session.state.disagreement:
            run(self._refresh_disagreement)
        if levels is not None:
            run(self._update_area)

    def _stale_layers(self, methods) -> list[str]:
        """The app's overlays, masks and disagreement of maps a run of ``methods``
        will not have (and the disagreement is forgotten).

        A run with other methods replaces the store: what the old maps showed can no
        longer be thresholded, exported or refreshed, and would sit on screen beside the
        new maps as if it were one of them.
        """
        from napari_wsol._thresholds import difference_name

        stale = [
            layer.name
            for layer in self.viewer.layers
            if layer.metadata.get("wsol_method") in METHODS
            and layer.metadata["wsol_method"] not in methods
        ]
        pair = self.session.state.disagreement
        if pair and not set(pair) <= set(methods):
            self.session.state.disagreement = None
            if difference_name(*pair) in self.viewer.layers:
                stale.append(difference_name(*pair))
        return stale

    def _hide_layers(self, names: list[str]) -> None:
        """Hide ``names``; the run's lead map is then shown if none of its maps is."""
        for name in names:
            if name in self.viewer.layers:
                self.viewer.layers[name].visible = False
        maps = [layer for layer in self.viewer.layers if layer.name in self.store.methods]
        if self._lead in self.viewer.layers and not any(layer.visible for layer in maps):
            self.viewer.layers[self._lead].visible = True  # as the status line says

    def _show_overlay(self, method: str) -> None:
        """Create or update the overlay layer of one map of :attr:`store`."""
        place = self._overlay_place
        grid = place.grid(self.store.scale(0))
        data, multiscale = L.layer_data(self.levels[method])
        if method in self.viewer.layers:
            overlay = self.viewer.layers[method]
            self._pause_canvases()
            kept = L.take_levels(overlay, self.levels[method])
            if kept is None:
                overlay.data = data
            else:
                self.levels[method] = kept
                L.refresh_in_place(overlay)
            L.place(overlay, grid)
            return
        overlay = Image(
            data,
            multiscale=multiscale,
            name=method,
            colormap=L.overlay_colormap(L.COLORMAPS.get(method, L.DEFAULT_COLORMAP)),
            opacity=0.7,
            blending="translucent",
            contrast_limits=(0.0, 1.0),
            metadata={"wsol_method": method, "slide_mpp": place.slide_mpp},
            visible=method == self._lead,
            **grid,
        )
        if not overlay.visible:
            self._added_hidden.append(method)
        self._add_layer(overlay)

    def _thumbnail_when_hidden(self, method: str) -> None:
        if method in self.viewer.layers:
            L.thumbnail_when_hidden(self.viewer.layers[method])

    def _add_layer(self, layer, then=None) -> None:
        """Add a made layer to the viewer, then call ``then(layer)`` on a turn of its own.

        From a queued step (:meth:`_later`) the adding gets a turn of its own, the next
        one: making a layer reads its data and thumbnail (10-20 ms), adding it is
        napari's 60-75 ms, and together they passed 80 ms.
        """
        if self._in_turn:
            self._later(self._append_layer, layer, then, first=True)
        else:
            self._append_layer(layer, then)

    def _append_layer(self, layer, then=None) -> None:
        """Append ``layer``; the window repaints on the next turn, the canvas the one after.

        Adding a layer takes napari 60-75 ms here; repainting the window's widgets
        after it about 50 ms and drawing the canvas 40-60 ms more (software OpenGL
        under Xvfb). Qt would do all three in one turn; pausing the window's and the
        canvas's updates and resuming them on turns of their own lets input in between.
        """
        window = self.window()
        self._pause_canvases()  # first: the window's resume must not resume them
        window_paused = window.updatesEnabled()
        if window_paused:
            window.setUpdatesEnabled(False)
        # Added hidden, napari does not slice it inside the add; shown on the next turn.
        shown, layer.visible = layer.visible, False
        try:
            with L.keeping_active_layer(self.viewer.layers):
                self.viewer.layers.append(layer)
            if then is not None:  # e.g. making the layer active: 10-20 ms of napari's
                self._later(then, layer, first=True)
        finally:
            # Queued to the front, so they run in the opposite order: show the layer,
            # repaint the window, ``then``, and draw the canvases (queued above).
            if window_paused:
                self._later(self._resume_window, first=True)
            if shown:
                self._later(setattr, layer, "visible", True, first=True)

    def _pause_canvases(self) -> None:
        """Hold the canvases' next frame until the next turn.

        For a change of layers or pixels: napari's handling of it (slicing, texture,
        thumbnail: 15-25 ms per overlay) and the frame that shows it (50-90 ms in
        software OpenGL with six layers) then pause the viewer one after the other,
        not together. Canvases already paused keep the resume queued for them.
        """
        canvases = [w for w in self._canvas_widgets() if w.updatesEnabled()]
        for canvas in canvases:
            canvas.setUpdatesEnabled(False)  # explicitly: a window's resume skips it
        if canvases:
            self._later(self._resume_canvases, first=True)

    # ================================================================ faithfulness
    def faithfulness(self) -> None:
        """Faithfulness scores of the chosen methods on the view (or drawn region)."""
        try:
            layer = self._source()
            methods = list(self.methods.value)
            if not methods:
                raise InputError("choose at least one method")
            region = self._edit_region()
        except InputError as exc:
            self.status.value = str(exc)
            return
        slide = self._slide(layer)
        target_name = self.target.value

        def job():
            from wsol.region import read_region_rgb, view_faithfulness

            yield ("read", 0, 2)
            rgb = read_region_rgb(slide, region)
            model = self._model_for_job()
            names = list(model.config.class_names)
            default = 1 if len(names) == 2 else 0
            target = names.index(target_name) if target_name in names else default
            yield ("scores", 1, 2)
            scores = view_faithfulness(model, rgb, methods, target, should_stop=self._stop.is_set)
            return names[target], scores

        self._start(job, "Faithfulness", self._steps_progress, self._faith_done, total=2)

    def _faith_done(self, payload) -> None:
        target, scores = payload
        self.faith_table.value = faithfulness_html(target, scores)
        self.status.value = f"Faithfulness of {len(scores)} map(s) explaining {target!r}."

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
