from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

import wsol
from test_data import make_dataset
from wsol.cli import main
from wsol.samples import sample_path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = wsol.create_model("resnet18", 2, class_names=["normal", "lesion"], input_size=64)
    return model.save(tmp_path_factory.mktemp("ckpt") / "model.safetensors")


def test_console_script_is_installed() -> None:
    exe = shutil.which("wsol") or str(Path(sys.executable).parent / "wsol")
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == f"wsol {wsol.__version__}"


@pytest.mark.parametrize("suffix", [".npy", ".png", ".tif"])
def test_cam_writes_a_map_of_the_image_size(
    tmp_path: Path, checkpoint: Path, suffix: str, capsys
) -> None:
    out = tmp_path / f"map{suffix}"
    code = main(
        [
            "cam",
            str(sample_path("chelsea")),
            "--checkpoint",
            str(checkpoint),
            "--method",
            "gradcampp",
            "--target",
            "lesion",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    if suffix == ".npy":
        heat = np.load(out)
    elif suffix == ".tif":
        heat = tifffile.imread(out)
    else:
        heat = np.asarray(Image.open(out)) / 255.0
    assert heat.shape == (300, 451)
    assert heat.min() >= 0 and heat.max() == pytest.approx(1.0, abs=0.01)
    assert "explains 'lesion'" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["cam", "{tmp}/missing.png", "--checkpoint", "{ckpt}", "--out", "{tmp}/o.npy"],
            "missing.png: image not found",
        ),
        (
            ["cam", "{bad}", "--checkpoint", "{ckpt}", "--out", "{tmp}/o.npy"],
            "bad.png: cannot read image",
        ),
        (
            ["cam", "{img}", "--checkpoint", "{tmp}/none.safetensors", "--out", "{tmp}/o.npy"],
            "none.safetensors: checkpoint not found",
        ),
        (
            ["cam", "{img}", "--checkpoint", "{ckpt}", "--out", "{tmp}/o.jpg"],
            "o.jpg: unsupported output format",
        ),
        (
            [
                "cam",
                "{img}",
                "--checkpoint",
                "{ckpt}",
                "--target",
                "tumour",
                "--out",
                "{tmp}/o.npy",
            ],
            "--target 'tumour'",
        ),
        (["eval", "{tmp}/nodata", "--checkpoint", "{ckpt}"], "nodata: dataset folder not found"),
        # Outputs that cannot be written are refused before any work is done.
        (
            ["eval", "{tmp}/nodata", "--checkpoint", "{ckpt}", "--json", "{bad}/r.json"],
            "bad.png is a file, not a folder",
        ),
        (
            ["predict", "{img}", "--checkpoint", "{ckpt}", "--out", "{bad}"],
            "bad.png: is a file; the output goes into a folder",
        ),
        (
            ["train", "{tmp}", "--stage", "heads", "--checkpoint", "{ckpt}", "--out", "{tmp}/m.pt"],
            "m.pt: checkpoints are written as .safetensors files",
        ),
        (["create-model", "{tmp}"], "is a folder; give a file name"),
        (
            ["predict", "{img}", "{tmp}/chelsea.png", "--checkpoint", "{ckpt}", "--out", "{tmp}"],
            "would write the same files (chelsea.*)",
        ),
    ],
)
def test_bad_input_exits_2_with_a_message_naming_the_file(
    tmp_path: Path, checkpoint: Path, args, message, capsys
) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"garbage")
    fill = {
        "tmp": str(tmp_path),
        "ckpt": str(checkpoint),
        "bad": str(bad),
        "img": str(sample_path("chelsea")),
    }
    assert main([a.format(**fill) for a in args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o.npy").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["create-model", "m.safetensors", "--input-size", "0"],
            "--input-size: 0: must be at least 1",
        ),
        (["create-model", "m.safetensors", "--mpp", "-1"], "--mpp: -1: must be above 0"),
        (["create-model", "m.safetensors", "--decoder-channels", "0,0"], "channel counts >= 1"),
        (
            ["train", "d", "--stage", "heads", "--checkpoint", "c", "--out", "o", "--lr", "0"],
            "--lr: 0",
        ),
        (
            ["predict", "s.svs", "--checkpoint", "c", "--out", "o", "--device", "bogus"],
            "not a torch device",
        ),
    ],
)
def test_impossible_settings_are_argparse_errors(args, message, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_an_unknown_backbone_is_named(tmp_path: Path, capsys) -> None:
    out = str(tmp_path / "m.safetensors")
    assert main(["create-model", out, "--backbone", "resnet1000"]) == 2
    assert "unknown timm backbone 'resnet1000'" in capsys.readouterr().err


def test_unknown_method_is_an_argparse_error(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["cam", "x.png", "--checkpoint", "c", "--method", "gradkam", "--out", "o.npy"])
    assert info.value.code == 2
    assert "unknown method(s) gradkam" in capsys.readouterr().err


def test_eval_json_is_strict_json_when_a_metric_is_undefined(
    tmp_path: Path, checkpoint: Path
) -> None:
    data = make_dataset(tmp_path / "data", n=4, size=48)
    for mask in (data / "masks").iterdir():  # no foreground anywhere: PxAP is undefined
        Image.fromarray(np.zeros((48, 48), np.uint8)).save(mask)
    out = tmp_path / "metrics.json"
    assert (
        main(
            [
                "eval",
                str(data),
                "--checkpoint",
                str(checkpoint),
                "--methods",
                "cam",
                "--json",
                str(out),
            ]
        )
        == 0
    )

    def no_constants(name: str):
        raise AssertionError(f"{name} is not JSON")

    report = json.loads(out.read_text(), parse_constant=no_constants)
    assert report["methods"]["cam"]["pxap"] is None


def test_eval_writes_per_method_metrics(tmp_path: Path, checkpoint: Path, capsys) -> None:
    data = make_dataset(tmp_path / "data", n=6, size=48)
    out = tmp_path / "metrics.json"
    code = main(
        [
            "eval",
            str(data),
            "--checkpoint",
            str(checkpoint),
            "--methods",
            "cam,gradcam,fcam",
            "--json",
            str(out),
            "--tau",
            "0.5",
            "--batch-size",
            "4",
        ]
    )
    assert code == 0
    # Not a terminal: whole progress lines a log can keep, not carriage returns.
    err = capsys.readouterr().err
    assert "\r" not in err and "wsol eval: 6/6 images\n" in err
    report = json.loads(out.read_text())
    assert report["num_images"] == 6 and report["num_masks"] == 6
    assert 0 <= report["accuracy"] <= 100
    for method in ("cam", "gradcam", "fcam"):
        entry = report["methods"][method]
        assert 0 <= entry["pxap"] <= 100
        assert set(entry["best"]) == {"tau", "dice_fg", "dice_bg", "iou_fg", "iou_bg"}
        assert entry["at_tau"]["tau"] == 0.5
        assert entry["box_images"] == 3  # only the lesion images have boxes
    # CAM and Grad-CAM coincide for a GAP + linear classifier
    assert report["methods"]["cam"]["pxap"] == pytest.approx(
        report["methods"]["gradcam"]["pxap"], abs=0.01
    )


def test_eval_names_the_bad_mask(tmp_path: Path, checkpoint: Path, capsys) -> None:
    data = make_dataset(tmp_path / "data", n=2, size=48)
    Image.fromarray(np.zeros((5, 5), dtype=np.uint8)).save(data / "masks" / "img1.png")
    assert main(["eval", str(data), "--checkpoint", str(checkpoint)]) == 2
    assert "masks/img1.png: mask is 5x5 but image img1.png is 48x48" in capsys.readouterr().err


def test_bench_cams_small_run(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    args = ["--batch", "2", "--size", "64", "--repeats", "1", "--precision", "bfloat16"]
    assert main(["bench", "cams", *args, "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    rows = {r["method"]: r for r in report["rows"]}
    assert rows["forward"]["ours_s"] > 0
    assert "theirs_s" in rows["gradcam"] and "speedup" in rows["scorecam"]
    assert rows["scorecam"]["per_image"] is True
    assert report["scorecam_precision"] == "bfloat16"
    assert rows["scorecam (bfloat16 autocast)"]["ours_s"] > 0
    assert rows["scorecam (int8 masked forwards, scorecam_int8=True)"]["speedup"] > 0


def test_headless_demo_writes_overlays(tmp_path: Path, capsys) -> None:
    args = ["demo", "--headless", "--out", str(tmp_path), "--methods", "cam,fcam,pixelcam"]
    assert main(args) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "he_tile_cam.png",
        "he_tile_fcam.png",
        "he_tile_overview.png",
        "he_tile_pixelcam.png",
    ]
    text = capsys.readouterr().out
    assert "WSOLModel  resnet10t" in text and "class probabilities" in text  # sample model
    overlay = np.asarray(Image.open(tmp_path / "he_tile_cam.png"))
    assert overlay.shape == (512, 512, 3)


def test_demo_without_a_display_falls_back_to_headless(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert main(["demo", "--out", str(tmp_path), "--methods", "cam"]) == 0
    assert "no display found" in capsys.readouterr().err
    assert (tmp_path / "he_tile_cam.png").is_file()


def _predict_outputs(out: Path, stem: str, methods: list[str]) -> list[Path]:
    files = [out / f"{stem}.zarr", out / f"{stem}.tiles.csv"]
    for m in methods:
        files += [out / f"{stem}.{m}.mask.ome.tif", out / f"{stem}.{m}.geojson"]
    return files


def test_predict_on_a_plain_png_and_a_pyramidal_tiff(
    tmp_path: Path, checkpoint: Path, synthetic_slide: Path, capsys
) -> None:
    png = sample_path("he_tile")
    options = ["--checkpoint", str(checkpoint), "--methods", "cam,fcam", "--out", str(tmp_path)]
    options += ["--level", "0"]
    assert main(["predict", str(png), str(synthetic_slide), *options]) == 0
    for stem in ("he_tile", "synthetic"):
        for path in _predict_outputs(tmp_path, stem, ["cam", "fcam"]):
            assert path.exists(), path
    out = capsys.readouterr().out
    assert "he_tile.png: 121 tissue tiles" in out  # plain images run every tile (11 x 11)
    mask = tifffile.imread(tmp_path / "he_tile.fcam.mask.ome.tif")
    assert mask.shape == (128, 128)  # 512 px at 4 px per map pixel
    # Rerunning resumes the finished stores instead of recomputing them.
    assert main(["predict", str(png), *options]) == 0
    assert "121 tissue tiles, 0 run" in capsys.readouterr().out


def test_predict_runs_every_tile_of_a_slide_without_stain(
    tmp_path: Path, checkpoint: Path, capsys
) -> None:
    """A TIFF is a slide, so tissue is detected; in a grayscale one it is found nowhere,
    and skipping every tile would give empty outputs: every tile runs, and it says so."""
    grey = tmp_path / "grey.tif"
    tifffile.imwrite(grey, np.asarray(Image.open(sample_path("he_tile")).convert("L")))
    options = ["--checkpoint", str(checkpoint), "--methods", "cam", "--level", "0"]
    assert main(["predict", str(grey), *options, "--out", str(tmp_path / "auto")]) == 0
    out = capsys.readouterr().out
    assert "121 tissue tiles" in out and "no tissue found anywhere" in out
    # Asked for explicitly, detection keeps to the tissue it finds: none.
    assert main(["predict", str(grey), *options, "--out", str(tmp_path / "on"), "--tissue"]) == 0
    out = capsys.readouterr().out
    assert "0 tissue tiles" in out and "--no-tissue runs every tile" in out


def test_predict_takes_the_pixel_size_of_an_image_that_records_none(tmp_path: Path, capsys) -> None:
    """The PNG tile records no pixel size. Read at the model's 1 µm/px it makes 11 x 11
    tiles of 64 px; given as 0.5 µm/px (what it is), each tile covers twice the pixels,
    and the map has half the pixels a side. A pixel size the file records is kept."""
    model = wsol.create_model(
        "resnet18", 2, class_names=["normal", "lesion"], input_size=64, mpp=1.0
    )
    checkpoint = model.save(tmp_path / "model.safetensors")
    png = sample_path("he_tile")
    options = ["--checkpoint", str(checkpoint), "--methods", "cam"]
    assert main(["predict", str(png), *options, "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "121 tissue tiles" in out and "records no pixel size" in out
    assert (
        main(["predict", str(png), *options, "--out", str(tmp_path / "b"), "--slide-mpp", "0.5"])
        == 0
    )
    out = capsys.readouterr().out
    assert "25 tissue tiles" in out and "note:" not in out  # 5 x 5 tiles of 128 image px
    mask = tifffile.imread(tmp_path / "b" / "he_tile.cam.mask.ome.tif")
    assert mask.shape == (64, 64)  # 4 model px (8 image px) per map pixel
    tif = tmp_path / "tile.ome.tif"
    tifffile.imwrite(
        tif,
        np.zeros((256, 256, 3), np.uint8),
        resolution=(1 / 0.25e-4, 1 / 0.25e-4),
        resolutionunit="CENTIMETER",
        photometric="rgb",
    )
    code = main(["predict", str(tif), *options, "--out", str(tmp_path / "c"), "--slide-mpp", "0.5"])
    assert code == 0
    assert "records 0.25 µm/px; --slide-mpp 0.5 was not used" in capsys.readouterr().out
    assert main(["predict", str(png), *options, "--out", str(tmp_path), "--slide-mpp", "0"]) == 2
    assert "--slide-mpp 0.0: must be a positive" in capsys.readouterr().err


def test_predict_reports_a_bad_slide_and_still_does_the_others(
    tmp_path: Path, checkpoint: Path, capsys
) -> None:
    bad = tmp_path / "broken.svs"
    bad.write_bytes(b"II*\x00" + bytes(100))
    code = main(
        [
            "predict",
            str(bad),
            str(sample_path("he_tile")),
            "--checkpoint",
            str(checkpoint),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "1 of 2 slide(s) failed" in err
    assert (tmp_path / "out" / "he_tile.tiles.csv").exists()


def test_predict_from_a_session_keeps_its_thresholds_and_corrections(
    tmp_path: Path, checkpoint: Path, capsys
) -> None:
    """What the app's masks show is what ``wsol predict --session`` writes: the session's
    model, methods and per-method thresholds, and the strokes painted over them."""
    from wsol.region import BACKGROUND, FOREGROUND, Region
    from wsol.session import Session, SessionState

    png = sample_path("he_tile")  # 512 x 512; the model runs it at level 0
    state = SessionState(
        slide=str(png),
        base_model=str(checkpoint),
        methods=["cam", "gradcam"],
        thresholds={"cam": 0.999, "gradcam": 0.0},  # almost nothing / everything positive
        slide_mpp=0.5,  # typed into the app: the PNG records none
    )
    session = Session(tmp_path / "session", state)
    region = Region(0, 0, 256, 256, 1.0)
    labels = np.zeros(region.shape, np.uint8)
    labels[32:96, 32:96] = FOREGROUND
    labels[160:224, 160:224] = BACKGROUND
    session.save_labels(region, "corrections", labels)
    state.edit_region = region.to_dict()
    session.save()

    def masks(out: Path) -> dict[str, np.ndarray]:
        return {m: tifffile.imread(out / f"he_tile.{m}.mask.ome.tif") for m in ("cam", "gradcam")}

    args = ["predict", "--session", str(session.folder), "--out"]
    assert main([*args, str(tmp_path / "kept")]) == 0
    out = capsys.readouterr().out
    assert "v000 (start: model.safetensors)" in out and "1 painted region(s) kept" in out
    assert "he_tile.cam.mask.ome.tif  (cam >= 0.999)" in out
    kept = masks(tmp_path / "kept")
    with tifffile.TiffFile(tmp_path / "kept" / "he_tile.cam.mask.ome.tif") as tif:
        assert 'PhysicalSizeX="2.0"' in tif.ome_metadata  # 0.5 µm/px x 4 px per map pixel
    fg, bg = np.s_[8:24, 8:24], np.s_[40:56, 40:56]  # the strokes at 4 px per map pixel
    for mask in kept.values():
        assert (mask[fg] == 255).all() and (mask[bg] == 0).all()
    assert (np.delete(kept["gradcam"], np.s_[40:56], 0) == 255).all()  # threshold 0
    assert (kept["cam"] == 255).mean() < 0.2  # threshold 0.999 leaves the strokes
    features = json.loads((tmp_path / "kept" / "he_tile.cam.geojson").read_text())["features"]
    assert {f["properties"]["threshold"] for f in features} == {0.999}
    assert any(  # the painted square is a polygon, in level-0 pixels
        np.array(f["geometry"]["coordinates"][0]).min(0).tolist() == [32, 32] for f in features
    )

    assert main([*args, str(tmp_path / "plain"), "--no-corrections"]) == 0
    assert "corrections not kept" in capsys.readouterr().out
    plain = masks(tmp_path / "plain")
    assert (plain["gradcam"] == 255).all() and not (plain["cam"][fg] == 255).all()

    # --threshold overrides every method's; the session's slide may be named (moved).
    assert main([*args, str(tmp_path / "t"), "--threshold", "1.0", str(png)]) == 0
    geojson = json.loads((tmp_path / "t" / "he_tile.gradcam.geojson").read_text())
    assert {f["properties"]["threshold"] for f in geojson["features"]} == {1.0}

    # Another slide, or a session without a model, is refused with the reason.
    other = tmp_path / "other.png"
    shutil.copy(png, other)
    assert main([*args, str(tmp_path / "x"), str(other)]) == 2
    assert "belong to its slide he_tile.png" in capsys.readouterr().err
    state.base_model = None
    session.save()
    assert main([*args, str(tmp_path / "x")]) == 2
    assert "untrained; give --checkpoint" in capsys.readouterr().err
    assert main(["predict", "--out", str(tmp_path / "x"), str(png)]) == 2
    assert "--checkpoint is required without --session" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "level"), [("cmu-1-small-region.svs", 0), ("tcga-cr-7395-01a-01-ts1.svs", 1)]
)
def test_predict_on_the_real_slides(
    tmp_path: Path, checkpoint: Path, name: str, level: int
) -> None:
    from conftest import real_slide

    slide = real_slide(name)
    code = main(
        [
            "predict",
            str(slide),
            "--checkpoint",
            str(checkpoint),
            "--methods",
            "gradcam",
            "--out",
            str(tmp_path),
            "--level",
            str(level),
        ]
    )
    assert code == 0
    stem = slide.name.removesuffix(".svs")
    for path in _predict_outputs(tmp_path, stem, ["gradcam"]):
        assert path.exists(), path
    data = json.loads((tmp_path / f"{stem}.gradcam.geojson").read_text())
    assert data["type"] == "FeatureCollection"
    rows = (tmp_path / f"{stem}.tiles.csv").read_text().splitlines()
    assert len(rows) > 20


def test_bench_slide_runs_both_ways(tmp_path: Path, synthetic_slide: Path, capsys) -> None:
    report = tmp_path / "b.json"
    code = main(
        [
            "bench",
            "slide",
            str(synthetic_slide),
            "--tiles",
            "8",
            "--repeats",
            "1",
            "--batch-size",
            "4",
            "--json",
            str(report),
        ]
    )
    assert code == 0
    data = json.loads(report.read_text())
    assert data["tiles"] == 8 and data["naive_tiles_per_s"] > 0 and data["pipeline_tiles_per_s"] > 0


def test_create_model_writes_a_loadable_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "new.safetensors"
    assert (
        main(
            [
                "create-model",
                str(path),
                "--classes",
                "benign,malignant",
                "--mpp",
                "0.5",
                "--input-size",
                "96",
            ]
        )
        == 0
    )
    model = wsol.load_model(path)
    assert model.config.class_names == ["benign", "malignant"]
    assert model.config.mpp == 0.5 and model.config.input_size == 96


def test_train_stages_from_the_command_line_with_corrections(tmp_path: Path, capsys) -> None:
    data = make_dataset(tmp_path / "ds", n=6, size=64)
    (data / "corrections").mkdir()
    painted = np.zeros((64, 64), np.uint8)
    painted[4:20, 6:24] = 2  # foreground
    painted[40:, 40:] = 1  # background
    Image.fromarray(painted).save(data / "corrections" / "img1.png")
    start = wsol.create_model("resnet18", 2, class_names=["normal", "lesion"], input_size=64)
    ckpt = start.save(tmp_path / "start.safetensors")
    cls = tmp_path / "cls.safetensors"
    assert (
        main(
            [
                "train",
                str(data),
                "--stage",
                "classifier",
                "--checkpoint",
                str(ckpt),
                "--out",
                str(cls),
                "--epochs",
                "2",
                "--batch-size",
                "4",
            ]
        )
        == 0
    )
    assert "classifier epoch 2/2: loss" in capsys.readouterr().err
    fcam = tmp_path / "fcam.safetensors"
    fcam_stage = ["train", str(data), "--stage", "fcam", "--checkpoint", str(cls), "--out"]
    fcam_stage += [str(fcam), "--epochs", "1", "--batch-size", "4", "--cam-method", "cam"]
    assert main(fcam_stage) == 0
    trained, before = wsol.load_model(fcam), wsol.load_model(cls)
    assert torch.equal(trained.classifier.fc.weight, before.classifier.fc.weight)
    assert not torch.equal(trained.decoder.segmentation.weight, before.decoder.segmentation.weight)
    # Rerunning the finished stage resumes past its last epoch: nothing left to do.
    assert main(fcam_stage) == 0
    assert "0 steps" in capsys.readouterr().out
    # From other weights the same command is another run, not that one resumed.
    other = tmp_path / "other.safetensors"
    other.write_bytes(fcam.read_bytes())
    fcam_stage[fcam_stage.index(str(cls))] = str(other)
    assert main(fcam_stage) == 0
    assert "0 steps" not in capsys.readouterr().out


def test_train_rejects_bad_corrections(tmp_path: Path, checkpoint: Path, capsys) -> None:
    data = make_dataset(tmp_path / "ds", n=2, size=32)
    (data / "corrections").mkdir()
    Image.fromarray(np.full((32, 32), 7, np.uint8)).save(data / "corrections" / "img0.png")
    code = main(
        [
            "train",
            str(data),
            "--stage",
            "heads",
            "--checkpoint",
            str(checkpoint),
            "--out",
            str(tmp_path / "o.safetensors"),
        ]
    )
    assert (
        code == 2
        and "img0.png: corrections must be 0 (none), 1 (bg), 2 (fg)" in capsys.readouterr().err
    )
    # Strokes painted on another image size would land elsewhere once stretched.
    Image.fromarray(np.full((8, 40), 2, np.uint8)).save(data / "corrections" / "img0.png")
    train = ["train", str(data), "--stage", "heads", "--checkpoint", str(checkpoint), "--out"]
    assert main([*train, str(tmp_path / "o.safetensors")]) == 2
    assert "img0.png: corrections are 40x8 but image img0.png is 32x32" in capsys.readouterr().err


def test_eval_faithfulness_and_dense_crf(tmp_path: Path, checkpoint: Path, capsys) -> None:
    data = make_dataset(tmp_path / "data", n=6, size=48)
    plain, refined = tmp_path / "plain.json", tmp_path / "crf.json"
    common = ["eval", str(data), "--checkpoint", str(checkpoint), "--no-boxes"]
    assert main([*common, "--methods", "cam,minmaxcam,fcam", "--faithfulness"]) == 0
    out = capsys.readouterr().out
    assert "AD% ↓" in out and "Ins ↑" in out and "ADo%" not in out  # single-label
    assert main([*common, "--methods", "fcam", "--json", str(plain)]) == 0
    assert main([*common, "--methods", "fcam", "--dense-crf", "--json", str(refined)]) == 0
    a, b = json.loads(plain.read_text()), json.loads(refined.read_text())
    assert "refine" in b and "refine" not in a
    assert a["methods"]["fcam"]["pxap"] != b["methods"]["fcam"]["pxap"]


def test_train_guided_with_mask_labels_changes_the_encoder(tmp_path: Path, capsys) -> None:
    data = make_dataset(tmp_path / "ds", n=6, size=64)
    start = wsol.create_model("resnet10t", 2, class_names=["normal", "lesion"], input_size=64)
    ckpt = start.save(tmp_path / "start.safetensors")
    out = tmp_path / "guided.safetensors"
    args = ["train", str(data), "--stage", "guided", "--checkpoint", str(ckpt), "--out", str(out)]
    args += ["--epochs", "1", "--batch-size", "4", "--mask-labels", "--kernel-usage", "1"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "guided epoch 1/1" in err and "guide" in err
    guided = wsol.load_model(out)
    assert guided.config.kernel_usage == 1.0
    assert not torch.equal(guided.encoder.conv1[0].weight, start.encoder.conv1[0].weight)


def test_cam_and_predict_with_dense_crf(tmp_path: Path, checkpoint: Path) -> None:
    image = tmp_path / "tile.png"
    rgb = np.zeros((48, 48, 3), np.uint8)
    rgb[:, 24:] = (200, 60, 160)
    Image.fromarray(rgb).save(image)
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    base = ["cam", str(image), "--checkpoint", str(checkpoint), "--method", "gradcam"]
    assert main([*base, "--out", str(a)]) == 0
    assert main([*base, "--out", str(b), "--dense-crf"]) == 0
    plain, refined = np.load(a), np.load(b)
    assert plain.shape == refined.shape == (48, 48) and not np.allclose(plain, refined)
    out = tmp_path / "pred"
    code = main(
        [
            "predict",
            str(image),
            "--checkpoint",
            str(checkpoint),
            "--methods",
            "cam",
            "--out",
            str(out),
            "--dense-crf",
        ]
    )
    assert code == 0 and any(out.rglob("*.geojson"))


def test_create_model_multilabel_with_kernel_usage(tmp_path: Path) -> None:
    out = tmp_path / "ml.safetensors"
    args = ["create-model", str(out), "--backbone", "resnet10t", "--classes", "a,b,c"]
    assert main([*args, "--multilabel", "--kernel-usage", "2", "--output-stride", "16"]) == 0
    model = wsol.load_model(out)
    assert model.config.multilabel and model.config.kernel_usage == 2.0
    assert model.config.output_stride == 16


def test_create_model_pixel_head_on_a_finer_tap(tmp_path: Path) -> None:
    out = tmp_path / "tap.safetensors"
    args = ["create-model", str(out), "--backbone", "resnet10t", "--input-size", "64"]
    assert main([*args, "--pixel-tap", "-3"]) == 0
    model = wsol.load_model(out)
    assert model.config.pixel_tap == -3
    features = model.forward_features(torch.zeros(1, 3, 64, 64))
    assert features[-3].shape[-1] == 8  # stride 8, where the default tap is stride 32
    assert model.pixel_logits(features, (64, 64)).shape == (1, 2, 64, 64)
    assert main([*args, "--pixel-tap", "-9"]) == 2


@pytest.mark.parametrize("seeds", ["fcam", "nope"])
def test_bench_quality_refuses_a_map_that_cannot_seed_fcam(tmp_path: Path, seeds: str) -> None:
    assert main(["bench", "quality", str(tmp_path), "--fcam-seeds", seeds]) == 2


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [("--seeds", "nope", "not a method"), ("--keep", "-1", "must be >= 0"),
     ("--focus", "1.5", "between 0 and 1"), ("--repeats", "0", "must be >= 1"),
     ("--regions", "0", "must be >= 1"), ("--keep-fg", "-1", "must be >= 0"),
     ("--windows", "0", "must be >= 1"), ("--check-every", "-1", "must be >= 0"),
     ("--seconds", "-1", "must be >= 0")],
)  # fmt: skip
def test_bench_corrections_refuses_bad_settings(
    tmp_path: Path, capsys, option: str, value: str, message: str
) -> None:
    args = ["bench", "corrections", str(tmp_path), "--checkpoint", str(tmp_path / "m.st")]
    assert main([*args, option, value]) == 2
    assert message in capsys.readouterr().err


def test_bench_corrections_names_a_test_split_too_small_for_a_region(
    tmp_path: Path, checkpoint: Path, capsys
) -> None:
    make_dataset(tmp_path / "bench" / "test", n=6, size=64)
    args = ["bench", "corrections", str(tmp_path / "bench"), "--checkpoint", str(checkpoint)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "bench" / "test") in err and "needs 16 test images" in err


def test_train_heads_refits_only_the_named_head(tmp_path: Path, capsys) -> None:
    data = make_dataset(tmp_path / "ds", n=6, size=64)
    start = wsol.create_model(
        "resnet10t", 2, class_names=["normal", "lesion"], input_size=64, pixel_tap=-3
    )
    ckpt = start.save(tmp_path / "start.safetensors")
    out = tmp_path / "refit.safetensors"
    args = ["train", str(data), "--stage", "heads", "--checkpoint", str(ckpt), "--out", str(out)]
    args += ["--steps", "3", "--batch-size", "4", "--cam-method", "fcam"]
    assert main([*args, "--heads", "pixelcam"]) == 0
    refit = wsol.load_model(out)
    assert refit.config.pixel_tap == -3
    assert torch.equal(refit.decoder.segmentation.weight, start.decoder.segmentation.weight)
    assert not torch.equal(refit.pixel_head.net.weight, start.pixel_head.net.weight)
    bad = [a if a != str(out) else str(tmp_path / "bad.safetensors") for a in args]
    assert main([*bad, "--heads", "nope"]) == 2
    assert "heads must be fcam and/or pixelcam" in capsys.readouterr().err
    assert main([*bad, "--check-every", "-1"]) == 2
    assert "--check-every -1: must be >= 0" in capsys.readouterr().err
    assert main([*bad, "--seconds", "-2"]) == 2
    assert "--seconds -2.0: must be >= 0" in capsys.readouterr().err
