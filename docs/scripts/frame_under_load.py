"""Does a job's computing slow the canvas's frames? A frame idle and beside convolutions.

Run under an X server from the repository root::

    xvfb-run -a .venv/bin/python docs/scripts/frame_under_load.py

The scene of docs/scripts/frame_cost.py: the sample slide in a 1600 x 1000 window, four
map-like overlays and three Labels layers over the whole view. Three rounds of: the
median of 15 redraws of the unchanged canvas with nothing else running, then with a
thread running convolutions at nice 10 (the app's jobs' priority until stop 29), then
at nice 0, then under SCHED_IDLE (the app's jobs' policy since, napari_wsol.jobs).
"""

from __future__ import annotations

import os
import statistics
import threading
import time

from gui_timing import canvases, frame_scene, redraw_ms, slide_viewer

IDLE = -1  # stands for SCHED_IDLE among the nice values


def convolve_until(stop: threading.Event, niceness: int) -> None:
    import torch

    if niceness == IDLE:
        os.sched_setscheduler(threading.get_native_id(), os.SCHED_IDLE, os.sched_param(0))
    else:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
    convs = torch.nn.Sequential(*[torch.nn.Conv2d(64, 64, 3, padding=1) for _ in range(4)])
    x = torch.randn(8, 64, 64, 64)
    with torch.no_grad():
        while not stop.is_set():
            convs(x)


def main() -> None:
    from qtpy.QtWidgets import QApplication

    viewer, image = slide_viewer()
    frame_scene(viewer, image)
    shown = canvases()

    def frame_ms() -> float:
        for _ in range(5):
            QApplication.processEvents()
        return statistics.median(redraw_ms(shown))

    frames: dict[str, list[float]] = {
        "idle": [],
        "convolutions at nice 10": [],
        "convolutions at nice 0": [],
        "convolutions under SCHED_IDLE": [],
    }
    for _ in range(3):
        for name in frames:
            stop = threading.Event()
            if name != "idle":
                last = name.rsplit(" ", 1)[1]
                niceness = IDLE if last == "SCHED_IDLE" else int(last)
                worker = threading.Thread(target=convolve_until, args=(stop, niceness))
                worker.start()
                time.sleep(1.0)
            frames[name].append(frame_ms())
            stop.set()
            if name != "idle":
                worker.join()
    for name, ms in frames.items():
        print(f"{name:30s} frame (ms): {[round(x, 1) for x in ms]}", flush=True)
    viewer.close()


if __name__ == "__main__":
    main()
