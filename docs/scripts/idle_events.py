"""Does anything keep repainting while the app is idle? Counts Qt's events for 2 s.

Run under an X server from the repository root::

    xvfb-run -a .venv/bin/python docs/scripts/idle_events.py

The scene of ``app_latency.py`` (the sample slide, the WSOL widget docked). Every
paint, update request and timer event any object receives is counted, by event and
object class, over 2 s of idle: once after the dock's start-up (its warm-ups
included) and once after a maps job of the whole view. An idle app should print two
empty lists: an animation left running (a busy indicator, a timer) would show here and
would cost the canvas frames during a drag.
"""

from __future__ import annotations

import collections
import os
import tempfile

from gui_timing import docked_app_viewer, pump


def main() -> None:
    os.environ.setdefault("WSOL_SESSIONS", tempfile.mkdtemp(prefix="wsol-idle-"))
    from qtpy.QtCore import QEvent, QObject
    from qtpy.QtWidgets import QApplication

    counted = (QEvent.Type.Paint, QEvent.Type.UpdateRequest, QEvent.Type.Timer)
    counts: collections.Counter = collections.Counter()

    class Counter(QObject):
        def eventFilter(self, obj, event) -> bool:
            if event.type() in counted:
                counts[(event.type().name, type(obj).__name__)] += 1
            return False

    viewer, _, widget = docked_app_viewer()
    pump(1.0)
    counter = Counter()
    QApplication.instance().installEventFilter(counter)

    def idle(label: str) -> None:
        counts.clear()
        pump(2.0)
        print(f"idle 2 s, {label}:", counts.most_common(12), flush=True)

    idle("after the dock's start-up")
    widget.run()
    while widget.worker is not None or widget._turns:
        pump(0.01)
    pump(1.0)
    idle("after a maps job")
    QApplication.instance().removeEventFilter(counter)
    viewer.close()


if __name__ == "__main__":
    main()
