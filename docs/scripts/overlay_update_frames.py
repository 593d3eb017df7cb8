"""How many canvas frames an overlay update costs: new data against a refresh in place.

Run under an X server::

    xvfb-run -a .venv/bin/python docs/scripts/overlay_update_frames.py

A 1600 x 1000 viewer with a 4000 x 4000 slide-like image and four translucent
three-level overlays. One overlay is updated twice each way: ``layer.data = new``
(napari resets the layer to its coarsest level, draws, then re-slices at the level the
view needs and draws again) and ``layer.refresh()`` on the same level objects (what
napari_wsol.layers.take_levels allows). Each way also with the canvas paused during the
change and resumed afterwards, as the widget's ``_pause_canvases`` does. Prints the time
of the change's event processing, the resumed canvas's, and the number of ``paintGL``.
"""

from __future__ import annotations

import time

import numpy as np


def main() -> None:
    import napari
    import vispy.app
    from qtpy.QtOpenGLWidgets import QOpenGLWidget
    from qtpy.QtWidgets import QApplication

    vispy.app.use_app("pyqt6")
    from vispy.app.backends import _qt

    paints = [0]
    paint = _qt.CanvasBackendDesktop.paintGL

    def counted(self, *args):
        paints[0] += 1
        return paint(self, *args)

    _qt.CanvasBackendDesktop.paintGL = counted
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1600, 1000)
    rng = np.random.default_rng(0)

    def pyramid() -> list[np.ndarray]:
        full = rng.random((1000, 1000), dtype=np.float32)
        return [full, full[::2, ::2].copy(), full[::4, ::4].copy()]

    viewer.add_image(rng.random((4000, 4000), dtype=np.float32), name="slide")
    for i in range(4):
        viewer.add_image(
            pyramid(),
            multiscale=True,
            name=f"o{i}",
            opacity=0.5,
            scale=(4, 4),
            contrast_limits=(0, 1),
        )
    for _ in range(10):
        QApplication.processEvents()
        time.sleep(0.05)
    canvases = viewer.window._qt_window.findChildren(QOpenGLWidget)

    def events_ms() -> float:
        start = time.perf_counter()
        for _ in range(3):
            QApplication.processEvents()
            time.sleep(0.01)
        return 1000 * (time.perf_counter() - start) - 30

    for change in ("new data", "refresh"):
        for paused in (False, True, False, True):
            paints[0] = 0
            for canvas in canvases:
                canvas.setUpdatesEnabled(not paused)
            if change == "new data":
                viewer.layers["o0"].data = pyramid()
            else:
                viewer.layers["o0"].refresh()
            first = events_ms()
            for canvas in canvases:
                canvas.setUpdatesEnabled(True)
            resumed = events_ms()
            print(
                f"{change:8s} {'paused' if paused else 'plain ':6s}: change {first:4.0f} ms, "
                f"resumed canvas {resumed:4.0f} ms, paintGL x{paints[0]}",
                flush=True,
            )
            time.sleep(0.2)
            events_ms()
    viewer.close()


if __name__ == "__main__":
    main()
