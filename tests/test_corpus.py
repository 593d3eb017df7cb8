"""A corpus of damaged files: every one must open fine or raise SlideError, never crash."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from conftest import REAL_SLIDES, REPO
from wsol.samples import sample_path


def _sources(folder: Path, synthetic_slide: Path) -> list[Path]:
    tiff = folder / "generic.tif"
    rgb = np.asarray(Image.open(sample_path("he_tile")).convert("RGB"))
    tifffile.imwrite(
        tiff, np.tile(rgb, (2, 2, 1)), tile=(256, 256), compression="zlib", photometric="rgb"
    )
    jpeg = folder / "tile.jpg"
    Image.fromarray(rgb).save(jpeg, quality=90)
    sources = [synthetic_slide, tiff, sample_path("he_tile"), jpeg]
    return sources + [p for p in REAL_SLIDES if p.stat().st_size < 4_000_000][:1]


def _corrupt(source: Path, folder: Path) -> list[Path]:
    data = source.read_bytes()
    size = len(data)
    rng = np.random.default_rng(size)
    name = source.name.replace(".", "_")
    suffix = ".ome.tif" if source.name.endswith(".ome.tif") else source.suffix
    out = []

    def emit(tag: str, content: bytes) -> None:
        path = folder / f"{name}-{tag}{suffix}"
        path.write_bytes(content)
        out.append(path)

    for cut in (
        1,
        8,
        16,
        64,
        512,
        size // 10,
        size // 4,
        size // 2,
        3 * size // 4,
        9 * size // 10,
        size - 100,
        size - 1,
    ):
        emit(f"trunc{cut}", data[:cut])
    for pos in (2, 4, 7, 10, 20, 40, *rng.integers(64, size, 6)):
        flipped = bytearray(data)
        flipped[pos] ^= 0xFF
        emit(f"flip{pos}", bytes(flipped))
    zeroed = bytearray(data)
    zeroed[size // 3 : size // 3 + 4096] = bytes(min(4096, size - size // 3))
    emit("zeroblock", bytes(zeroed))
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, synthetic_slide: Path) -> list[Path]:
    folder = tmp_path_factory.mktemp("corpus")
    files = []
    for source in _sources(folder, synthetic_slide):
        files += _corrupt(source, folder)
    (folder / "zero.svs").write_bytes(b"")
    (folder / "zero.tif").write_bytes(b"")
    (folder / "random.svs").write_bytes(np.random.default_rng(1).bytes(100_000))
    (folder / "random.ndpi").write_bytes(b"II*\x00" + np.random.default_rng(2).bytes(50_000))
    (folder / "png-named.svs").write_bytes(sample_path("he_tile").read_bytes())
    (folder / "adir.svs").mkdir()
    return files + [
        folder / n
        for n in ("zero.svs", "zero.tif", "random.svs", "random.ndpi", "png-named.svs", "adir.svs")
    ]


def test_damaged_files_raise_slide_error_and_never_crash(corpus: list[Path]) -> None:
    assert len(corpus) >= 50
    probe = REPO / "tests" / "slide_probe.py"
    run = subprocess.run(
        [sys.executable, str(probe), *map(str, corpus)], capture_output=True, text=True, timeout=600
    )
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    finished = {r["path"]: r for r in lines if r["outcome"] != "start"}
    started = [r["path"] for r in lines if r["outcome"] == "start"]
    if run.returncode != 0:
        crashed = next((p for p in started if p not in finished), "?")
        pytest.fail(f"probe died (exit {run.returncode}) on {crashed}:\n{run.stderr[-2000:]}")
    assert len(finished) == len(corpus)
    bad = {
        p: f"{r['outcome']}: {r['error']}"
        for p, r in finished.items()
        if r["outcome"] not in ("ok", "SlideError")
    }
    assert not bad, bad
    errors = {p: r["error"] for p, r in finished.items() if r["outcome"] == "SlideError"}
    for path, error in errors.items():
        assert path in error, f"error does not name the file: {error}"
    # Anything cut to its first 512 bytes, empty or not an image at all must be rejected.
    for path in corpus:
        if any(
            t in path.name
            for t in (
                "trunc1.",
                "trunc8.",
                "trunc16.",
                "trunc64.",
                "trunc512.",
                "zero.",
                "random",
                "adir",
                "png-named",
            )
        ):
            assert str(path) in errors, f"{path.name} was not rejected"
    assert len(errors) >= len(corpus) // 2
