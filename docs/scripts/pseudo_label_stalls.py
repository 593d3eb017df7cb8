"""Longest event-loop stall of the pseudo-label job, repeated in one viewer.

Run under an X server from the repository root::

    xvfb-run -a .venv/bin/python docs/scripts/pseudo_label_stalls.py --repeats 6

The sample slide and model as in app_latency.py: maps of the whole view, the F-CAM
mask, every layer visible; then the pseudo-label job runs ``--repeats`` times, its two
Labels layers removed before each run so that every run creates them, as the first
run in the app does. A job's longest stall is noisy on a shared 2-core machine; this
gives several of them from one process, to compare two versions of the code.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile

from gui_timing import GapRecorder, pump


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument(
        "--zoom",
        type=float,
        default=1.0,
        help="zoom in by this factor before the jobs (3: close enough that napari shows "
        "the brush as a circle once the corrections layer is in paint mode)",
    )
    args = parser.parse_args()
    os.environ.setdefault("WSOL_SESSIONS", tempfile.mkdtemp(prefix="wsol-pseudo-"))

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_wsol._labels import CORRECTIONS_LAYER, PSEUDO_LAYER

    viewer = napari.Viewer(show=True)
    viewer.open_sample("napari-wsol", "cmu_small_region")
    _, widget = viewer.window.add_plugin_dock_widget("napari-wsol", "WSOL")
    viewer.window.resize(1600, 1000)
    QApplication.processEvents()
    viewer.reset_view()

    recorder = GapRecorder()

    def job(start) -> float:
        recorder.start()
        start()
        while widget.worker is not None:
            pump(0.001)
        pump(0.3)  # and the frames that follow its end (the corrections layer in paint mode)
        return round(float(recorder.stop().max()), 1)

    job(widget.run)
    widget.thr_method.value = "fcam"
    widget.threshold.value = 0.4
    pump(2.0)  # the mask layer is made on later turns
    for layer in viewer.layers:
        layer.visible = True
    viewer.camera.zoom *= args.zoom
    pump(0.3)
    stalls = []
    for _ in range(args.repeats):
        for name in (PSEUDO_LAYER, CORRECTIONS_LAYER):
            if name in viewer.layers:
                viewer.layers.remove(name)
        pump(0.3)
        stalls.append(job(widget.make_pseudo_labels))
    print("pseudo-label job, longest stall per run (ms):", stalls)
    print("median", statistics.median(stalls))
    viewer.close()


if __name__ == "__main__":
    main()
