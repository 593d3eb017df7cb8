"""The threshold drag alone: slider to screen, three sets of 39 moves in one process.

Run under an X server from the repository root::

    xvfb-run -a .venv/bin/python docs/scripts/threshold_drag.py --label now --json RUN.json

The scene of ``app_latency.py``'s drag (the sample slide at 1600 x 1000, the sample
model's maps of the whole view, the slide and the F-CAM overlay shown, the F-CAM mask
made at 0.4), without its jobs, so that several processes of two codes can take turns
in a few minutes. Each move is timed as ``app_latency.py`` times it: the widget's
handler (the slider's value set), then one event-loop pass (napari's redraw), and the
redraw of an unchanged frame after it (the renderer's floor). Each set prints the
medians of its 39 moves; ``--json`` appends them, labelled, to the file's ``runs``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from gui_timing import docked_app_viewer, pump, threshold_moves


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sets", type=int, default=3)
    parser.add_argument("--label", default="")
    parser.add_argument("--json", help="append this process's medians to this file's runs")
    args = parser.parse_args()
    os.environ.setdefault("WSOL_SESSIONS", tempfile.mkdtemp(prefix="wsol-drag-"))

    from qtpy.QtWidgets import QApplication

    viewer, image, widget = docked_app_viewer()
    widget.run()
    while widget.worker is not None or widget._turns:
        QApplication.processEvents()
        time.sleep(0.001)
    pump(0.3)
    for layer in viewer.layers:
        layer.visible = layer.name in (image.name, "fcam")
    QApplication.processEvents()
    widget.thr_method.value = "fcam"
    widget.threshold.value = 0.4
    pump(1.0)  # the mask layer is made on turns of its own

    sets: dict[str, list[float]] = {}
    for _ in range(args.sets):
        ((handler, redraw, floor),) = threshold_moves(widget, viewer)
        total = [a + b for a, b in zip(handler, redraw, strict=True)]
        for key, values in (
            ("total_median", total),
            ("widget_median", handler),
            ("redraw_median", redraw),
            ("unchanged_frame_median", floor),
        ):
            sets.setdefault(key, []).append(round(statistics.median(values), 1))
        pump(0.5)  # the slider rests between sets
    print(args.label, json.dumps(sets), flush=True)
    if args.json:
        path = Path(args.json)
        record = json.loads(path.read_text()) if path.exists() else {"runs": []}
        record["runs"].append({"label": args.label, **sets})
        path.write_text(json.dumps(record, indent=1))
    viewer.close()


if __name__ == "__main__":
    main()
