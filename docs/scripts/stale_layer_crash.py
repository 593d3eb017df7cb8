"""Reproduce a segfault under Xvfb + llvmpipe, left open at stop 47.

Maps of cam and fcam with an fcam mask, then a run of cam and gradcam (which replaces the
map store), then the fcam overlay and its mask deleted from the layer list: the next
frame that draws the slide crashes in ``glDrawArrays``. The same deletions without the
second run, or without the mask, draw fine. The app therefore hides such layers instead
of removing them.

    xvfb-run -a .venv/bin/python docs/scripts/stale_layer_crash.py          # crashes
    xvfb-run -a .venv/bin/python docs/scripts/stale_layer_crash.py --keep   # draws
"""

from __future__ import annotations

import faulthandler
import sys
import time

import napari
from qtpy.QtWidgets import QApplication

from wsol.samples import sample_path


def pump(seconds: float) -> None:
    end = time.time() + seconds
    while time.time() < end:
        QApplication.processEvents()
        time.sleep(0.01)


def settle(widget) -> None:
    while widget.worker is not None or widget._turns:
        pump(0.05)
    pump(0.4)


def main() -> None:
    faulthandler.enable()
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1500, 950)
    viewer.open(str(sample_path("he_tile")), plugin="napari-wsol")
    _, widget = viewer.window.add_plugin_dock_widget("napari-wsol", "WSOL")
    viewer.reset_view()
    widget.scope.value = "whole slide"
    widget.methods.value = ["cam", "fcam"]
    widget.run()
    settle(widget)
    widget.thr_method.value = "fcam"
    widget.threshold.value = 0.4
    pump(0.8)
    settle(widget)
    widget.methods.value = ["cam", "gradcam"]
    widget.run()
    settle(widget)
    if "--keep" not in sys.argv:
        for name in ("fcam", "fcam mask"):
            viewer.layers.remove(name)
        pump(0.5)
    viewer.screenshot(canvas_only=True)
    print("drawn", [layer.name for layer in viewer.layers], flush=True)
    viewer.close()


if __name__ == "__main__":
    main()
