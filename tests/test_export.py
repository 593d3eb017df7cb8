from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

import wsol
from wsol.infer import infer_slide
from wsol.infer.export import (
    mask_polygons,
    write_geojson,
    write_mask_png,
    write_mask_tiff,
    write_tile_csv,
)
from wsol.region import BACKGROUND, FOREGROUND, PaintedLabels, Region
from wsol.slide import open_slide


def _area(ring: np.ndarray) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def test_polygons_with_holes_and_islands() -> None:
    mask = np.zeros((60, 80), bool)
    mask[10:40, 10:40] = True
    mask[20:30, 20:30] = False  # a hole
    mask[45:55, 60:75] = True  # a second island
    polygons = sorted(mask_polygons(mask, scale=2.0, tolerance=0), key=len, reverse=True)
    assert [len(p) for p in polygons] == [2, 1]
    outer, hole = polygons[0]
    # Traced through pixel edges' midpoints: areas within a pixel's rim of the truth.
    assert _area(outer) / 4 == pytest.approx(30 * 30, rel=0.05)
    assert _area(hole) / 4 == pytest.approx(10 * 10, rel=0.15)
    assert np.array_equal(outer[0], outer[-1])  # closed ring
    xs, ys = outer[:, 0], outer[:, 1]
    assert xs.min() == pytest.approx(20, abs=2) and ys.max() == pytest.approx(80, abs=2)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, synthetic_slide: Path):
    torch.manual_seed(0)
    model = wsol.create_model("resnet18", 2, input_size=64, class_names=["normal", "tumor"])
    with open_slide(synthetic_slide) as slide:
        return infer_slide(
            model, slide, tmp_path_factory.mktemp("e") / "s.zarr", ["cam", "fcam"], level=1
        ).store


def test_mask_is_a_pyramidal_ome_tiff_of_the_thresholded_map(store, tmp_path: Path) -> None:
    path = write_mask_tiff(store, "cam", tmp_path / "m.ome.tif", threshold=0.2)
    heat = np.asarray(store.levels("cam")[0][...])
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome
        levels = tif.series[0].levels
        assert len(levels) == len(store.levels("cam"))
        mask = levels[0].asarray()
        assert "PhysicalSizeX" in tif.ome_metadata
        assert levels[0].keyframe.is_tiled
    assert mask.shape == heat.shape and set(np.unique(mask)) <= {0, 255}
    np.testing.assert_array_equal(mask == 255, heat.astype(np.float32) >= 0.2)
    assert 0 < (mask == 255).mean() < 1


def test_masks_compare_the_stored_map_with_the_threshold_as_the_app_does(
    store, tmp_path: Path
) -> None:
    """Maps are stored in float16. A Python float threshold against them is rounded to
    float16 (NumPy's weak scalars), down onto values just under it: the export must
    compare as the app's mask layer and area do, in float32."""
    heat = np.asarray(store.levels("cam")[0][...])
    value = np.float32(np.median(heat[heat > 0.1]))
    t = float(np.nextafter(value, np.float32(1)))  # just above a stored value
    assert np.float16(t) == value  # which float16 rounds it back onto
    expected = heat.astype(np.float32) >= np.float32(t)
    assert (heat == value).any() and not expected[heat == value].any()
    png = write_mask_png(store, "cam", tmp_path / "m.png", threshold=t)
    from PIL import Image

    np.testing.assert_array_equal(np.asarray(Image.open(png)) == 255, expected)
    path = write_mask_tiff(store, "cam", tmp_path / "m.ome.tif", threshold=t)
    np.testing.assert_array_equal(tifffile.imread(path, level=0) == 255, expected)


def test_geojson_is_a_qupath_feature_collection_in_slide_pixels(store, tmp_path: Path) -> None:
    path = write_geojson(store, "cam", tmp_path / "a.geojson", threshold=0.2)
    data = json.loads(path.read_text())
    assert data["type"] == "FeatureCollection" and data["features"]
    height, width = store.grid.slide_shape
    for feature in data["features"]:
        assert feature["geometry"]["type"] == "Polygon"
        props = feature["properties"]
        assert props["classification"]["name"] == "tumor" and props["objectType"] == "annotation"
        for ring in feature["geometry"]["coordinates"]:
            ring = np.asarray(ring)
            assert np.array_equal(ring[0], ring[-1])
            assert (ring >= 0).all()
            assert (ring[:, 0] <= width).all() and (ring[:, 1] <= height).all()
    # The map's last pixels reach past the slide's edge; the outlines stop at it.
    assert store.grid.map_shape[1] * store.scale(0) > width
    whole = write_geojson(store, "cam", tmp_path / "whole.geojson", threshold=0.0)
    (feature,) = json.loads(whole.read_text())["features"]
    ring = np.asarray(feature["geometry"]["coordinates"][0])
    assert ring[:, 0].max() == width and ring[:, 1].max() == height
    # Polygon area matches the thresholded map's area (both in level-0 pixels).
    heat = np.asarray(store.levels("cam")[0][...])
    area = sum(
        _area(np.asarray(f["geometry"]["coordinates"][0]))
        - sum(_area(np.asarray(h)) for h in f["geometry"]["coordinates"][1:])
        for f in data["features"]
    )
    assert area == pytest.approx((heat >= 0.2).sum() * store.scale(0) ** 2, rel=0.1)


def test_tile_csv_lists_every_tile_that_ran(store, tmp_path: Path) -> None:
    path = write_tile_csv(store, tmp_path / "t.csv")
    rows = list(csv.DictReader(path.open()))
    probs = store.probabilities()
    assert len(rows) == int((~np.isnan(probs[..., 0])).sum()) > 0
    first = rows[0]
    assert set(first) >= {
        "row",
        "col",
        "x",
        "y",
        "width",
        "height",
        "tissue",
        "p_normal",
        "p_tumor",
        "predicted",
    }
    i, j = int(first["row"]), int(first["col"])
    assert float(first["p_tumor"]) == pytest.approx(float(probs[i, j, 1]), abs=1e-5)
    assert int(first["x"]) == round(j * store.grid.stride * store.grid.downsample)


def test_exported_masks_keep_the_corrections_on_every_level(store, tmp_path: Path) -> None:
    """Painted pixels override the threshold in the OME-TIFF's levels, the PNG and the
    GeoJSON; elsewhere the masks are the map's threshold."""
    from PIL import Image

    s0 = store.scale(0)
    heat = np.asarray(store.levels("cam")[0][...])
    # A region covering map pixels [4, 12) x [6, 18) of level 0, two label px per map px.
    region = Region(int(4 * s0), int(6 * s0), int(8 * s0), int(12 * s0), s0 / 2)
    labels = np.full(region.shape, FOREGROUND, np.uint8)
    labels[:, labels.shape[1] // 2 :] = BACKGROUND
    painted = [PaintedLabels(labels, region)]
    want = heat.astype(np.float32) >= 0.2
    want[4:12, 6:12] = True
    want[4:12, 12:18] = False
    tif = write_mask_tiff(store, "cam", tmp_path / "m.ome.tif", 0.2, corrections=painted)
    with tifffile.TiffFile(tif) as fh:
        levels = [level.asarray() for level in fh.series[0].levels]
    np.testing.assert_array_equal(levels[0] == 255, want)
    s1 = store.scale(1) / s0  # level-0 map px per level-1 px
    # Level-1 pixels wholly inside the foreground half of the region.
    inside = (
        slice(int(np.ceil(4 / s1)), int(12 // s1)),
        slice(int(np.ceil(6 / s1)), int(12 // s1)),
    )
    assert levels[1][inside].size and (levels[1][inside] == 255).all()
    background = (inside[0], slice(int(np.ceil(12 / s1)), int(18 // s1)))
    assert levels[1][background].size and not levels[1][background].any()
    png = write_mask_png(store, "cam", tmp_path / "m.png", 0.2, corrections=painted)
    np.testing.assert_array_equal(np.asarray(Image.open(png)) == 255, want)
    plain = write_mask_png(store, "cam", tmp_path / "plain.png", 0.2)
    np.testing.assert_array_equal(
        np.asarray(Image.open(plain)) == 255, heat.astype(np.float32) >= 0.2
    )
    geo = write_geojson(store, "cam", tmp_path / "m.geojson", 0.2, corrections=painted)
    area = sum(
        _area(np.array(f["geometry"]["coordinates"][0]))
        for f in json.loads(geo.read_text())["features"]
    )
    assert area == pytest.approx(want.sum() * s0**2, rel=0.1)
