"""Timing helpers for the GUI benchmark scripts in this folder (run under Xvfb).

Imported by app_latency.py, pseudo_label_stalls.py and frame_cost.py, which Python
finds here because a script's own folder is on its path.
"""

from __future__ import annotations

import time

import numpy as np


class GapRecorder:
    """A 5 ms timer on the GUI thread; the gaps between its ticks are the times the
    event loop did not turn (the viewer did not respond)."""

    def __init__(self, interval_ms: int = 5) -> None:
        from qtpy.QtCore import QTimer

        self._gaps: list[float] = []
        self._last = time.perf_counter()
        self._timer = QTimer()
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._tick)

    def _tick(self) -> None:
        now = time.perf_counter()
        self._gaps.append(now - self._last)
        self._last = now

    def start(self) -> None:
        self._gaps.clear()
        self._last = time.perf_counter()
        self._timer.start()

    def stop(self) -> np.ndarray:
        """The gaps since :meth:`start`, in ms."""
        self._timer.stop()
        return np.array(self._gaps) * 1000


def pump(seconds: float) -> None:
    """Turn the event loop for ``seconds``."""
    from qtpy.QtWidgets import QApplication

    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        QApplication.processEvents()
        time.sleep(0.001)  # a spinning loop would take a core from the job


def redraw_ms(canvases: list, repeats: int = 15) -> list[float]:
    """Times of ``repeats`` redraws of the unchanged canvases (update, one loop pass)."""
    from qtpy.QtWidgets import QApplication

    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for canvas in canvases:
            canvas.update()
        QApplication.processEvents()
        times.append((time.perf_counter() - t0) * 1000)
    return times
