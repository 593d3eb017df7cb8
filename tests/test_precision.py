from __future__ import annotations

import pytest
import torch

from wsol.errors import InputError
from wsol.precision import autocast_dtype, cpu_has_native_bf16, dtype_name, has_native_bf16

# Abridged /proc/cpuinfo lines of real CPUs.
ZEN4 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_bf16 avx512_vnni\n"
SAPPHIRE_RAPIDS = "flags\t\t: avx2 avx512f avx512_fp16 amx_bf16 amx_tile amx_int8\n"
SKYLAKE = "flags\t\t: avx2 avx512f avx512bw avx512vl avx512dq\n"
GRAVITON3 = "Features\t: fp asimd sve bf16 i8mm\n"


def test_native_bfloat16_is_read_from_the_cpu_flags() -> None:
    assert has_native_bf16(ZEN4)
    assert has_native_bf16(SAPPHIRE_RAPIDS)
    assert not has_native_bf16(SKYLAKE)  # AVX-512 without BF16: converted in software
    assert not has_native_bf16(GRAVITON3)  # only the x86 flags are trusted
    assert not has_native_bf16("")
    assert not has_native_bf16("model name\t: avx512_bf16 in the name, not a flag\n")


def test_autocast_dtype_by_device_and_choice() -> None:
    assert autocast_dtype("cuda") is torch.float16
    native = torch.bfloat16 if cpu_has_native_bf16() else None
    assert autocast_dtype("cpu") is native
    assert autocast_dtype("cpu", "float32") is None
    assert autocast_dtype("cuda", "float32") is None
    assert autocast_dtype("cpu", "bfloat16") is torch.bfloat16
    assert dtype_name(None) == "float32" and dtype_name(torch.bfloat16) == "bfloat16"
    with pytest.raises(InputError, match="unknown precision 'half'"):
        autocast_dtype("cpu", "half")


def test_every_method_runs_under_cpu_bfloat16_autocast() -> None:
    # The slide pipeline computes maps inside autocast; a method that mixes a bfloat16
    # result into a float32 buffer used to fail there (Score-CAM did).
    from wsol.cams import METHODS, compute_many
    from wsol.model import create_model

    torch.manual_seed(0)
    model = create_model("resnet18", 3)
    x = torch.randn(2, 3, 64, 64)
    reference = compute_many(model, x, METHODS).maps
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = compute_many(model, x, METHODS).maps
    for method in METHODS:
        assert low[method].dtype == torch.float32, method
        assert torch.isfinite(low[method]).all(), method
        # Maps are in [0, 1]; bfloat16 keeps about three significant digits.
        assert (low[method] - reference[method]).abs().max() < 0.02, method
