"""Keep Python's cyclic garbage collector from freezing the viewer.

A full (generation 2) collection walks every container object the process holds. With
torch, napari, Qt and pandas loaded that is over half a million objects, and it took
270-350 ms of the GUI thread on a 2-core CPU: it fires whenever allocations happen to
tip the counters, for example in the middle of creating a layer, and it was the largest
single stall the app measured. Objects that exist once the app has started (modules,
classes, napari's own state) live as long as the process, so they are moved to the
collector's permanent generation (:func:`gc.freeze`): later collections skip them and
take microseconds. Reference counting still frees them as usual; only reference cycles
among them wait for the process to end. That is done once per process, by the first
WSOL widget: the layers open at that moment (usually the slide) are the only user data
it can hold back, and only if they are closed and form a cycle.
"""

from __future__ import annotations

import atexit
import gc

_frozen = False


def freeze_startup_heap() -> None:
    """Collect once, then exempt every object alive now from later collections.

    Only the first call in a process does anything.
    """
    global _frozen
    if _frozen:
        return
    gc.collect()
    gc.freeze()
    # Back to the collector at exit, so that extension modules see their objects freed
    # (nanobind reports "leaked instances" otherwise).
    atexit.register(gc.unfreeze)
    _frozen = True
