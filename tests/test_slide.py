from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from conftest import real_slide
from wsol.slide import ImageSlide, SlideError, open_slide, slide_stem, to_rgb8


def test_pyramidal_ome_tiff_levels_mpp_and_pixels(synthetic_slide: Path) -> None:
    with open_slide(synthetic_slide) as slide:
        assert slide.backend == "tifffile" and slide.vendor == "ome-tiff"
        assert [lv.shape for lv in slide.levels] == [
            (1500, 2100),
            (750, 1050),
            (375, 525),
            (188, 263),
        ]
        assert [lv.downsample for lv in slide.levels] == pytest.approx([1, 2, 4, 7.98], abs=0.01)
        assert slide.levels[0].tile == (256, 256)
        assert slide.mpp == pytest.approx(0.25)
        with tifffile.TiffFile(synthetic_slide) as tif:
            level1 = tif.series[0].levels[1].asarray()
        assert np.array_equal(slide.read_region(1, 100, 200, 300, 400), level1[100:400, 200:600])


def test_region_outside_the_image_is_white(synthetic_slide: Path) -> None:
    with open_slide(synthetic_slide) as slide:
        inside = slide.read_region(2, 0, 0, 10, 10)
        region = slide.read_region(2, -5, -5, 20, 20)
        assert np.array_equal(region[5:15, 5:15], inside)
        assert (region[:5] == 255).all() and (region[:, :5] == 255).all()
        assert (slide.read_region(0, 5000, 5000, 8, 8) == 255).all()
        with pytest.raises(ValueError, match="level 7 out of range"):
            slide.read_region(7, 0, 0, 8, 8)


def test_pyramid_is_lazy_dask_with_tile_aligned_chunks(synthetic_slide: Path) -> None:
    with open_slide(synthetic_slide) as slide:
        pyramid = slide.pyramid()
        assert [a.shape[:2] for a in pyramid] == [lv.shape for lv in slide.levels]
        assert len(pyramid) == 4 and pyramid[0].shape == (1500, 2100, 3)
        assert pyramid[0].chunksize[0] % 256 == 0 and pyramid[0].chunksize[1] % 256 == 0
        crop = pyramid[1][300:700, 50:900].compute()
        assert np.array_equal(crop, slide.read_region(1, 300, 50, 400, 850))


def test_reads_from_many_threads_match_serial_reads(synthetic_slide: Path) -> None:
    with open_slide(synthetic_slide) as slide:
        boxes = [(0, (i * 97) % 1200, (i * 131) % 1800, 224, 224) for i in range(40)]
        serial = [slide.read_region(*b) for b in boxes]
        results: list = [None] * len(boxes)

        def work(k: int) -> None:
            for i in range(k, len(boxes), 4):
                results[i] = slide.read_region(*boxes[i])

        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(np.array_equal(a, b) for a, b in zip(serial, results, strict=True))


def test_generic_tiff_mpp_from_resolution_tags(tmp_path: Path) -> None:
    path = tmp_path / "plain.tif"
    data = np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    tifffile.imwrite(
        path,
        data,
        tile=(128, 128),
        photometric="rgb",
        resolution=(1e4 / 0.5, 1e4 / 0.5),
        resolutionunit="CENTIMETER",
    )
    with open_slide(path) as slide:
        assert slide.vendor == "tiff" and slide.mpp == pytest.approx(0.5)
        assert np.array_equal(slide.read_region(0, 0, 0, 300, 400), data)


def test_sixteen_bit_grayscale_is_scaled_by_bit_depth(tmp_path: Path) -> None:
    path = tmp_path / "gray16.tif"
    data = np.array([[0, 65535], [32768, 257]], np.uint16)
    tifffile.imwrite(path, data)
    with open_slide(path) as slide:
        rgb = slide.read_region(0, 0, 0, 2, 2)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert rgb[..., 0].tolist() == [[0, 255], [128, 1]]
    assert (rgb[..., 0] == rgb[..., 2]).all()


def test_png_alpha_is_composited_on_white(tmp_path: Path) -> None:
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:2, :, 3] = 255  # top half opaque red, bottom half transparent
    Image.fromarray(rgba).save(tmp_path / "a.png")
    with open_slide(tmp_path / "a.png") as slide:
        assert slide.backend == "image" and slide.mpp is None
        rgb = slide.read_region(0, 0, 0, 4, 4)
    assert rgb[0, 0].tolist() == [200, 0, 0] and rgb[3, 3].tolist() == [255, 255, 255]


def test_to_rgb8_conversions() -> None:
    assert to_rgb8(np.array([[0.5]], np.float32))[0, 0].tolist() == [128] * 3
    assert to_rgb8(np.zeros((1, 1, 5), np.uint8)).shape == (1, 1, 3)
    gray_alpha = np.array([[[0, 0]]], np.uint8)  # black, fully transparent
    assert to_rgb8(gray_alpha)[0, 0].tolist() == [255] * 3


def test_image_slide_from_array() -> None:
    slide = ImageSlide.from_array(np.zeros((10, 20), np.uint8))
    assert slide.shape == (10, 20) and slide.read_region(0, 0, 0, 10, 20).shape == (10, 20, 3)


def test_thumbnail_is_bounded_and_reports_its_downsample(synthetic_slide: Path) -> None:
    with open_slide(synthetic_slide) as slide:
        thumb, downsample = slide.thumbnail(200)
    assert max(thumb.shape[:2]) <= 200 and thumb.dtype == np.uint8
    assert thumb.shape[1] * downsample == pytest.approx(2100, rel=0.02)


def test_slide_stem() -> None:
    assert slide_stem("a/b.ome.tif") == "b"
    assert slide_stem("CMU-1.svs") == "CMU-1"
    assert slide_stem("x.y.png") == "x.y"


def test_aperio_slide_through_openslide() -> None:
    path = real_slide("cmu-1-small-region.svs")
    with open_slide(path) as slide:
        assert slide.backend == "openslide" and slide.vendor == "aperio"
        assert slide.shape == (2967, 2220)
        assert slide.mpp == pytest.approx(0.499, abs=1e-3)
        region = slide.read_region(0, 1000, 1000, 256, 256)
        assert region.shape == (256, 256, 3) and 50 < region.mean() < 240


def test_two_level_aperio_slide_levels_agree() -> None:
    path = real_slide("tcga-cr-7395-01a-01-ts1.svs")
    with open_slide(path) as slide:
        assert slide.level_count == 2 and slide.mpp is None
        assert slide.levels[1].downsample == pytest.approx(2.0, abs=0.01)
        fine = slide.read_region(0, 1600, 2000, 512, 512).astype(np.float32)
        coarse = slide.read_region(1, 800, 1000, 256, 256).astype(np.float32)
        pooled = fine.reshape(256, 2, 256, 2, 3).mean(axis=(1, 3))
        # Same place at two resolutions: close, not equal (separate JPEG encodings).
        assert np.abs(pooled - coarse).mean() < 12
        assert [a.shape[:2] for a in slide.pyramid()] == [lv.shape for lv in slide.levels]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.svs", "file not found"),
        (lambda d: d, "is a directory"),
        (lambda d: _write(d / "empty.svs", b""), "empty file"),
        (lambda d: _write(d / "notes.txt", b"hello"), "unsupported file type .txt"),
        (lambda d: _write(d / "noext", b"hello"), "unsupported file type"),
        (lambda d: _png(d / "image.svs"), "expects TIFF, but the file is PNG data"),
        (
            lambda d: _write(d / "x.png", b"II*\x00" + bytes(100)),
            "expects PNG, but the file is TIFF",
        ),
        (lambda d: _write(d / "garbage.tif", b"\x00garbage" * 50), "not a recognised image"),
        (lambda d: _write(d / "header.tif", b"II*\x00" + bytes(60)), "not a readable TIFF"),
        (lambda d: _write(d / "index.mrxs", b"[GENERAL]\n"), "OpenSlide cannot read"),
    ],
)
def test_bad_input_is_a_slide_error_naming_the_file(tmp_path: Path, make, message: str) -> None:
    path = make(tmp_path)
    with pytest.raises(SlideError, match=message) as info:
        open_slide(path)
    assert str(path) in str(info.value)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _png(path: Path) -> Path:
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path, format="PNG")
    return path
