"""What napari's add of a Labels layer costs here, and where the time goes.

Run under an X server from the repository root::

    xvfb-run -a .venv/bin/python docs/scripts/labels_add_profile.py
    xvfb-run -a .venv/bin/python docs/scripts/labels_add_profile.py --no-widget

Opens the sample slide, docks the WSOL widget (unless ``--no-widget``: then nothing has
been prepared for the first Labels layer), and adds three pseudo-label-sized Labels
layers (1088 x 1472, hidden, as the app adds them), each under cProfile. Prints each
add's time and the cumulative time of a few parts of it.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

import numpy as np

PARTS = {
    "vispy dash atlas": ("dash_atlas.py", "__init__"),
    "canvas overlays (polygon, brush)": ("canvas.py", "_update_layer_overlays"),
    "vispy layer": ("visual.py", "create_vispy_layer"),
    "layer controls": ("qt_layer_controls_container.py", "_add"),
    "made active (selection)": ("_selection.py", "select_only"),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--no-widget", action="store_true")
    args = parser.parse_args()

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_wsol import layers as L

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1600, 1000)
    viewer.open_sample("napari-wsol", "cmu_small_region")
    if not args.no_widget:
        viewer.window.add_plugin_dock_widget("napari-wsol", "WSOL")
    for _ in range(5):
        QApplication.processEvents()
    rng = np.random.default_rng(0)
    for i in range(3):
        data = rng.integers(0, 3, (1088, 1472), dtype=np.uint8)
        grid = {"scale": (2, 2), "translate": (0, 0)}
        layer = L.labels_layer(data, f"labels {i}", 0.35, L.PSEUDO_COLORS, {}, grid)
        layer.visible = False
        profile = cProfile.Profile()
        t0 = time.perf_counter()
        profile.enable()
        viewer.layers.append(layer)
        profile.disable()
        total = (time.perf_counter() - t0) * 1000
        stats = pstats.Stats(profile).stats
        parts = []
        for name, (file, function) in PARTS.items():
            ms = 1000 * sum(
                v[3] for k, v in stats.items() if k[0].endswith(file) and k[2] == function
            )
            parts.append(f"{name} {ms:.0f}")
        print(f"Labels add {i + 1}: {total:.0f} ms (profiled); " + ", ".join(parts), flush=True)
        for _ in range(10):
            QApplication.processEvents()
            time.sleep(0.01)
    viewer.close()


if __name__ == "__main__":
    main()
