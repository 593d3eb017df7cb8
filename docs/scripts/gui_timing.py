"""Timing helpers for the GUI benchmark scripts in this folder (run under Xvfb).

Imported by app_latency.py, pseudo_label_stalls.py and frame_cost.py, which Python
finds here because a script's own folder is on its path.
"""

from __future__ import annotations

import time

import numpy as np


class GapRecorder:
    """A 5 ms timer on the GUI thread; the gaps between its ticks are the times the
    event loop did not turn (the viewer did not respond)."""

    def __init__(self, interval_ms: int = 5) -> None:
        from qtpy.QtCore import QTimer

        self._gaps: list[float] = []
        self._last = time.perf_counter()
        self._timer = QTimer()
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._tick)

    def _tick(self) -> None:
        now = time.perf_counter()
        self._gaps.append(now - self._last)
        self._last = now

    def start(self) -> None:
        self._gaps.clear()
        self._last = time.perf_counter()
        self._timer.start()

    def stop(self) -> np.ndarray:
        """The gaps since :meth:`start`, in ms."""
        self._timer.stop()
        return np.array(self._gaps) * 1000


def pump(seconds: float) -> None:
    """Turn the event loop for ``seconds``."""
    from qtpy.QtWidgets import QApplication

    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        QApplication.processEvents()
        time.sleep(0.001)  # a spinning loop would take a core from the job


def redraw_ms(canvases: list, repeats: int = 15) -> list[float]:
    """Times of ``repeats`` redraws of the unchanged canvases (update, one loop pass)."""
    from qtpy.QtWidgets import QApplication

    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for canvas in canvases:
            canvas.update()
        QApplication.processEvents()
        times.append((time.perf_counter() - t0) * 1000)
    return times


def threshold_moves(widget, viewer, sets: int = 1) -> list[tuple[list, list, list]]:
    """Time ``sets`` sets of 39 threshold moves of the F-CAM mask, as a drag makes them.

    Each move: the widget's handler (the slider's value set), then one event-loop pass
    (napari's redraw), then the redraw of an unchanged frame (the renderer's floor).
    Returns, per set, the three lists of times in ms.
    """
    from qtpy.QtWidgets import QApplication

    result = []
    for _ in range(sets):
        handler, redraw, floor = [], [], []
        for t in np.tile(np.linspace(0.2, 0.8, 13), 3):
            t0 = time.perf_counter()
            widget.threshold.value = float(round(t, 3))
            t1 = time.perf_counter()
            QApplication.processEvents()
            t2 = time.perf_counter()
            viewer.layers["fcam"].refresh()  # same pixels: the renderer's own cost
            t3 = time.perf_counter()
            QApplication.processEvents()
            t4 = time.perf_counter()
            handler.append((t1 - t0) * 1000)
            redraw.append((t2 - t1) * 1000)
            floor.append((t4 - t3) * 1000)
        result.append((handler, redraw, floor))
    return result


def slide_viewer():
    """A shown 1600 x 1000 viewer with the sample slide in view; returns it and the
    slide's layer."""
    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True)
    (image,) = viewer.open_sample("napari-wsol", "cmu_small_region")
    viewer.window.resize(1600, 1000)
    QApplication.processEvents()
    viewer.reset_view()
    return viewer, image


def sample_slide_viewer():
    """:func:`slide_viewer` with the WSOL widget docked, settled; returns the viewer and
    the slide's grid at 2 level-0 px per pixel, where the app puts its pseudo-labels."""
    viewer, image = slide_viewer()
    viewer.window.add_plugin_dock_widget("napari-wsol", "WSOL")
    pump(0.5)
    return viewer, {"scale": (2, 2), "translate": (0.5, 0.5), "units": image.units}


def docked_app_viewer():
    """The scene of ``app_latency.py``: the sample slide, the WSOL widget docked, then
    the window at 1600 x 1000 and the view reset, past the dock's start-up turns (a
    user's first click comes after them). Returns the viewer, the slide's layer and the
    widget."""
    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True)
    (image,) = viewer.open_sample("napari-wsol", "cmu_small_region")
    _, widget = viewer.window.add_plugin_dock_widget("napari-wsol", "WSOL")
    viewer.window.resize(1600, 1000)
    QApplication.processEvents()
    viewer.reset_view()
    QApplication.processEvents()
    pump(0.5)
    return viewer, image, widget


def wait_job(widget) -> None:
    """Turn the event loop until the WSOL widget's job has ended."""
    while widget.worker is not None:
        pump(0.001)


def maps_and_mask(viewer, threshold: float = 0.4):
    """Dock the WSOL widget, compute the maps of the view and show the F-CAM mask at
    ``threshold``; returns the widget."""
    _, widget = viewer.window.add_plugin_dock_widget("napari-wsol", "WSOL")
    pump(0.5)
    widget.run()
    wait_job(widget)
    widget.thr_method.value = "fcam"
    widget.threshold.value = threshold
    pump(2.0)  # the mask layer is made on later turns
    return widget


def canvases() -> list:
    """The OpenGL canvases of every open window."""
    from qtpy.QtWidgets import QApplication, QOpenGLWidget

    return [
        canvas
        for window in QApplication.topLevelWidgets()
        for canvas in window.findChildren(QOpenGLWidget)
    ]


def frame_scene(viewer, image) -> tuple[list, list, np.ndarray]:
    """Over ``image``'s whole extent, four map-like overlays (float32, translucent, from
    one smooth random map) and three Labels layers; returns them and the map."""
    from scipy.ndimage import zoom

    h, w = image.data[0].shape[:2] if image.multiscale else image.data.shape[:2]
    rng = np.random.default_rng(0)
    smooth = zoom(rng.random((h // 256 + 1, w // 256 + 1)).astype(np.float32), 32, order=1)
    scale = (h / smooth.shape[0], w / smooth.shape[1])
    overlays = [
        viewer.add_image(
            smooth,
            name=f"map {i}",
            colormap="inferno",
            opacity=0.7,
            contrast_limits=(0, 1),
            blending="translucent",
            scale=scale,
        )
        for i in range(4)
    ]
    labels = [
        viewer.add_labels((smooth > 0.5).astype(np.uint8), name=f"labels {i}", scale=scale)
        for i in range(3)
    ]
    return overlays, labels, smooth
