"""``wsol demo``: napari with the sample slide, the WSOL widget and the sample model,
overlays computed for the view as soon as the window is up."""

from __future__ import annotations

import time
from collections.abc import Sequence


def launch(methods: Sequence[str] | None = None, exit_when_done: bool = False):
    """Open the demo viewer and start computing; returns ``(viewer, widget)``.

    With ``exit_when_done`` the viewer closes once the overlays are in (for timing the
    demo and for tests).
    """
    import napari
    from qtpy.QtCore import QTimer

    start = time.perf_counter()
    viewer = napari.Viewer(title="napari-wsol demo")
    viewer.window.resize(1600, 1000)
    viewer.open_sample("napari-wsol", "cmu_small_region")
    _, widget = viewer.window.add_plugin_dock_widget("napari-wsol", "WSOL")
    if methods:
        widget.methods.value = list(methods)

    def report() -> None:
        if widget.worker is not None:
            return
        seconds = time.perf_counter() - start
        print(f"wsol demo: overlays ready {seconds:.1f} s after start ({widget.status.value})")
        watcher.stop()
        if exit_when_done:
            viewer.close()

    def run() -> None:
        viewer.reset_view()  # fit the slide to the final canvas, then compute the view
        widget.run()
        watcher.start()

    watcher = QTimer()
    watcher.setInterval(200)
    watcher.timeout.connect(report)
    QTimer.singleShot(300, run)
    viewer._wsol_demo_timer = watcher  # keep a reference for the viewer's lifetime
    return viewer, widget


def main(methods: Sequence[str] | None = None, exit_when_done: bool = False) -> int:
    import napari

    launch(methods, exit_when_done)
    napari.run()
    return 0
