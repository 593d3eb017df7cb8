"""napari's add of a Labels layer: the app's layers against napari's own, in turn.

Run under an X server from the repository root::

    xvfb-run -a .venv/bin/python docs/scripts/labels_add_cost.py [--adds 12]

Opens the sample slide with the WSOL widget docked and adds pseudo-label-sized Labels
layers (1088 x 1472, hidden, on the slide's grid, as the app adds them), alternately
made by ``napari_wsol.layers.labels_layer`` (the polygon and brush-stroke tools built
when first picked) and by ``napari.layers.Labels`` with the same arguments (napari
builds both tools inside the add). Prints each kind's add times and their median, the
first add of each left out.
"""

from __future__ import annotations

import argparse
import statistics
import time

from gui_timing import pump, sample_slide_viewer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--adds", type=int, default=12, help="adds of each kind")
    args = parser.parse_args()

    import numpy as np
    from napari.layers import Labels

    from napari_wsol import layers as L

    viewer, grid = sample_slide_viewer()
    colormap = L.label_colormap(L.PSEUDO_COLORS)
    rng = np.random.default_rng(0)
    times: dict[str, list[float]] = {"app": [], "napari": []}
    for i in range(2 * args.adds):
        kind = "napari" if i % 2 else "app"
        data = rng.integers(0, 3, (1088, 1472), dtype=np.uint8)
        if kind == "app":
            layer = L.labels_layer(data, f"{kind} {i}", 0.35, L.PSEUDO_COLORS, {}, grid)
        else:
            layer = Labels(data, name=f"{kind} {i}", opacity=0.35, colormap=colormap, **grid)
        layer.visible = False
        start = time.perf_counter()
        viewer.layers.append(layer)
        times[kind].append((time.perf_counter() - start) * 1000)
        pump(0.1)
    for kind, ms in times.items():
        rounded = [round(x) for x in ms]
        print(f"{kind:6s} add (ms): {rounded}  median {statistics.median(ms[1:]):.1f}")
    viewer.close()


if __name__ == "__main__":
    main()
