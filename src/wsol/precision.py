"""The reduced precision inference runs in, for ``torch.autocast``.

CUDA runs float16 on tensor cores. A CPU gains from bfloat16 only where it has bfloat16
instructions (AVX512-BF16, AMX-BF16): there oneDNN runs the encoder's convolutions about
twice as fast as in float32 (docs/BENCHMARKS.md, issue 3). Elsewhere bfloat16 is
converted in software and is no faster, so ``"auto"`` keeps such CPUs in float32.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from wsol.errors import InputError

#: Accepted ``precision`` values: ``auto`` picks by device (:func:`autocast_dtype`).
PRECISIONS = ("auto", "float32", "bfloat16", "float16")

#: CPU flags (as ``/proc/cpuinfo`` spells them) of native bfloat16 arithmetic.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def has_native_bf16(cpuinfo: str) -> bool:
    """Whether a ``/proc/cpuinfo`` text lists a bfloat16 instruction set."""
    for line in cpuinfo.splitlines():
        if line.startswith(("flags", "Features")):
            return any(flag in line.split() for flag in BF16_FLAGS)
    return False


@functools.cache
def cpu_has_native_bf16() -> bool:
    """This machine's answer to :func:`has_native_bf16`; False where unknown (no Linux)."""
    try:
        return has_native_bf16(Path("/proc/cpuinfo").read_text())
    except OSError:
        return False


def autocast_dtype(device: str | torch.device, precision: str = "auto") -> torch.dtype | None:
    """The dtype for ``torch.autocast`` on ``device``; None means plain float32.

    ``"auto"``: float16 on CUDA, bfloat16 on a CPU with native bfloat16, else float32.
    The other values of :data:`PRECISIONS` are taken as given.
    """
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if precision == "float32":
        return None
    if precision != "auto":
        return getattr(torch, precision)
    device = torch.device(device)
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return None


def dtype_name(dtype: torch.dtype | None) -> str:
    """``"float32"`` for None, else the dtype's name (``"bfloat16"``)."""
    return "float32" if dtype is None else str(dtype).removeprefix("torch.")
