"""An interactive session as a folder: what the app needs to come back exactly where it was.

::

    session.json                 slide, model versions, methods, thresholds, seeder, region
    models/v001.safetensors      one checkpoint per fine-tuning round (v000 = the start model)
    maps/<version>.zarr          the last run's heatmaps (a :class:`wsol.infer.MapStore`)
    labels/<region>.pseudo.png   automatic pseudo-labels of the edited region
    labels/<region>.corrections.png   the user's corrections (0 none, 1 bg, 2 fg)

Every file is written atomically, and corrections are written as they are made, so a
crash or a kill loses nothing. Paths inside the folder are stored relative to it, so a
session folder can be moved or copied as a whole.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
from PIL import Image

from wsol.atomic import atomic_path
from wsol.errors import InputError
from wsol.region import PaintedLabels, Region

# "Fine-tune heads" defaults, as `wsol bench corrections` measured them
# (docs/BENCHMARKS.md): 192-px windows at lr 1.5e-4, each head held to its earlier map
# where nothing is painted; up to 40 steps, as many as fit 4.5 s on a 512-px region
# (TrainConfig.heads_seconds): in bfloat16 on a CPU with native bfloat16, 40 took at
# most 4.34 s; in float32 on a 2-core AVX2 CPU about 27 fit (resnet18). Older session
# files lack the later keys.
FINE_TUNE = {
    "heads": ["fcam"],
    "steps": 40,
    "seconds": 4.5,  # 0: no limit, every step
    "lr": 1.5e-4,
    "keep_weight": 3.0,
    "keep_fg": 2.0,
    "crop": 192,
    "guide": False,
    "precision": "auto",  # on a CPU: TrainConfig.cpu_precision; CUDA uses float16
}


SESSION_FILE = "session.json"
FORMAT = 1


@dataclass
class SessionState:
    """Everything about a session except the arrays (those are files beside it)."""

    slide: str | None = None
    slide_mpp: float | None = None  # µm/px the image layer had (a PNG's scale is not in it)
    base_model: str | None = None  # checkpoint the session started from (None: untrained)
    versions: list[str] = field(default_factory=list)  # models/vNNN.safetensors, in order
    current: int = 0  # 0 = base_model, k = versions[k - 1]
    methods: list[str] = field(default_factory=lambda: ["cam", "gradcampp", "fcam", "pixelcam"])
    scope: str = "view"
    dense_crf: bool = False  # maps refined with the dense CRF
    target: str | None = None  # class name the maps explain
    store: str | None = None  # relative path of the last run's map store
    run_region: dict | None = None  # level-0 box of the last run
    thresholds: dict[str, float] = field(default_factory=dict)
    masks_keep_corrections: bool = True  # painted pixels override every mask's threshold
    disagreement: list[str] | None = None
    edit_region: dict | None = None  # the Region pseudo-labels/corrections are on
    seeder: dict = field(
        default_factory=lambda: {
            "method": "fcam",
            "bg_fraction": 0.5,
            "erode": 0,
            "seeds_per_class": 64,
        }
    )
    fine_tune: dict = field(default_factory=lambda: dict(FINE_TUNE))

    def __post_init__(self) -> None:
        # Session files written before a setting existed lack its key.
        self.fine_tune = {**FINE_TUNE, **self.fine_tune}


class Session:
    """A session folder and its state; see the module docstring for the layout."""

    def __init__(self, folder: str | Path, state: SessionState | None = None) -> None:
        self.folder = Path(folder)
        self.state = state or SessionState()

    # --- folder ------------------------------------------------------------------------
    @classmethod
    def load(cls, folder: str | Path) -> Session:
        """Read ``folder/session.json``; :class:`InputError` naming the problem."""
        folder = Path(folder)
        path = folder / SESSION_FILE
        if not path.is_file():
            raise InputError(f"{folder}: not a napari-wsol session (no {SESSION_FILE})")
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: unreadable session file ({exc})") from exc
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise InputError(f"{path}: not a session file of format {FORMAT}")
        known = {f.name for f in fields(SessionState)}
        try:
            state = SessionState(**{k: v for k, v in data["state"].items() if k in known})
        except (KeyError, TypeError, AttributeError) as exc:
            raise InputError(f"{path}: malformed session state ({exc})") from exc
        problem = _state_problem(state)
        if problem:
            raise InputError(f"{path}: malformed session state ({problem})")
        return cls(folder, state)

    def save(self) -> Path:
        return self.write(self.snapshot())

    def snapshot(self) -> str:
        """The session file's text for the state as it is now."""
        return json.dumps({"format": FORMAT, "state": asdict(self.state)}, indent=1)

    def write(self, text: str) -> Path:
        """Write a :meth:`snapshot` to ``session.json`` atomically (any thread)."""
        path = self.folder / SESSION_FILE
        with atomic_path(path) as tmp:
            tmp.write_text(text)
        return path

    def copy_to(self, folder: str | Path) -> Session:
        """This session's files in ``folder`` (created or merged); the copy is returned."""
        folder = Path(folder)
        if folder.resolve() != self.folder.resolve():
            if self.folder.is_dir():
                shutil.copytree(self.folder, folder, dirs_exist_ok=True)
        copy = Session(folder, SessionState(**asdict(self.state)))
        copy.save()
        return copy

    def path(self, relative: str | None) -> Path | None:
        return None if relative is None else self.folder / relative

    # --- model versions ----------------------------------------------------------------
    def model_path(self, index: int | None = None) -> Path | None:
        """Checkpoint of version ``index`` (default: the current one); None = untrained."""
        index = self.state.current if index is None else index
        if index == 0:
            return None if self.state.base_model is None else Path(self.state.base_model)
        return self.folder / self.state.versions[index - 1]

    def next_version_path(self) -> Path:
        """Where the next fine-tuned version goes (nothing is written)."""
        return self.folder / f"models/v{len(self.state.versions) + 1:03d}.safetensors"

    def add_version(self, model=None, path: Path | None = None) -> Path:
        """Record the next version and make it current: ``model`` is saved to
        :meth:`next_version_path`, or ``path`` names the file already saved there."""
        path = Path(path) if path is not None else self.next_version_path()
        if model is not None:
            model.save(path)
        self.state.versions.append(str(path.relative_to(self.folder)))
        self.state.current = len(self.state.versions)
        self.save()
        return path

    def version_names(self) -> list[str]:
        base = Path(self.state.base_model).name if self.state.base_model else "untrained"
        return [f"v000 (start: {base})"] + [
            f"{Path(v).stem} (fine-tuned)" for v in self.state.versions
        ]

    def store_path(self) -> Path:
        return self.folder / "maps" / f"v{self.state.current:03d}.zarr"

    # --- labels ------------------------------------------------------------------------
    def labels_path(self, region: Region, kind: str) -> Path:
        return self.folder / "labels" / f"{region.key()}.{kind}.png"

    def save_labels(self, region: Region, kind: str, labels: np.ndarray) -> Path:
        """Write a uint8 label image (``kind``: "pseudo" or "corrections") atomically."""
        if labels.shape != region.shape:
            raise InputError(f"{kind} labels {labels.shape} do not fit the region {region.shape}")
        path = self.labels_path(region, kind)
        with atomic_path(path) as tmp:
            Image.fromarray(np.ascontiguousarray(labels, dtype=np.uint8)).save(
                tmp, format="PNG", compress_level=1
            )
        return path

    def corrections_files(self) -> list[tuple[Path, Region]]:
        """Every region's corrections file, oldest first (the latest strokes last)."""
        found = []
        for path in (self.folder / "labels").glob("*.corrections.png"):
            try:
                region = Region.from_key(path.name.removesuffix(".corrections.png"))
                stamp = path.stat().st_mtime_ns
            except (InputError, OSError):
                continue  # not ours, or gone meanwhile
            found.append((stamp, path, region))
        return [(path, region) for _, path, region in sorted(found, key=lambda f: f[:2])]

    def edit_region(self) -> Region | None:
        """The region whose pseudo-labels and corrections the app shows (None: none)."""
        return None if not self.state.edit_region else Region.from_dict(self.state.edit_region)

    def painted(
        self,
        edit: Region | None = None,
        read: Callable[[Path, Region, Region | None], PaintedLabels | None] | None = None,
        on_error: Callable[[Exception], None] | None = None,
    ) -> list[PaintedLabels]:
        """Every region's corrections that hold a stroke, in the order masks lay them.

        Regions follow the order their files were written in (later strokes win), and
        the edited region ``edit`` comes last and owns its box: there a mask keeps what
        its corrections layer shows, not what was painted on another region (an
        overlapping one, or the same tissue at another pixel size) that the user could
        not see or erase. ``read(path, region, outside)`` returns one file's
        :class:`PaintedLabels` without the pixels in the box ``outside`` (the app passes
        a cached reader). A file that cannot be read raises :class:`InputError` naming
        it, or goes to ``on_error`` and is left out.
        """
        read = read or self._read_painted
        # Files are told apart by path: a region read back from a file name has its
        # downsample rounded, so it need not equal ``edit``.
        edit_path = self.labels_path(edit, "corrections") if edit else None
        others, own = [], None
        for path, region in self.corrections_files():
            mine = path == edit_path
            try:
                painted = read(path, region, None if mine else edit)
            except (InputError, OSError) as exc:
                if on_error is not None:
                    on_error(exc)
                    continue
                if isinstance(exc, InputError):
                    raise  # it names the file already
                raise InputError(f"{path}: unreadable corrections ({exc})") from exc
            if painted is None or not painted.any:
                continue
            if mine:
                own = painted
            else:
                others.append(painted)
        return others + ([own] if own is not None else [])

    def _read_painted(self, path: Path, region: Region, outside: Region | None):
        labels = self.load_labels(region, "corrections")
        if labels is None:
            return None
        painted = PaintedLabels(labels, region)
        return painted if outside is None else painted.outside(outside)

    def load_labels(self, region: Region, kind: str) -> np.ndarray | None:
        path = self.labels_path(region, kind)
        if not path.is_file():
            return None
        try:
            with Image.open(path) as img:
                labels = np.asarray(img)
        except OSError as exc:
            raise InputError(f"{path}: unreadable {kind} labels ({exc})") from exc
        if labels.shape != region.shape or labels.max(initial=0) > 2:
            raise InputError(
                f"{path}: {kind} labels of shape {labels.shape} with values "
                f"up to {labels.max(initial=0)}; expected {region.shape}, 0..2"
            )
        return labels.astype(np.uint8)


def _state_problem(state: SessionState) -> str | None:
    """What makes a loaded state unusable (None: nothing), so that a hand-edited or
    damaged session file is named when opened, not met as a traceback later."""
    from wsol.cams import METHODS

    if not isinstance(state.versions, list) or not all(isinstance(v, str) for v in state.versions):
        return "versions must be a list of file names"
    if not isinstance(state.current, int) or not 0 <= state.current <= len(state.versions):
        return f"current {state.current!r} is not a version (0..{len(state.versions)})"
    if not isinstance(state.methods, list) or not set(state.methods) <= set(METHODS):
        return f"methods {state.methods!r}: choose from {', '.join(METHODS)}"
    thresholds = state.thresholds
    if not isinstance(thresholds, dict) or not all(
        isinstance(t, int | float) and 0 <= t <= 1 for t in thresholds.values()
    ):
        return f"thresholds {thresholds!r} must be numbers in [0, 1]"
    if state.edit_region is not None:
        try:
            Region.from_dict(state.edit_region)
        except (KeyError, TypeError, ValueError) as exc:
            return f"edit_region {state.edit_region!r} ({exc!r})"
    return None


def default_session_folder(stem: str = "session") -> Path:
    """A new folder name under ``$WSOL_SESSIONS`` (default ``~/.napari-wsol/sessions``).

    The app works in such a folder from the start, so corrections are on disk before
    the user ever thinks of saving; "Save session as" copies it elsewhere.
    """
    import os
    import time

    root = Path(os.environ.get("WSOL_SESSIONS") or Path.home() / ".napari-wsol" / "sessions")
    return root / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"


class SessionWriter:
    """Writes session files on one background thread, in the order they were saved.

    The state is captured when :meth:`save` is called; the write (and its ``fsync``,
    which took up to 120 ms here) happens off the caller's thread, so an app's GUI
    thread never waits for the disk. ``on_error(message)`` runs on the writing thread.
    """

    def __init__(self, on_error: Callable[[str], None] | None = None) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wsol-session")
        self._last: Future | None = None
        self._on_error = on_error

    def save(self, session: Session) -> None:
        self._last = self._pool.submit(session.write, session.snapshot())
        self._last.add_done_callback(self._done)

    def flush(self) -> None:
        """Wait until every saved state is written (a failure went to ``on_error``)."""
        if self._last is not None:
            wait([self._last])

    def _done(self, future: Future) -> None:
        exc = future.exception()
        if exc is not None and self._on_error is not None:
            self._on_error(f"cannot save the session: {exc}")
