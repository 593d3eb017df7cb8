"""Load triton's LLVM so that it cannot collide with Mesa's inside napari.

torch (through torchvision and torch._dynamo) imports triton, whose extension carries
its own LLVM. When napari already renders with Mesa (llvmpipe on servers and VMs,
radeonsi, ...), Mesa's libLLVM is loaded with global symbols, and loading triton after
it crashes the process with a segmentation fault. Binding triton's symbols to its
own copy (RTLD_DEEPBIND) avoids the collision; the CLI never needs this.
"""

from __future__ import annotations

import importlib.util
import os
import sys


def preload_triton() -> None:
    if "triton" in sys.modules or not hasattr(os, "RTLD_DEEPBIND"):
        return
    try:
        if importlib.util.find_spec("triton") is None:
            return
    except (ImportError, ValueError):
        return
    flags = sys.getdlopenflags()
    sys.setdlopenflags(flags | os.RTLD_DEEPBIND)
    try:
        import triton  # noqa: F401
    except Exception:  # a broken triton only matters to torch.compile, not to us
        pass
    finally:
        sys.setdlopenflags(flags)
