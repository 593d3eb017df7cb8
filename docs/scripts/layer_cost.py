"""What one new napari layer costs the GUI thread, in an otherwise idle viewer.

Run under an X server (``xvfb-run -a``)::

    xvfb-run -a .venv/bin/python docs/scripts/layer_cost.py

A 1600 x 1000 viewer with a 2000 x 2000 image; then four overlay-like Image layers
(500 x 500 float32, fixed contrast limits, translucent) and two Labels layers
(1000 x 1000) are added one at a time. For each: the time ``add_image`` /
``add_labels`` takes (napari's layer controls, layer list, selection, vispy visual) and
the time of the event processing that follows (its first frame). No job runs, so this
is the floor under the stalls that docs/scripts/app_latency.py measures when the app
first creates its layers.
"""

from __future__ import annotations

import time

import numpy as np


def main() -> None:
    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1600, 1000)
    rng = np.random.default_rng(0)
    viewer.add_image(rng.random((2000, 2000), dtype=np.float32), name="slide")
    for _ in range(3):
        QApplication.processEvents()

    def timed(add) -> tuple[float, float]:
        start = time.perf_counter()
        add()
        added = time.perf_counter()
        QApplication.processEvents()
        return 1000 * (added - start), 1000 * (time.perf_counter() - added)

    for i in range(4):
        data = rng.random((500, 500), dtype=np.float32)
        add, draw = timed(
            lambda data=data, i=i: viewer.add_image(
                data, name=f"overlay {i}", opacity=0.7, contrast_limits=(0, 1)
            )
        )
        print(f"Image layer {i}: add {add:.0f} ms, first frame {draw:.0f} ms")
    for i in range(2):
        data = np.zeros((1000, 1000), np.uint8)
        add, draw = timed(lambda data=data, i=i: viewer.add_labels(data, name=f"labels {i}"))
        print(f"Labels layer {i}: add {add:.0f} ms, first frame {draw:.0f} ms")
    viewer.close()


if __name__ == "__main__":
    main()
