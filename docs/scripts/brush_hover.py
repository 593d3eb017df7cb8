"""Longest event-loop stall while the pointer glides over the canvas, by what is shown.

Run under an X server from the repository root, with xdotool installed
(``apt-get install xdotool``)::

    xvfb-run -a .venv/bin/python docs/scripts/brush_hover.py --glides 4

The pointer is moved by xdotool in another process (30 moves, 8 ms apart, across the
canvas), so Qt receives and compresses real X events as it does a mouse's. Zoomed in
3x on the sample slide (where napari draws the brush as a circle on the canvas, which
it redraws at every pointer move), it records the longest gap of a 5 ms timer during
each glide, in five states:

1. the slide alone, the slide active;
2. the pseudo-label job's longest stall, then the first glide after it, over the app's
   layers (its defaults after maps, the F-CAM mask and pseudo-labels of the view: the
   slide, fcam, fcam mask, pseudo-labels and corrections shown) with the corrections
   layer as the job leaves it: the first time in the process napari's brush circle is
   drawn;
3. the app's layers, the corrections layer in paint mode (3s: the same glide with the
   button held, a brush stroke: painted, saved, laid on the masks);
4. the same in pan/zoom mode;
5. the slide and an empty napari Labels layer in paint mode, the app's layers hidden
   (napari's brush alone).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile

import numpy as np
from gui_timing import GapRecorder, maps_and_mask, pump, slide_viewer, wait_job


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--glides", type=int, default=4, help="glides per state")
    args = parser.parse_args()
    if shutil.which("xdotool") is None:
        raise SystemExit("brush_hover.py needs xdotool (apt-get install xdotool)")
    os.environ.setdefault("WSOL_SESSIONS", tempfile.mkdtemp(prefix="wsol-hover-"))

    from napari_wsol._labels import CORRECTIONS_LAYER

    viewer, image = slide_viewer()
    canvas = viewer.window._qt_viewer.canvas.native  # the QOpenGLWidget napari draws in
    recorder = GapRecorder()

    def glide(state: str, count: int | None = None, stroke: bool = False) -> None:
        """``stroke``: the button is held from the first move to the last (a brush
        stroke, saved and laid on the masks when released), the pointer starting there."""
        stalls = []
        for k in range(count or args.glides):
            corner = canvas.mapToGlobal(canvas.rect().topLeft())
            x0, y0 = corner.x(), corner.y()
            # Strokes are 40 px apart, so each paints fresh pixels.
            start = (x0 + 60 + 3 * k, y0 + 60 + 40 * k) if stroke else (x0 + 60 + k, y0 + 60 + k)
            rest = start if stroke else (x0 - 50, y0 + 100)  # off the canvas
            subprocess.run(["xdotool", "mousemove", *map(str, rest)], check=True)
            pump(0.4)
            moves = ["mousedown", "1"] if stroke else []
            for step in range(30):
                moves += ["mousemove", str(start[0] + 12 * step), str(start[1] + 9 * step)]
                moves += ["sleep", "0.008"]
            moves += ["mouseup", "1"] if stroke else []
            recorder.start()
            mover = subprocess.Popen(["xdotool", *moves])
            while mover.poll() is None:
                pump(0.005)
            pump(0.3)
            stalls.append(round(float(recorder.stop().max()), 1))
        print(f"{state}: median {statistics.median(stalls):.1f} ms, runs {stalls}", flush=True)

    viewer.camera.zoom *= 3
    pump(0.5)
    glide("1. the slide alone")

    widget = maps_and_mask(viewer)
    recorder.start()
    widget.make_pseudo_labels()
    wait_job(widget)
    pump(0.3)  # and the frames that follow its end
    job = round(float(recorder.stop().max()), 1)
    print(f"the pseudo-label job at this zoom: longest stall {job} ms", flush=True)
    pump(0.7)
    corrections = viewer.layers[CORRECTIONS_LAYER]
    shown = ", ".join(layer.name for layer in viewer.layers if layer.visible)
    print(f"the app's layers shown: {shown}")
    glide(f"2. the first glide after the job (corrections in {corrections.mode} mode)", 1)
    corrections.mode = "paint"
    pump(0.3)
    glide("3. the app's layers, corrections in paint mode")
    before = int(np.count_nonzero(corrections.data))
    glide("3s. the same, a brush stroke (button held)", stroke=True)
    painted = int(np.count_nonzero(corrections.data)) - before
    print(f"   ({painted} corrections pixels painted by the strokes)", flush=True)
    corrections.mode = "pan_zoom"
    pump(0.3)
    glide("4. the app's layers, corrections in pan/zoom mode")
    for layer in viewer.layers:
        layer.visible = layer is image
    plain = viewer.add_labels(np.zeros((1484, 1110), np.uint8), scale=(2, 2), name="plain")
    plain.brush_size = 8
    plain.mode = "paint"
    pump(0.5)
    glide("5. the slide and an empty napari Labels layer, paint mode (the app's hidden)")
    viewer.close()


if __name__ == "__main__":
    main()
