"""What a benchmark ran on, recorded in its JSON.

Timings from these shared machines differ by machine (the same correction round took
3.9 s median on one 2-core machine and 2.7 s on another), so every figure carries the
CPU model, not just its architecture.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe(device: str | torch.device = "cpu") -> str:
    """One line: the CPU (or GPU), cores, torch version and threads."""
    device = torch.device(device)
    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    else:
        where = f"{cpu_model()}, {platform.machine()}"
    return (
        f"{where}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
