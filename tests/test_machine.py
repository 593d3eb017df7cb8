from pathlib import Path

import pytest
import torch

from wsol.machine import cpu_model, describe


def test_a_benchmark_names_the_cpu_model_and_the_torch_it_ran_with() -> None:
    line = describe()
    assert cpu_model() in line and f"torch {torch.__version__}" in line
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("no /proc/cpuinfo here")
    names = [
        ln.split(":", 1)[1].strip()
        for ln in cpuinfo.read_text().splitlines()
        if ln.startswith("model name")
    ]
    if names:
        assert cpu_model() == names[0]
