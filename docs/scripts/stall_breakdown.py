"""What runs inside each long GUI-thread gap of the app_latency.py run.

Run under an X server from the repository root::

    xvfb-run -a .venv/bin/python docs/scripts/stall_breakdown.py

Wraps the widget's handlers, napari's ``add_image`` / ``add_labels``, vispy's
``paintGL`` and the garbage collector (``gc.callbacks``, generations 1 and 2) with
timers, runs docs/scripts/app_latency.py unchanged, and prints every gap of the 5 ms
GUI-thread timer longer than ``--min-ms`` with the calls that overlapped it (nested
calls indented; ``GC2@Thread`` is a full collection and the thread that ran it;
``turn:NAME`` is one of the widget's event-loop turns, named for its step). Time not
covered by any of them is outside Python: Qt painting and composing the window, and
llvmpipe rasterizing what ``paintGL`` issued (it returns before the pixels are drawn).
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import sys
import threading
import time
from pathlib import Path

calls: list[tuple[float, float, str, int]] = []  # start, end, name, nesting depth
_depth = [0]


def timed(name: str, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        _depth[0] += 1
        try:
            return fn(*args, **kwargs)
        finally:
            _depth[0] -= 1
            calls.append((start, time.perf_counter(), name, _depth[0]))

    return wrapper


def instrument() -> None:
    started: dict[int, float] = {}

    def on_gc(phase: str, info: dict) -> None:
        ident = threading.get_ident()
        if phase == "start":
            started[ident] = time.perf_counter()
        elif info["generation"] >= 1 and ident in started:
            name = f"GC{info['generation']}@{threading.current_thread().name}"
            calls.append((started.pop(ident), time.perf_counter(), name, 0))

    gc.callbacks.append(on_gc)
    import vispy.app

    vispy.app.use_app("pyqt6")
    from napari.components.viewer_model import ViewerModel
    from vispy.app.backends import _qt

    _qt.CanvasBackendDesktop.paintGL = timed("paintGL", _qt.CanvasBackendDesktop.paintGL)
    for name in ("add_image", "add_labels"):
        setattr(ViewerModel, name, timed(name, getattr(ViewerModel, name)))
    from napari._qt.qt_viewer import QtViewer
    from napari._vispy.layers.base import VispyBaseLayer
    from napari.layers import Labels
    from napari.layers.base.base import Layer

    VispyBaseLayer._on_data_change = timed("vispy._on_data_change", VispyBaseLayer._on_data_change)
    Layer.refresh = timed("Layer.refresh", Layer.refresh)
    for name in ("_refresh_sync", "_update_thumbnail"):
        if hasattr(Labels, name):
            setattr(Labels, name, timed(f"Labels.{name}", getattr(Labels, name)))
    for name in ("_on_active_change", "_on_add_layer_change"):
        if hasattr(QtViewer, name):
            setattr(QtViewer, name, timed(f"QtViewer.{name}", getattr(QtViewer, name)))
    from napari_wsol.widget import WSOLWidget

    def next_turn(self, _turn=WSOLWidget._next_turn):
        # Named for the step it runs: "turn:_resume_canvases" and the like.
        step = self._turns[0][0] if self._turns else None
        return timed(f"turn:{getattr(step, '__name__', repr(step))}", _turn)(self)

    WSOLWidget._next_turn = next_turn

    for name in (
        "run",
        "make_pseudo_labels",
        "fine_tune",
        "_start",
        "_run_progress",
        "_run_done",
        "_show_overlay",
        "_open_store",
        "_finished",
        "_show_scores",
        "_update_area",
        "_save_session",
        "_mask_layer",
        "_threshold_changed",
        "_threshold_moved",
        "_make_mask_layer",
        "_append_layer",
        "_pause_canvases",
        "_resume_canvases",
        "_resume_window",
        "_pseudo_done",
        "_show_labels",
        "_show_pseudo_layer",
        "_show_corrections_layer",
        "_start_editing",
        "_train_progress",
        "_train_done",
        "_steps_progress",
    ):
        if hasattr(WSOLWidget, name):
            setattr(WSOLWidget, name, timed(name, getattr(WSOLWidget, name)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--min-ms", type=float, default=90.0)
    parser.add_argument(
        "--gaps-json",
        help="also write the long gaps and the timed calls here (perf_counter seconds, "
        "CLOCK_MONOTONIC: docs/scripts/perf_gaps.py matches them with perf samples)",
    )
    parser.add_argument(
        "--script",
        default="app_latency.py",
        help="the docs/scripts timing script to run (its own options after --)",
    )
    args, rest = parser.parse_known_args()
    instrument()
    import napari
    from qtpy.QtCore import QTimer

    gaps: list[tuple[float, float]] = []
    last: list[float | None] = [None]
    timers = []

    def tick() -> None:
        now = time.perf_counter()
        if last[0] is not None:
            gaps.append((last[0], now))
        last[0] = now

    make_viewer = napari.Viewer.__init__

    def viewer_with_timer(self, *a, **k) -> None:
        make_viewer(self, *a, **k)
        timer = QTimer()
        timer.setInterval(5)
        timer.timeout.connect(tick)
        timer.start()
        timers.append(timer)

    napari.Viewer.__init__ = viewer_with_timer
    sys.path.insert(0, str(Path(__file__).parent))
    import importlib

    script = importlib.import_module(Path(args.script).stem)
    sys.argv = [args.script, *[r for r in rest if r != "--"]]
    script.main()
    long = [g for g in gaps if (g[1] - g[0]) * 1000 > args.min_ms]
    if args.gaps_json:
        Path(args.gaps_json).write_text(json.dumps({"gaps": long, "calls": calls}))
    print(f"\n{len(long)} gaps over {args.min_ms:.0f} ms (of {len(gaps)} ticks)")
    for a, b in long:
        inside = sorted(c for c in calls if c[0] < b and c[1] > a)
        what = ", ".join(f"{'  ' * d}{n} {1000 * (e - s):.0f}" for s, e, n, d in inside)
        print(f"  gap {1000 * (b - a):4.0f} ms: {what}")


if __name__ == "__main__":
    main()
