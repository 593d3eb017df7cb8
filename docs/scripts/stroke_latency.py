"""Longest event-loop stall of a brush stroke, with the masks keeping the corrections
and without.

Run under an X server from the repository root::

    xvfb-run -a .venv/bin/python docs/scripts/stroke_latency.py --strokes 20

The sample slide and model as in pseudo_label_stalls.py: maps of the whole view, the
F-CAM mask shown, pseudo-labels of the view, zoomed in to paint. Each stroke is what
napari's brush does on a mouse drag (a staged stroke of ``--points`` dabs, committed on
release: one undo step and one ``paint`` event), with the recorder running from the
first dab until 0.3 s after the release, so the stroke's save, the masks' refresh and
the frames that show them are all in it. Strokes alternate between the "masks keep
the corrections" box ticked and unticked, each on fresh pixels, so the two are
measured under the same machine load. Then, over the strokes painted, 25 threshold
moves across 0.2-0.8 each way, twice, timing the widget's work per move
(``widget.threshold.value = t``: the mask's visible slice, its thumbnail and the area).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np
from gui_timing import GapRecorder, maps_and_mask, pump, slide_viewer, wait_job


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--strokes", type=int, default=20, help="strokes of each kind")
    parser.add_argument("--points", type=int, default=12, help="brush dabs per stroke")
    parser.add_argument("--zoom", type=float, default=3.0)
    args = parser.parse_args()
    os.environ.setdefault("WSOL_SESSIONS", tempfile.mkdtemp(prefix="wsol-stroke-"))

    from napari_wsol._labels import CORRECTIONS_LAYER

    viewer, _ = slide_viewer()
    widget = maps_and_mask(viewer)
    viewer.camera.zoom *= args.zoom
    pump(0.3)
    widget.make_pseudo_labels()
    wait_job(widget)
    pump(1.0)
    layer = viewer.layers[CORRECTIONS_LAYER]
    h, w = layer.data.shape
    rng = np.random.default_rng(0)
    recorder = GapRecorder()
    stalls: dict[bool, list[float]] = {True: [], False: []}
    for i in range(2 * args.strokes):
        keep = i % 2 == 0
        widget.keep_corrections.value = keep
        pump(0.3)
        y0, x0 = rng.integers(16, h - 16), rng.integers(16, w - 16)
        label = 1 + i % 4 // 2  # background and foreground strokes, both kinds
        recorder.start()
        layer._begin_stroke()
        for k in range(args.points):
            layer.paint((min(h - 1, y0 + k), min(w - 1, x0 + 2 * k)), label, refresh=True)
            pump(0.016)  # a mouse move per frame
        layer._commit_stroke()
        pump(0.3)
        stalls[keep].append(round(float(recorder.stop().max()), 1))
    for keep, name in ((True, "masks keep the corrections"), (False, "masks without them")):
        values = stalls[keep]
        print(f"{name}: longest stall per stroke (ms) {values}")
        print(f"  median {statistics.median(values):.1f}, max {max(values):.1f}")
    for keep in (True, False, True, False):
        widget.keep_corrections.value = keep
        pump(0.5)
        times = []
        for t in np.linspace(0.2, 0.8, 25):
            start = time.perf_counter()
            widget.threshold.value = round(float(t), 2)
            times.append((time.perf_counter() - start) * 1000)
            pump(0.05)
        print(
            f"threshold move, masks {'keep' if keep else 'without'} the corrections: widget "
            f"{statistics.median(times):.1f} ms median, {max(times):.1f} max"
        )
    viewer.close()


if __name__ == "__main__":
    main()
