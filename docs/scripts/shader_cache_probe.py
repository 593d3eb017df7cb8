"""First frames of the app's kinds of layer, with Mesa's shader cache cold or warm.

Run under an X server from the repository root, twice with the same fresh folder
(the first run finds it empty, the second finds what the first compiled)::

    export MESA_SHADER_CACHE_DIR=$(mktemp -d)
    xvfb-run -a .venv/bin/python docs/scripts/shader_cache_probe.py   # cold
    xvfb-run -a .venv/bin/python docs/scripts/shader_cache_probe.py   # warm
    # cold again, a probe overlay of 3 x 3 (or 64 x 64) px drawn first:
    MESA_SHADER_CACHE_DIR=$(mktemp -d) xvfb-run -a .venv/bin/python \
        docs/scripts/shader_cache_probe.py --probe-side 3

Over the sample slide with the WSOL widget docked, it adds four overlay-like Image
layers (float32, the app's fading colormaps, translucent) and three Labels layers
(the app's mask, pseudo-label and correction colours), one at a time, then makes the
corrections layer active in paint mode, as the pseudo-label job does, and prints for
each step: napari's part (the add, or the switch), the first frame after it and two
later frames (ms). Software OpenGL compiles a program the first time it draws with
it: the first overlay, the first Labels layer and the brush's circle pay for it on a
cold cache.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from gui_timing import canvases, pump, sample_slide_viewer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--probe-side",
        type=int,
        default=0,
        help="first draw an N x N overlay-like probe and remove it (3 builds the maps' "
        "program; a power of two builds another)",
    )
    args = parser.parse_args()
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
    rng = np.random.default_rng(0)
    data = rng.random((1483, 1110)).astype(np.float32)
    if args.probe_side:
        side = args.probe_side
        probe = Image(
            rng.random((side, side)).astype(np.float32),
            colormap=L.overlay_colormap("magma"),
            opacity=0.7,
            blending="translucent",
            contrast_limits=(0.0, 1.0),
            **grid,
        )
        report[f"probe {side} x {side}"] = timed_add(probe)
        viewer.layers.remove(probe)
        frame_ms()
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
    # The app makes the corrections layer active in paint mode: napari then shows the
    # brush's circle, an overlay of the canvas, for the first time.
    corrections = viewer.layers["corrections"]
    t0 = time.perf_counter()
    viewer.layers.selection.active = corrections
    corrections.mode = "paint"
    switched = round((time.perf_counter() - t0) * 1000, 1)
    report["corrections active, paint mode"] = [switched, frame_ms(), frame_ms(), frame_ms()]
    print("add, first frame, later frames (ms)")
    print(json.dumps(report, indent=1))
    viewer.close()


if __name__ == "__main__":
    main()
