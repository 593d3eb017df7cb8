"""The npe2 manifest at the repository root is what napari loads, installed either way."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from npe2 import PluginManifest

from conftest import REPO

MANIFEST = REPO / "napari.yaml"


def test_manifest_validates_and_its_commands_import() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "npe2", "validate", "napari-wsol", "--imports"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    manifest = PluginManifest.from_file(MANIFEST)
    ids = {c.id for c in manifest.contributions.commands}
    assert {w.command for w in manifest.contributions.widgets} <= ids
    assert {s.command for s in manifest.contributions.sample_data} <= ids


def test_package_copy_is_the_root_manifest() -> None:
    assert (REPO / "napari_wsol" / "napari.yaml").read_bytes() == MANIFEST.read_bytes()


def _is_editable() -> bool:
    text = metadata.distribution("napari-wsol").read_text("direct_url.json") or "{}"
    return json.loads(text).get("dir_info", {}).get("editable", False)


def test_editable_install_loads_the_root_manifest() -> None:
    if not _is_editable():
        pytest.skip("napari-wsol is not installed in editable mode here")
    dist = metadata.distribution("napari-wsol")
    (entry,) = [e for e in dist.entry_points if e.group == "napari.manifest"]
    module, _, filename = entry.value.partition(":")
    # npe2 looks for the file in the package's folder(s), as it does here
    spec = importlib.util.find_spec(module)
    found = [Path(loc) / filename for loc in spec.submodule_search_locations]
    assert [p.resolve() for p in found if p.exists()] == [MANIFEST.resolve()]
    loaded = PluginManifest.from_distribution("napari-wsol")
    assert loaded.contributions == PluginManifest.from_file(MANIFEST).contributions


def test_wheel_carries_the_manifest_and_samples(tmp_path: Path) -> None:
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("napari_wsol-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        assert zf.read("napari_wsol/napari.yaml") == MANIFEST.read_bytes()
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        text = zf.read(entry_points).decode()
        zf.extractall(site)  # a pure-python wheel installs by unpacking
    assert "napari-wsol = napari_wsol:napari.yaml" in text
    assert "wsol = wsol.cli:main" in text
    assert {
        "wsol/_sample_data/he_tile.png",
        "wsol/_sample_data/chelsea.png",
        "wsol/_sample_data/CMU-1-Small-Region.svs",
        "wsol/_sample_data/sample_model.safetensors",
    } <= names

    # npe2 and the sample paths resolve inside the unpacked wheel, ahead of this checkout
    code = (
        "from npe2 import PluginManifest\n"
        "from importlib import metadata\n"
        "m = PluginManifest.from_distribution('napari-wsol')\n"
        "import napari_wsol, wsol.samples\n"
        "print(metadata.distribution('napari-wsol')._path)\n"
        "print(napari_wsol.__file__)\n"
        "print(wsol.samples.sample_model_path())\n"
        "c = m.contributions\n"
        "print(m.name, len(c.sample_data), len(c.readers), len(c.writers), len(c.widgets))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(site))
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    dist_path, package, sample, summary = out.stdout.strip().splitlines()[-4:]
    for path in (dist_path, package, sample):
        assert path.startswith(str(site)), path
    assert summary == "napari-wsol 3 1 1 1"
