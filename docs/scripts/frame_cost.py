"""What one canvas frame costs in software OpenGL, per layer and per drawing option.

Run under an X server from the repository root::

    xvfb-run -a .venv/bin/python docs/scripts/frame_cost.py

The sample slide in a 1600 x 1000 window with four map-like overlays (float32, the
app's colormap settings) and three Labels layers over the whole view. Each line is the
median time of 15 redraws of the unchanged canvas (``update`` then one event-loop
pass): the slide alone, then everything with the overlays sampled nearest (napari's
default, the app's) or linear, as float32 or uint8, and every layer blended with and
without a depth test.
"""

from __future__ import annotations

import statistics

import numpy as np
from gui_timing import canvases, frame_scene, redraw_ms, slide_viewer


def main() -> None:
    from qtpy.QtWidgets import QApplication

    viewer, image = slide_viewer()
    shown = canvases()

    def frame_ms() -> float:
        for _ in range(5):
            QApplication.processEvents()
        return round(statistics.median(redraw_ms(shown)), 1)

    print("slide alone", frame_ms(), flush=True)
    overlays, labels, smooth = frame_scene(viewer, image)
    print("+ 4 overlays + 3 Labels (float32, napari's default nearest)", frame_ms(), flush=True)
    for layer in overlays:
        layer.interpolation2d = "linear"
    print("  overlays sampled linear", frame_ms(), flush=True)
    bytes_ = (smooth * 255).astype(np.uint8)
    for layer in overlays:
        layer.interpolation2d = "nearest"
        layer.contrast_limits = (0, 255)
        layer.data = bytes_
    print("  overlays as uint8", frame_ms(), flush=True)
    for blending in ("translucent", "translucent_no_depth"):
        for layer in overlays + labels:
            layer.blending = blending
        print(f"  every layer {blending}", frame_ms(), flush=True)
    for layer in overlays[1:] + labels[1:]:
        layer.visible = False
    print("slide + 1 overlay + 1 Labels", frame_ms(), flush=True)
    viewer.close()


if __name__ == "__main__":
    main()
