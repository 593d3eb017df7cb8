"""Longest event-loop stall of the pseudo-label job, repeated in one viewer.

Run under an X server from the repository root::

    xvfb-run -a .venv/bin/python docs/scripts/pseudo_label_stalls.py --repeats 6

The sample slide and model as in app_latency.py: maps of the whole view, the F-CAM
mask, every layer visible (``--app-visibility``: as the app leaves them); then the
pseudo-label job runs ``--repeats`` times, its two Labels layers removed before each
run so that every run creates them, as the first run in the app does. A job's longest
stall is noisy on a shared 2-core machine; this gives several of them from one
process, to compare two versions of the code.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

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
    parser.add_argument(
        "--app-visibility",
        action="store_true",
        help="keep the layers as the app shows them (one map overlay and the mask) instead "
        "of turning every layer on, the worst case",
    )
    parser.add_argument("--json", help="append this process's stalls to this JSON file's runs")
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
    pump(0.5)  # the dock's start-up turns: a user's first click comes after them

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
    if not args.app_visibility:
        for layer in viewer.layers:
            layer.visible = True
    visible = [layer.name for layer in viewer.layers if layer.visible]
    print("visible layers:", visible)
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
    if args.json:
        # One file collects many processes: {"runs": [...]} plus any notes kept beside.
        path = Path(args.json)
        record = json.loads(path.read_text()) if path.exists() else {"runs": []}
        record["runs"].append(
            {
                "zoom": args.zoom,
                "visible": visible,
                "longest_stall_ms": stalls,
                "label": os.environ.get("RUN_LABEL", ""),
            }
        )
        path.write_text(json.dumps(record, indent=1))
    viewer.close()


if __name__ == "__main__":
    main()
