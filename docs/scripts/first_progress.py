"""What napari's progress bars cost the GUI thread: the first of a window, and later ones.

Run under an X server from the repository root::

    xvfb-run -a .venv/bin/python docs/scripts/first_progress.py [--no-widget]

The sample slide at 1600 x 1000 with the WSOL widget docked (``--no-widget``: without
it, so without its warm-up). Three progress bars are made and closed in turn, each
made as a job of the app makes it (``napari.utils.progress``); each line gives the
time the call took, the canvas's size and the status bar's height after it.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from gui_timing import pump


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--no-widget", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("WSOL_SESSIONS", tempfile.mkdtemp(prefix="wsol-progress-"))

    import napari
    from napari.utils import progress
    from qtpy.QtWidgets import QApplication, QOpenGLWidget

    viewer = napari.Viewer(show=True)
    viewer.open_sample("napari-wsol", "cmu_small_region")
    if not args.no_widget:
        viewer.window.add_plugin_dock_widget("napari-wsol", "WSOL")
    viewer.window.resize(1600, 1000)
    QApplication.processEvents()
    viewer.reset_view()
    QApplication.processEvents()
    pump(0.5)  # the dock's start-up turns
    (canvas,) = viewer.window._qt_window.findChildren(QOpenGLWidget)
    status = viewer.window._qt_window.statusBar()

    def shape() -> str:
        return f"canvas {canvas.width()} x {canvas.height()}, status bar {status.height()} px"

    print("before:", shape(), flush=True)
    for k in range(3):
        t0 = time.perf_counter()
        bar = progress(total=10, desc="a job")
        ms = (time.perf_counter() - t0) * 1000
        print(f"progress bar {k + 1}: {ms:.1f} ms; {shape()}", flush=True)
        pump(0.3)
        bar.close()
        pump(0.3)
    viewer.close()


if __name__ == "__main__":
    main()
