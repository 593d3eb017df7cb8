"""Latency of the napari app: threshold drag, and event-loop stalls during jobs.

Run under an X server (``xvfb-run -a``) from the repository root::

    xvfb-run -a .venv/bin/python docs/scripts/app_latency.py --json docs/app_latency.json

The viewer shows the sample slide (CMU-1-Small-Region.svs) at 1600 x 1000 with the
sample model; maps are computed for the whole view. Measured:

- threshold: time from setting the slider to the end of the repaint, split into the
  widget's work (mask of the view + area) and napari's redraw; plus the redraw of an
  unchanged frame as the renderer's floor; and the longest stall of the first move,
  which makes the mask layer (``first_move_max_stall_ms``);
- stalls: a 5 ms QTimer on the GUI thread records the gaps between its ticks while a
  job runs in the background (inference of the whole slide, one fine-tuning round,
  pseudo-labels) and for ``--settle`` seconds after it, through the frames that show
  its result; the longest gap is the longest time the viewer was unresponsive;
- the frame of every layer (slide, overlays, mask, pseudo-labels, corrections) with no
  job running: the renderer's floor under the stalls of the jobs that show them;
- a full garbage collection at the end, with the objects the widget froze at start-up
  (napari_wsol._heap) and without.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time

import numpy as np
from gui_timing import GapRecorder, docked_app_viewer, pump, redraw_ms, threshold_moves


def full_collection_ms() -> dict:
    """What a full garbage collection costs now, with the widget's start-up objects
    frozen (as the app runs) and with them given back to the collector."""
    import gc

    def median_ms() -> float:
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            gc.collect()
            times.append((time.perf_counter() - t0) * 1000)
        return round(statistics.median(times), 1)

    frozen = gc.get_freeze_count()
    with_freeze = median_ms()
    gc.unfreeze()
    without = median_ms()
    gc.freeze()
    return {"frozen_objects": frozen, "frozen": with_freeze, "unfrozen": without}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--job-niceness",
        type=int,
        help="run the jobs' threads at this nice value instead of the app's SCHED_IDLE",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=0.3,
        help="seconds the stall recorder keeps running after a job has ended: the frames "
        "that show its result (0 ends it with the job, as before stop 30)",
    )
    args = parser.parse_args()
    if args.job_niceness is not None:
        from napari_wsol import jobs

        jobs.JOB_PRIORITY = args.job_niceness  # 0: the jobs compete with the GUI as equals
    os.environ.setdefault("WSOL_SESSIONS", tempfile.mkdtemp(prefix="wsol-latency-"))

    from qtpy.QtWidgets import QApplication

    viewer, image, widget = docked_app_viewer()

    recorder = GapRecorder()

    def job(start, running=lambda: widget.worker is not None, settle: float = args.settle) -> dict:
        recorder.start()
        t0 = time.perf_counter()
        start()
        while running():
            QApplication.processEvents()
            time.sleep(0.001)
        seconds = time.perf_counter() - t0
        pump(settle)  # the frames that follow the last step
        ms = recorder.stop()
        return {
            "seconds": round(seconds, 2),
            "max_stall_ms": round(float(ms.max()), 1),
            "p99_ms": round(float(np.percentile(ms, 99)), 1),
            "ticks": len(ms),
        }

    report: dict = {"window": [1600, 1000], "jobs": {}}
    runs = []
    for _ in range(args.repeats):
        # The store is reused when nothing changed; a fresh run each time.
        widget.session.state.current = 0
        shutil.rmtree(widget.session.store_path(), ignore_errors=True)
        runs.append(job(widget.run))
        print("maps", runs[-1], widget.status.value, flush=True)
    report["jobs"]["maps (whole view)"] = runs
    report["tiles"] = widget.status.value

    for layer in viewer.layers:
        layer.visible = layer.name in (image.name, "fcam")
    QApplication.processEvents()

    def choose_and_move() -> None:
        widget.thr_method.value = "fcam"
        widget.threshold.value = 0.4

    # Choosing the map and the first move make the mask layer.
    first_move = job(
        choose_and_move,
        running=lambda: bool(widget._turns) or "fcam mask" not in viewer.layers,
        settle=0.3,
    )
    print("first threshold move (mask layer made)", first_move, flush=True)
    ((work, redraw, floor),) = threshold_moves(widget, viewer)
    total = [a + b for a, b in zip(work, redraw, strict=True)]
    report["threshold_ms"] = {
        "widget_median": round(statistics.median(work), 1),
        "widget_max": round(max(work), 1),
        "redraw_median": round(statistics.median(redraw), 1),
        "total_median": round(statistics.median(total), 1),
        "total_max": round(max(total), 1),
        "unchanged_frame_redraw_median": round(statistics.median(floor), 1),
        "drags": len(work),
        "first_move_max_stall_ms": first_move["max_stall_ms"],
    }
    print("threshold", report["threshold_ms"], flush=True)

    for layer in viewer.layers:
        layer.visible = True
    QApplication.processEvents()  # that repaint is not the job's
    pseudo = job(widget.make_pseudo_labels)
    report["jobs"]["pseudo-labels"] = [pseudo]
    print("pseudo", pseudo, widget.status.value, flush=True)
    # One frame of every layer with nothing running: the renderer's floor for the
    # fine-tuning rounds below (each ends with frames of all of them).
    from qtpy.QtWidgets import QOpenGLWidget

    frames = redraw_ms(widget.window().findChildren(QOpenGLWidget))
    report["all_layers_frame_ms"] = {
        "layers": len(viewer.layers),
        "median": round(statistics.median(frames), 1),
        "max": round(max(frames), 1),
    }
    print("frame of every layer", report["all_layers_frame_ms"], flush=True)
    tunes = []
    for _ in range(args.repeats):
        tunes.append(job(widget.fine_tune))  # the round, then the overlays recomputed
        print("fine-tune", tunes[-1], widget.train_info.value, flush=True)
    steps = int(widget.steps.value)  # the app's default for this machine
    report["jobs"][f"fine-tune heads ({steps} steps) + overlay refresh"] = tunes
    # What a job's start costs the GUI thread before any of our code runs: napari's
    # progress bar (the activity dock adds a widget and repaints the window).
    from napari.utils import progress

    costs = []
    for _ in range(5):
        t0 = time.perf_counter()
        bar = progress(total=10, desc="probe")
        costs.append((time.perf_counter() - t0) * 1000)
        bar.close()
        QApplication.processEvents()
    report["napari_progress_bar_creation_ms"] = round(statistics.median(costs), 1)
    report["full_gc_ms"] = full_collection_ms()
    print("full garbage collection", report["full_gc_ms"], flush=True)
    stalls = [r["max_stall_ms"] for runs_ in report["jobs"].values() for r in runs_]
    report["max_stall_ms"] = max(stalls)
    from wsol.machine import describe

    report["device"] = "CPU, Xvfb + Mesa llvmpipe"
    report["machine"] = describe()
    print(json.dumps(report, indent=1))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1)
    viewer.close()


if __name__ == "__main__":
    main()
