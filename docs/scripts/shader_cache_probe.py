"""First frames of the app's kinds of layer, with Mesa's shader cache cold or warm.

Run under an X server from the repository root, twice with the same fresh folder
(the first run finds it empty, the second finds what the first compiled)::

    export MESA_SHADER_CACHE_DIR=$(mktemp -d)
    xvfb-run -a .venv/bin/python docs/scripts/shader_cache_probe.py   # cold
    xvfb-run -a .venv/bin/python docs/scripts/shader_cache_probe.py   # warm

Over the sample slide with the WSOL widget docked, it adds four overlay-like Image
layers (float32, the app's fading colormaps, translucent) and three Labels layers
(the app's mask, pseudo-label and correction colours), one at a time, and prints for
each: napari's add, the first frame after it and two later frames (ms). Software
OpenGL compiles a program the first time it draws with it, which the first overlay
and the first Labels layer pay on a cold cache.
"""

from __future__ import annotations

import json
import time

import numpy as np
from gui_timing import canvases, pump, sample_slide_viewer


def main() -> None:
    from napari.layers import Image
    from qtpy.QtWidgets import QApplication

    from napari_wsol import layers as L

    viewer, grid = sample_slide_viewer()
    pump(1.0)
    shown = canvases()

    def frame_ms() -> float:
        t0 = time.perf_counter()
        for canvas in shown:
            canvas.update()
        QApplication.processEvents()
        return round((time.perf_counter() - t0) * 1000, 1)

    def timed_add(layer) -> list[float]:
        t0 = time.perf_counter()
        viewer.layers.append(layer)
        added = round((time.perf_counter() - t0) * 1000, 1)
        return [added, frame_ms(), frame_ms(), frame_ms()]

    report: dict = {"idle frame": float(np.median([frame_ms() for _ in range(5)]))}
    data = np.random.default_rng(0).random((1483, 1110)).astype(np.float32)
    for name in ("inferno", "magma", "viridis", "cividis"):
        overlay = Image(
            data,
            name=name,
            colormap=L.overlay_colormap(name),
            opacity=0.7,
            blending="translucent",
            contrast_limits=(0.0, 1.0),
            **grid,
        )
        report[f"overlay {name}"] = timed_add(overlay)
    for name, colors in (
        ("mask", L.MASK_COLORS),
        ("pseudo", L.PSEUDO_COLORS),
        ("corrections", L.CORRECTION_COLORS),
    ):
        labels = (data > 0.5).astype(np.uint8) + (name != "mask")
        report[f"labels {name}"] = timed_add(L.labels_layer(labels, name, 0.5, colors, {}, grid))
    print("add, first frame, later frames (ms)")
    print(json.dumps(report, indent=1))
    viewer.close()


if __name__ == "__main__":
    main()
