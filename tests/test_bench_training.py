"""The quality and correction benchmarks, end to end on a tiny generated benchmark."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from wsol.bench_corrections import dice, paint, stroke_fit, strokes
from wsol.benchmark_data import BenchmarkSpec, make_benchmark
from wsol.cli import main
from wsol.pseudo import BG, FG, IGNORE
from wsol.samples import sample_path


def test_strokes_go_to_the_deepest_point_of_the_largest_errors() -> None:
    truth = np.zeros((40, 40), bool)
    truth[5:25, 5:25] = True  # the object
    pred = np.zeros_like(truth)
    pred[5:25, 5:15] = True  # right half missed: a 20 x 10 false negative
    pred[30:34, 30:34] = True  # a small false positive
    marks = strokes(pred, truth, k=5, radius=2)
    assert len(marks) == 2
    (y, x, label), (y2, x2, label2) = marks
    assert label == FG and 5 <= y < 25 and 15 <= x < 25 and x in (19, 20)
    assert label2 == BG and 30 <= y2 < 34 and 30 <= x2 < 34
    assert strokes(truth, truth, k=5, radius=2) == []


def test_paint_adds_disks_of_the_true_label_and_keeps_earlier_ones() -> None:
    truth = np.zeros((40, 40), bool)
    truth[5:25, 5:25] = True
    pred = np.zeros_like(truth)
    pred[5:25, 5:15] = True  # a false negative on the right half of the object
    corrections = torch.full(truth.shape, IGNORE, dtype=torch.long)
    paint(corrections, pred, truth, k=1, radius=2)
    painted = (corrections != IGNORE).numpy()
    assert painted.sum() == 13  # a disk of radius 2
    assert (corrections[corrections != IGNORE] == FG).all()
    assert truth[painted].all()
    first = corrections.clone()
    pred = truth.copy()
    pred[30:34, 30:34] = True  # now only a false positive is left
    paint(corrections, pred, truth, k=1, radius=2)
    assert (corrections[first != IGNORE] == FG).all()  # the first round's disk stays
    assert ((corrections == BG).numpy() & ~truth).sum() == 13


def test_dice() -> None:
    a = np.zeros((4, 4), bool)
    a[:2] = True
    assert dice(a, a) == 100.0 and dice(a, ~a) == 0.0
    assert dice(np.zeros_like(a), np.zeros_like(a)) == 100.0


def test_stroke_fit_counts_the_painted_pixels_the_mask_agrees_with() -> None:
    corrections = np.full((4, 4), IGNORE)
    corrections[0, :4] = FG
    pred = np.zeros((4, 4), bool)
    pred[0, :3] = True  # three of the four foreground pixels honoured
    assert stroke_fit(pred, corrections) == {"fg": 0.75, "bg": None}
    corrections[3, :2] = BG
    pred[3, 0] = True  # one of the two background pixels overruled
    assert stroke_fit(pred, corrections) == {"fg": 0.75, "bg": 0.5}


@pytest.fixture(scope="module")
def tiny_benchmark(tmp_path_factory: pytest.TempPathFactory, synthetic_slide: Path) -> Path:
    out = tmp_path_factory.mktemp("bench")
    spec = BenchmarkSpec(size=32, train=16, val=4, test=16, seed=0)
    make_benchmark(out, [sample_path("he_tile")], [synthetic_slide], spec)
    return out


def test_bench_quality_and_corrections_from_the_command_line(
    tiny_benchmark: Path, tmp_path: Path, capsys
) -> None:
    report, ckpt = tmp_path / "q.json", tmp_path / "m.safetensors"
    assert (
        main(
            [
                "bench",
                "quality",
                str(tiny_benchmark),
                "--size",
                "32",
                "--epochs",
                "1",
                "1",
                "1",
                "--json",
                str(report),
                "--checkpoint",
                str(ckpt),
            ]
        )
        == 0
    )
    data = json.loads(report.read_text())
    assert set(data["methods"]) == {"cam", "gradcampp", "layercam", "fcam", "pixelcam"}
    assert all(0 <= m["pxap"] <= 100 for m in data["methods"].values())
    assert set(data["goals"]) == {"fcam", "pixelcam"}
    out = capsys.readouterr().out
    assert "| fcam |" in out and "PxAP" in out
    corrections = tmp_path / "c.json"
    assert (
        main(
            [
                "bench",
                "corrections",
                str(tiny_benchmark),
                "--checkpoint",
                str(ckpt),
                "--rounds",
                "2",
                "--regions",
                "1",
                "--steps",
                "3",
                "--repeats",
                "2",
                "--json",
                str(corrections),
            ]
        )
        == 0
    )
    data = json.loads(corrections.read_text())
    assert len(data["mean_dice"]) == 3
    assert [run["seed"] for run in data["runs"]] == [0, 1]
    assert len(data["runs"][1]["regions"][0]["round_seconds"]) == 2
    # The app's time limit per round is on by default; the steps each round took are kept.
    assert data["settings"]["seconds"] == 4.5 and data["settings"]["steps"] == 3
    assert all(1 <= n <= 3 for n in data["runs"][1]["regions"][0]["round_steps"])
    # The headline is the mean over the seeds, not one seed's figure.
    gains = data["gain_by_seed"]
    assert data["gain"] == pytest.approx(sum(gains) / 2)
    assert data["mean_dice"][0] == pytest.approx(data["runs"][0]["mean_dice"][0])
    assert data["settings"]["region"] == [128, 128]
    honoured = data["runs"][0]["regions"][0]["strokes_honoured"]
    assert len(honoured) == 2 and set(honoured[0]) == {"fg", "bg"}
    assert all(v is None or 0.0 <= v <= 1.0 for r in honoured for v in r.values())
    # The mask the app shows keeps the strokes: it can only agree with the truth more
    # than the head's mask alone, on every region after every round.
    assert data["settings"]["honour"] is True
    for run in data["runs"]:
        for region in run["regions"]:
            assert region["dice"][0] == region["model_dice"][0]
            assert all(d >= m for d, m in zip(region["dice"], region["model_dice"], strict=True))
    assert data["gain"] == pytest.approx(data["mean_dice"][-1] - data["mean_dice"][0])
    assert len(data["model_mean_dice"]) == 3
