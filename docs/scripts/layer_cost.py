"""What one new napari layer costs the GUI thread, in an otherwise idle viewer.

Run under an X server (``xvfb-run -a``)::

    xvfb-run -a .venv/bin/python docs/scripts/layer_cost.py

A 1600 x 1000 viewer with a 2000 x 2000 image; then four overlay-like Image layers
(500 x 500 float32, fixed contrast limits, translucent) and two Labels layers
(1000 x 1000) are added one at a time. For each: the time ``add_image`` /
``add_labels`` takes (napari's layer controls, layer list, selection, vispy visual) and
the time of the event processing that follows (its first frame). No job runs, so this
is the floor under the stalls that docs/scripts/app_latency.py measures when the app
first creates its layers.

``--background torch`` runs convolutions on a second thread meanwhile (torch's default
threads; ``torch1``: one thread), ``--background python`` a pure-Python loop that holds
the GIL; ``--no-select`` adds layers without napari making them the active layer (a
private attribute; what the selection change costs).

Then the same Image layer is added four more times from inside the event loop while a
5 ms QTimer ticks, as docs/scripts/app_latency.py measures stalls: the longest gap
between ticks around each add is what a user feels (add + Qt's repaint and composition
of the window), with no job running.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import numpy as np


def background(kind: str, stop: threading.Event) -> None:
    if kind.startswith("torch"):
        import torch

        if kind == "torch1":
            torch.set_num_threads(1)
        convs = torch.nn.Sequential(*[torch.nn.Conv2d(64, 64, 3, padding=1) for _ in range(4)])
        x = torch.randn(8, 64, 64, 64)
        with torch.no_grad():
            while not stop.is_set():
                convs(x)
    else:
        while not stop.is_set():
            total = 0
            for i in range(10_000):
                total += i


def event_loop_gaps(viewer, rng, n: int = 4) -> list[float]:
    """Longest gap of a 5 ms timer around each of ``n`` Image-layer adds, 300 ms apart."""
    from qtpy.QtCore import QEventLoop, QTimer

    ticks: list[float] = []
    windows: list[tuple[float, float]] = []
    ticker = QTimer()
    ticker.setInterval(5)
    ticker.timeout.connect(lambda: ticks.append(time.perf_counter()))
    loop = QEventLoop()

    def add(i: int) -> None:
        start = time.perf_counter()
        viewer.add_image(
            rng.random((500, 500), dtype=np.float32),
            name=f"timed overlay {i}",
            opacity=0.7,
            contrast_limits=(0, 1),
        )
        windows.append((start, time.perf_counter()))
        QTimer.singleShot(300, (lambda: add(i + 1)) if i + 1 < n else loop.quit)

    ticker.start()
    QTimer.singleShot(300, lambda: add(0))
    loop.exec()
    ticker.stop()
    stamps = np.asarray(ticks)
    gaps = []
    for start, end in windows:
        # The tick before the add started to the first tick after it (and its repaint).
        before = stamps[stamps <= start].max()
        after = stamps[stamps > end]
        span = np.diff(np.concatenate([[before], after[after < end + 1.0]]))
        gaps.append(1000 * float(span.max()))
    return gaps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--background", choices=["none", "torch", "torch1", "python"])
    parser.add_argument("--no-select", action="store_true")
    args = parser.parse_args()
    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True)
    if args.no_select:
        viewer.layers._activate_on_insert = False
    viewer.window.resize(1600, 1000)
    rng = np.random.default_rng(0)
    viewer.add_image(rng.random((2000, 2000), dtype=np.float32), name="slide")
    for _ in range(3):
        QApplication.processEvents()
    stop = threading.Event()
    if args.background not in (None, "none"):
        threading.Thread(target=background, args=(args.background, stop), daemon=True).start()
        time.sleep(1)

    def timed(add) -> tuple[float, float]:
        start = time.perf_counter()
        add()
        added = time.perf_counter()
        QApplication.processEvents()
        return 1000 * (added - start), 1000 * (time.perf_counter() - added)

    adds, draws = [], []
    for i in range(4):
        data = rng.random((500, 500), dtype=np.float32)
        add, draw = timed(
            lambda data=data, i=i: viewer.add_image(
                data, name=f"overlay {i}", opacity=0.7, contrast_limits=(0, 1)
            )
        )
        adds.append(add)
        draws.append(draw)
        print(f"Image layer {i}: add {add:.0f} ms, first frame {draw:.0f} ms")
    print(
        f"Image layers, median: add {statistics.median(adds):.0f} ms, "
        f"first frame {statistics.median(draws):.0f} ms"
    )
    for i in range(2):
        data = np.zeros((1000, 1000), np.uint8)
        add, draw = timed(lambda data=data, i=i: viewer.add_labels(data, name=f"labels {i}"))
        print(f"Labels layer {i}: add {add:.0f} ms, first frame {draw:.0f} ms")
    gaps = event_loop_gaps(viewer, rng)
    print(
        "Image layers added inside the event loop, longest 5 ms-timer gap each: "
        + ", ".join(f"{g:.0f}" for g in gaps)
        + f" ms (median {statistics.median(gaps):.0f})"
    )
    stop.set()
    viewer.close()


if __name__ == "__main__":
    main()
