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

import statistics
import threading
import time

from gui_timing import canvases, frame_scene, redraw_ms, slide_viewer


def convolve_until(stop: threading.Event, priority: str | int) -> None:
    import torch

    from napari_wsol import jobs

    jobs.JOB_PRIORITY = priority  # "idle" (SCHED_IDLE) or a nice value
    jobs.yield_to_the_gui()
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

    priorities: dict[str, str | int | None] = {
        "idle": None,
        "convolutions at nice 10": 10,
        "convolutions at nice 0": 0,
        "convolutions under SCHED_IDLE": "idle",
    }
    frames: dict[str, list[float]] = {name: [] for name in priorities}
    for _ in range(3):
        for name, priority in priorities.items():
            stop = threading.Event()
            if priority is not None:
                worker = threading.Thread(target=convolve_until, args=(stop, priority))
                worker.start()
                time.sleep(1.0)
            frames[name].append(frame_ms())
            stop.set()
            if priority is not None:
                worker.join()
    for name, ms in frames.items():
        print(f"{name:30s} frame (ms): {[round(x, 1) for x in ms]}", flush=True)
    viewer.close()


if __name__ == "__main__":
    main()
