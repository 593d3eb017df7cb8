"""Where napari's add of a layer spends its time, by sampling rather than cProfile.

Run under an X server from the repository root::

    xvfb-run -a .venv/bin/python docs/scripts/layer_add_sampled.py labels-napari
    xvfb-run -a .venv/bin/python docs/scripts/layer_add_sampled.py labels-app
    xvfb-run -a .venv/bin/python docs/scripts/layer_add_sampled.py image

The sample slide with the WSOL widget docked; then 8 layers are added (hidden, on the
slide's grid, as the app adds them): Labels of the pseudo-labels' size made by napari
(``labels-napari``) or by ``napari_wsol.layers.labels_layer`` (``labels-app``), or
three-level float32 overlays like the app's maps (``image``). During the last 6 adds a
thread reads the main thread's stack every 0.5 ms. cProfile times every call and slows
napari's many small ones; sampling does not. Prints the mean add and, for the functions
seen most, the share of samples whose stack contains them.
"""

from __future__ import annotations

import argparse
import collections
import sys
import threading
import time

from gui_timing import pump, sample_slide_viewer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["labels-napari", "labels-app", "image"])
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()

    import numpy as np
    from napari.layers import Image, Labels

    from napari_wsol import layers as L

    viewer, grid = sample_slide_viewer()
    rng = np.random.default_rng(0)

    def make(i: int):
        if args.kind == "image":
            full = rng.random((1088, 1472), dtype=np.float32)
            levels = [full, full[::2, ::2].copy(), full[::4, ::4].copy()]
            colormap = L.overlay_colormap(L.DEFAULT_COLORMAP)
            return Image(
                levels,
                multiscale=True,
                name=f"map {i}",
                colormap=colormap,
                opacity=0.7,
                blending="translucent",
                contrast_limits=(0, 1),
                **grid,
            )
        data = rng.integers(0, 3, (1088, 1472), dtype=np.uint8)
        if args.kind == "labels-app":
            return L.labels_layer(data, f"labels {i}", 0.35, L.PSEUDO_COLORS, {}, grid)
        colormap = L.label_colormap(L.PSEUDO_COLORS)
        return Labels(data, name=f"labels {i}", opacity=0.35, colormap=colormap, **grid)

    main_thread = threading.get_ident()
    sampling = threading.Event()
    counts: collections.Counter = collections.Counter()
    samples = [0]

    def sample() -> None:
        while True:
            time.sleep(0.0005)
            if not sampling.is_set():
                continue
            frame = sys._current_frames().get(main_thread)
            seen = set()
            while frame is not None:
                code = frame.f_code
                seen.add((code.co_filename.split("site-packages/")[-1], code.co_name))
                frame = frame.f_back
            counts.update(seen)
            samples[0] += 1

    sys.setswitchinterval(0.0002)  # let the sampler in while the main thread runs Python
    threading.Thread(target=sample, daemon=True).start()
    added = []
    for i in range(8):
        layer = make(i)
        layer.visible = False
        start = time.perf_counter()
        if i >= 2:
            sampling.set()
        viewer.layers.append(layer)
        sampling.clear()
        if i >= 2:
            added.append((time.perf_counter() - start) * 1000)
        pump(0.1)
    n = samples[0]
    print(f"{args.kind}: {len(added)} adds, mean {sum(added) / len(added):.0f} ms; {n} samples")
    for (file, function), count in counts.most_common(args.top):
        print(f"{100 * count / n:5.1f}%  {function:36s} {file}")
    viewer.close()


if __name__ == "__main__":
    main()
