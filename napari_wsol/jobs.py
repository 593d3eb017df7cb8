"""Background jobs: an engine call with a progress callback, as a napari generator worker.

The engine reports progress through callbacks and stops when ``should_stop()`` turns
true. :func:`stream` runs such a call on a helper thread and yields each progress
report to the worker, whose ``yielded`` signal delivers it on the GUI thread. Cancel
sets an event the engine polls between steps, so a cancelled run still returns
normally (with its partial results saved) instead of being torn down mid-write.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Generator
from typing import Any

_DONE, _FAILED, _PROGRESS = "done", "failed", "progress"
HOLD_LIMIT = 10.0  # seconds a held call waits for the GUI at most
#: How a job's thread yields the CPU to the GUI (Linux): ``"idle"``, the SCHED_IDLE
#: policy, runs it only on CPU time no normal thread wants; an int is a nice value.
JOB_PRIORITY: str | int = "idle"
FALLBACK_NICENESS = 10  # where SCHED_IDLE is refused (the app's priority until stop 29)


def stream(
    call: Callable[..., Any],
    stop: threading.Event,
    *args: Any,
    hold_after_first: threading.Event | None = None,
    **kwargs: Any,
) -> Generator[Any, None, Any]:
    """Run ``call(*args, progress=..., should_stop=stop.is_set, **kwargs)``.

    Yields every progress report as a tuple of the callback's arguments; returns the
    call's result or re-raises its exception. The call runs on a thread of its own at a
    lower CPU priority (:func:`yield_to_the_gui`). With ``hold_after_first`` the call waits
    after its first report until that event is set (or ``stop``, or :data:`HOLD_LIMIT`
    seconds): the GUI makes its layers then, while no computation competes for the CPU.
    """
    reports: queue.SimpleQueue = queue.SimpleQueue()
    hold = hold_after_first

    def progress(*report: Any) -> None:
        nonlocal hold
        reports.put((_PROGRESS, report))
        if hold is not None:
            released, hold = hold, None
            deadline = time.monotonic() + HOLD_LIMIT
            while not (released.wait(0.02) or stop.is_set()):
                if time.monotonic() > deadline:
                    break

    def target() -> None:
        yield_to_the_gui()
        try:
            result = call(*args, progress=progress, should_stop=stop.is_set, **kwargs)
        except BaseException as exc:
            reports.put((_FAILED, exc))
        else:
            reports.put((_DONE, result))

    threading.Thread(target=target, name="wsol-job", daemon=True).start()
    while True:
        kind, payload = reports.get()
        if kind == _PROGRESS:
            yield payload
        elif kind == _FAILED:
            raise payload
        else:
            return payload


def yield_to_the_gui() -> None:
    """Make the calling thread a background one (Linux only; :data:`JOB_PRIORITY`).

    While a job computes, the GUI thread and the OpenGL renderer's threads compete with
    it for the cores, and a canvas frame drawn in software beside it took longer. Under
    SCHED_IDLE the job gets only the CPU time that no normal thread wants: the longest
    stall of a fine-tuning round was 84 ms against 89.5 at nice 10 (medians of 36 rounds,
    docs/BENCHMARKS.md, issue 5), and the rounds took no longer. The threads the
    call starts (torch's OpenMP team, zarr's I/O pool) inherit the policy. With the GUI
    idle the job still gets every core; beside another busy program it gets little.
    """
    if not sys.platform.startswith("linux"):
        return
    tid = threading.get_native_id()
    if JOB_PRIORITY == "idle":
        try:
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
            return
        except OSError:  # refused here (a sandbox's policy): a nice value instead
            pass
    niceness = JOB_PRIORITY if isinstance(JOB_PRIORITY, int) else FALLBACK_NICENESS
    try:
        if os.getpriority(os.PRIO_PROCESS, tid) < niceness:
            os.setpriority(os.PRIO_PROCESS, tid, niceness)
    except OSError:  # not permitted here: run at the normal priority
        pass
