from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from wsol.data import WSOLDataset
from wsol.errors import DatasetError, ImageReadError
from wsol.imageio import read_image, read_mask, write_map


def make_dataset(root: Path, n: int = 4, size: int = 32, masks: bool = True) -> Path:
    rng = np.random.default_rng(0)
    (root / "masks").mkdir(parents=True)
    rows = ["image,label"]
    for i in range(n):
        img = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        Image.fromarray(img).save(root / f"img{i}.png")
        label = "lesion" if i % 2 else "normal"
        rows.append(f"img{i}.png,{label}")
        if masks:
            m = np.zeros((size, size), dtype=np.uint8)
            if label == "lesion":
                m[4:20, 6:24] = 255
            Image.fromarray(m).save(root / "masks" / f"img{i}.png")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def test_dataset_reads_labels_and_masks(tmp_path: Path) -> None:
    ds = WSOLDataset(make_dataset(tmp_path), ["normal", "lesion"])
    assert len(ds) == 4 and ds.num_masks == 4
    assert [s.label for s in ds.samples] == [0, 1, 0, 1]
    image, mask = ds.load(1)
    assert image.shape == (32, 32, 3) and mask.dtype == bool and mask.sum() == 16 * 18
    batch = next(ds.batches(3, 16))
    assert batch.images.shape == (3, 3, 16, 16) and batch.masks.shape == (3, 16, 16)
    assert batch.has_mask.all()


def test_classes_from_the_csv_when_no_model_names_them(tmp_path: Path) -> None:
    ds = WSOLDataset(make_dataset(tmp_path))
    assert ds.classes == ["lesion", "normal"]
    (tmp_path / "labels.csv").write_text("image,label\nimg0.png,0\nimg1.png,1\n")
    assert WSOLDataset(tmp_path).classes == ["class0", "class1"]


def test_images_without_masks_count_for_accuracy_only(tmp_path: Path) -> None:
    ds = WSOLDataset(make_dataset(tmp_path, masks=False))
    assert ds.num_masks == 0
    assert not next(ds.batches(4, 16)).has_mask.any()


@pytest.mark.parametrize(
    ("csv", "message"),
    [
        (
            "image,label\nimg0.png,normal\nmissing.png,normal\n",
            r"line 3: image .*missing\.png does not exist",
        ),
        ("file,class\nimg0.png,normal\n", "columns image,label"),
        ("image,label\nimg0.png,tumour\n", "line 2: unknown label 'tumour'"),
        ("image,label\nimg0.png,\n", "line 2: empty image or label"),
        ("image,label\n", "no rows"),
    ],
)
def test_bad_csv_names_the_file_and_line(tmp_path: Path, csv: str, message: str) -> None:
    make_dataset(tmp_path)
    (tmp_path / "labels.csv").write_text(csv)
    with pytest.raises(DatasetError, match=message) as info:
        WSOLDataset(tmp_path, ["normal", "lesion"])
    assert "labels.csv" in str(info.value)


def test_missing_folder_and_csv(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="dataset folder not found"):
        WSOLDataset(tmp_path / "nope")
    with pytest.raises(DatasetError, match=r"labels\.csv: missing"):
        WSOLDataset(tmp_path)


def test_mask_of_the_wrong_size_names_the_mask(tmp_path: Path) -> None:
    make_dataset(tmp_path)
    Image.fromarray(np.zeros((10, 12), dtype=np.uint8)).save(tmp_path / "masks" / "img1.png")
    ds = WSOLDataset(tmp_path, ["normal", "lesion"])
    with pytest.raises(
        DatasetError, match=r"masks/img1\.png: mask is 12x10 but image img1\.png is 32x32"
    ):
        ds.load(1)


def test_unreadable_image_names_the_file(tmp_path: Path) -> None:
    make_dataset(tmp_path)
    (tmp_path / "img2.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    ds = WSOLDataset(tmp_path, ["normal", "lesion"])
    with pytest.raises(ImageReadError, match=r"img2\.png: cannot read image"):
        list(ds.batches(4, 16))


def test_read_image_converts_gray_alpha_and_16_bit(tmp_path: Path) -> None:
    Image.fromarray(np.full((4, 5), 100, dtype=np.uint8)).save(tmp_path / "g.png")
    assert read_image(tmp_path / "g.png").shape == (4, 5, 3)
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 3] = 0  # fully transparent -> white
    Image.fromarray(rgba).save(tmp_path / "a.png")
    assert (read_image(tmp_path / "a.png") == 255).all()
    tifffile.imwrite(tmp_path / "d.tif", np.array([[0, 1000], [2000, 4000]], dtype=np.uint16))
    img = read_image(tmp_path / "d.tif")
    # by its bit depth, as slides are: 4000 of 65535 is 16 of 255
    assert img.dtype == np.uint8 and img[1, 1, 0] == 16 and img[0, 0, 0] == 0
    planar = np.zeros((3, 6, 7), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "p.tif", planar, photometric="rgb", planarconfig="separate")
    assert read_image(tmp_path / "p.tif").shape == (6, 7, 3)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "image not found"),
        (lambda p: p.mkdir(), "is a directory"),
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_bytes(b"not an image at all"), "cannot read image"),
    ],
)
def test_read_image_errors_name_the_file(tmp_path: Path, make, message: str) -> None:
    path = tmp_path / "x.png"
    make(path)
    with pytest.raises(ImageReadError, match=message) as info:
        read_image(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("kind", ["float 0-255", "float 0-1", "uint16", "uint16 grey png"])
def test_an_image_reads_the_same_as_an_image_and_as_a_slide(tmp_path: Path, kind: str) -> None:
    """wsol cam / eval / train (read_image) and predict / the app (open_slide) must see
    the same pixels: 8-bit values saved as floats, and 16-bit by its bit depth."""
    from wsol.slide import open_slide

    rgb = np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    if kind == "uint16 grey png":
        rgb = np.repeat(rgb[..., :1], 3, axis=-1)
        path = tmp_path / "image.png"
        Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(path)
    else:
        path = tmp_path / "image.tif"
        data = {
            "float 0-255": rgb.astype(np.float32),
            "float 0-1": rgb.astype(np.float32) / 255,
            "uint16": rgb.astype(np.uint16) * 257,
        }[kind]
        tifffile.imwrite(path, data)
    image = read_image(path)
    with open_slide(path) as slide:
        as_slide = slide.read_region(0, 0, 0, 24, 40)
    np.testing.assert_array_equal(image, rgb)
    np.testing.assert_array_equal(as_slide, rgb)


def test_read_mask_any_nonzero_channel(tmp_path: Path) -> None:
    rgb = np.zeros((3, 3, 3), dtype=np.uint8)
    rgb[1, 1, 2] = 1
    Image.fromarray(rgb).save(tmp_path / "m.png")
    assert read_mask(tmp_path / "m.png").sum() == 1


def test_read_mask_takes_alpha_for_opacity_not_foreground(tmp_path: Path) -> None:
    rgba = np.zeros((3, 3, 4), dtype=np.uint8)
    rgba[..., 3] = 255  # black and opaque everywhere: no foreground
    rgba[0, 0, :3] = 255  # one white pixel
    rgba[2, 2, :3], rgba[2, 2, 3] = 255, 0  # white but transparent
    Image.fromarray(rgba).save(tmp_path / "m.png")
    np.testing.assert_array_equal(np.argwhere(read_mask(tmp_path / "m.png")), [[0, 0]])


@pytest.mark.parametrize("suffix", [".npy", ".png", ".tif"])
def test_write_map_round_trip(tmp_path: Path, suffix: str) -> None:
    heat = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    path = write_map(tmp_path / f"map{suffix}", heat)
    if suffix == ".npy":
        back = np.load(path)
    elif suffix == ".png":
        back = np.asarray(Image.open(path)) / 255
    else:
        back = tifffile.imread(path)
    np.testing.assert_allclose(back, heat, atol=1 / 255 if suffix == ".png" else 0)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
