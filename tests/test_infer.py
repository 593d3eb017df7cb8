from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import wsol
from wsol.cams import compute_many
from wsol.errors import InputError
from wsol.infer import MapStore, infer_slide, make_grid
from wsol.slide import ImageSlide, open_slide
from wsol.tissue import TissueMask, detect_tissue


@pytest.fixture(scope="module")
def small_model() -> wsol.WSOLModel:
    torch.manual_seed(0)
    return wsol.create_model("resnet18", 2, input_size=64, class_names=["normal", "tumor"]).eval()


@pytest.fixture
def slide(synthetic_slide: Path):
    with open_slide(synthetic_slide) as s:
        yield s


def _map(store: MapStore, method: str, level: int = 0) -> np.ndarray:
    return np.asarray(store.levels(method)[level][...], np.float32)


def _seam_ratio(store: MapStore, method: str) -> float:
    """Mean horizontal step across tile edges over the mean step elsewhere."""
    heat = _map(store, method)
    grid = store.grid
    step = np.abs(np.diff(heat, axis=1))  # step[:, x - 1] = |heat[:, x] - heat[:, x - 1]|
    edges = {j * grid.map_stride for j in range(1, grid.cols)}
    if grid.map_stride < grid.map_tile:
        edges |= {j * grid.map_stride + grid.map_tile for j in range(grid.cols)}
    at_edge = np.zeros(step.shape[1], bool)
    at_edge[[e - 1 for e in edges if 0 < e < heat.shape[1]]] = True
    return float(step[:, at_edge].mean() / step[:, ~at_edge].mean())


def test_overlapping_tiles_blend_without_seams(small_model, slide, tmp_path: Path) -> None:
    options = dict(level=1, tissue=False, map_downsample=2)
    abutting = infer_slide(small_model, slide, tmp_path / "a.zarr", ["cam"], overlap=0, **options)
    blended = infer_slide(small_model, slide, tmp_path / "b.zarr", ["cam"], overlap=0.25, **options)
    # Per-tile CAMs meet at visible steps when tiles abut: the measure sees seams ...
    assert _seam_ratio(abutting.store, "cam") > 5
    # ... and with overlap the cross-fade leaves tile edges no steeper than anywhere else.
    assert _seam_ratio(blended.store, "cam") < 1.5


def test_stored_maps_and_scores_are_the_tiles_own(small_model, slide, tmp_path: Path) -> None:
    result = infer_slide(
        small_model,
        slide,
        tmp_path / "m.zarr",
        ["cam", "fcam"],
        level=1,
        tissue=False,
        precision="float32",  # the reference below runs in float32 too
    )
    store, grid = result.store, result.store.grid
    assert result.tiles_run == result.tiles_total == len(grid) and not result.cancelled
    i, j = 3, 5
    y, x = grid.read_origin(i, j)
    pixels = slide.read_region(grid.read_level, y, x, grid.tile, grid.tile)
    image = small_model.normalize(torch.from_numpy(pixels).permute(2, 0, 1)[None])
    ref = compute_many(small_model, image, ["cam", "fcam"], 1)
    prob = torch.softmax(ref.logits, 1)[0]
    np.testing.assert_allclose(store.probabilities()[i, j], prob.numpy(), atol=1e-5)
    d, t, s = grid.map_downsample, grid.map_tile, grid.map_stride
    own = slice(t - s, s)  # the part of the tile no neighbour overlaps
    y0, x0 = i * s, j * s
    for method, scale in (("cam", float(prob[1])), ("fcam", 1.0)):
        expected = F.avg_pool2d(ref.maps[method][None], d)[0, 0].numpy() * scale
        stored = _map(store, method)[y0 : y0 + t, x0 : x0 + t]
        np.testing.assert_allclose(stored[own, own], expected[own, own], atol=2e-3)


def test_pyramid_levels_are_box_averages(small_model, slide, tmp_path: Path) -> None:
    store = infer_slide(small_model, slide, tmp_path / "p.zarr", ["gradcam"], level=0).store
    levels = store.levels("gradcam")
    assert len(levels) >= 2 and levels[0].shape == store.grid.map_shape
    fine, coarse = _map(store, "gradcam", 0), _map(store, "gradcam", 1)
    h, w = fine.shape[0] // 2 * 2, fine.shape[1] // 2 * 2
    pooled = fine[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(coarse[: h // 2, : w // 2], pooled, atol=2e-3)


def test_a_given_tissue_mask_decides_the_tiles(small_model, slide, tmp_path: Path) -> None:
    options = dict(level=0, min_tissue=0.5)
    first = infer_slide(small_model, slide, tmp_path / "a.zarr", ["cam"], **options)
    detected = detect_tissue(slide)
    assert first.tissue_mask is not None
    np.testing.assert_array_equal(first.tissue_mask.mask, detected.mask)
    # The app passes the mask of its first run to the next: the same tiles are run.
    again = infer_slide(
        small_model, slide, tmp_path / "b.zarr", ["cam"], tissue_mask=first.tissue_mask, **options
    )
    assert again.tiles_total == first.tiles_total and again.tissue_mask is first.tissue_mask
    # A mask that is used, not just returned: the detected tissue's upper half alone.
    rows = np.flatnonzero(detected.mask.any(axis=1))
    upper = detected.mask.copy()
    upper[int(np.median(rows)) :] = False
    mask = TissueMask(upper, detected.downsample, detected.threshold)
    part = infer_slide(
        small_model, slide, tmp_path / "c.zarr", ["cam"], tissue_mask=mask, **options
    )
    expected = mask.box_fractions(part.store.grid.level0_boxes()) >= 0.5
    assert part.tiles_total == int(expected.sum()) < first.tiles_total
    np.testing.assert_array_equal(part.store.tile_tissue().reshape(-1) >= 0.5, expected)


def test_glass_tiles_are_skipped(small_model, slide, tmp_path: Path) -> None:
    result = infer_slide(small_model, slide, tmp_path / "t.zarr", ["cam"], level=0, min_tissue=0.5)
    store = result.store
    tissue = store.tile_tissue()
    probs = store.probabilities()
    ran = ~np.isnan(probs[..., 0])
    assert result.tiles_total == int((tissue >= 0.5).sum()) == int(ran.sum())
    assert 0 < ran.mean() < 0.6
    assert not ran[tissue < 0.5].any()
    mask, downsample = store.tissue()
    assert mask.dtype == np.uint8 and downsample > 1
    # Chunks of the map far from any tile that ran stay empty.
    heat = _map(store, "cam")
    t = store.grid.map_tile
    covered = np.zeros_like(heat, bool)
    for i, j in zip(*np.nonzero(ran), strict=True):
        y, x = i * store.grid.map_stride, j * store.grid.map_stride
        covered[y : y + t, x : x + t] = True
    assert (heat[~covered] == 0).all() and heat[covered].max() > 0


def test_cancel_then_resume_matches_an_uninterrupted_run(
    small_model, slide, tmp_path: Path
) -> None:
    options = dict(level=0, batch_size=8)
    full = infer_slide(small_model, slide, tmp_path / "full.zarr", ["cam", "gradcam"], **options)
    seen = []
    part = infer_slide(
        small_model,
        slide,
        tmp_path / "r.zarr",
        ["cam", "gradcam"],
        should_stop=lambda: seen[-1] >= 0.7 * full.tiles_total,
        progress=lambda done, total: seen.append(done),
        **options,
    )
    assert part.cancelled and not part.store.complete
    assert part.tiles_run == seen[-1] < part.tiles_total
    assert part.store.chunk_done.any() and not part.store.chunk_done.all()
    # What ran is on disk even in chunks not finished yet (shown, not marked final).
    c = part.store.chunk
    unfinished = np.kron(1 - part.store.chunk_done, np.ones((c, c), np.uint8)).astype(bool)
    heat = _map(part.store, "cam")
    assert heat[unfinished[: heat.shape[0], : heat.shape[1]]].max() > 0
    progress = []
    rest = infer_slide(
        small_model,
        slide,
        tmp_path / "r.zarr",
        ["cam", "gradcam"],
        progress=lambda done, total: progress.append((done, total)),
        **options,
    )
    assert rest.store.complete and not rest.cancelled
    assert 0 < rest.tiles_run < full.tiles_run  # finished chunks were not recomputed
    assert progress[-1] == (full.tiles_total, full.tiles_total)
    # The first report comes before any tile: what the resumed store already had.
    assert progress[0] == (full.tiles_total - rest.tiles_run, full.tiles_total)
    for method in ("cam", "gradcam"):
        np.testing.assert_allclose(_map(rest.store, method), _map(full.store, method), atol=1e-3)
    np.testing.assert_array_equal(rest.store.probabilities(), full.store.probabilities())
    again = infer_slide(small_model, slide, tmp_path / "r.zarr", ["cam", "gradcam"], **options)
    assert again.tiles_run == 0  # complete: nothing to do


def test_changed_settings_start_over(small_model, slide, tmp_path: Path) -> None:
    out = tmp_path / "s.zarr"
    infer_slide(small_model, slide, out, ["cam"], level=1)
    second = infer_slide(small_model, slide, out, ["cam", "gradcam"], level=1)
    assert second.tiles_run == second.tiles_total and second.store.methods == ["cam", "gradcam"]
    third = infer_slide(small_model, slide, out, ["cam", "gradcam"], level=1, resume=False)
    assert third.tiles_run == third.tiles_total


def test_bfloat16_maps_match_float32_and_do_not_resume_them(
    small_model, slide, tmp_path: Path
) -> None:
    options = dict(level=1, tissue=False)
    full = infer_slide(
        small_model, slide, tmp_path / "f.zarr", ["cam", "fcam"], precision="float32", **options
    )
    out = tmp_path / "b.zarr"
    half = infer_slide(small_model, slide, out, ["cam", "fcam"], precision="bfloat16", **options)
    assert half.store.settings["precision"] == "bfloat16"
    for method in ("cam", "fcam"):
        diff = np.abs(_map(half.store, method) - _map(full.store, method))
        assert diff.mean() < 2e-3 and diff.max() < 0.05
        assert diff.max() > 0  # it did run in bfloat16
    np.testing.assert_allclose(half.store.probabilities(), full.store.probabilities(), atol=0.01)
    # A store is finished only in the precision it was started in.
    again = infer_slide(small_model, slide, out, ["cam", "fcam"], precision="float32", **options)
    assert again.tiles_run == again.tiles_total
    assert again.store.settings["precision"] == "float32"


def test_region_of_interest_is_written_first(small_model, slide, tmp_path: Path) -> None:
    roi = (800.0, 1200.0, 300.0, 400.0)  # level-0 (y, x, h, w)
    seen = []
    first = infer_slide(
        small_model,
        slide,
        tmp_path / "roi.zarr",
        ["cam"],
        level=0,
        tissue=False,
        roi=roi,
        batch_size=8,
        progress=lambda done, total: seen.append(done),
        should_stop=lambda: seen[-1] >= 120,
    )
    assert first.cancelled
    store = first.store
    heat = _map(store, "cam")
    s = store.scale(0)
    y, x, h, w = (int(v / s) for v in roi)
    assert (heat[y : y + h, x : x + w] > 0).mean() > 0.95  # the viewport is on disk already
    assert (heat[-50:, :50] == 0).all()  # the far corner (last in line) is not


def test_mpp_selects_and_resizes_the_read_level(small_model, slide) -> None:
    grid = make_grid(slide, 64, mpp=0.8)  # slide is 0.25 µm/px: read level 1 (0.5) and shrink
    assert grid.read_level == 1 and grid.downsample == pytest.approx(3.2)
    assert grid.read_size == round(64 * 3.2 / 2)
    with pytest.raises(InputError, match="does not record its mpp"):
        make_grid(ImageSlide.from_array(np.zeros((100, 100, 3), np.uint8)), 64, mpp=0.5)
    with pytest.raises(InputError, match="multiple of map_downsample"):
        make_grid(slide, 66, map_downsample=4)


def test_unknown_method_is_rejected(small_model, slide, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown method"):
        infer_slide(small_model, slide, tmp_path / "x.zarr", ["nope"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_with_amp_matches_cpu(small_model, slide, tmp_path: Path) -> None:
    cpu = infer_slide(small_model, slide, tmp_path / "c.zarr", ["cam"], level=2)
    gpu_model = wsol.create_model("resnet18", 2, input_size=64).cuda()
    gpu_model.load_state_dict(small_model.state_dict())
    gpu = infer_slide(gpu_model, slide, tmp_path / "g.zarr", ["cam"], level=2)
    np.testing.assert_allclose(_map(gpu.store, "cam"), _map(cpu.store, "cam"), atol=0.02)


def test_auto_precision_scores_scorecam_in_int8_on_the_cpu(
    small_model, slide, tmp_path: Path
) -> None:
    options = dict(level=1, tissue=False, tiles=[0])
    auto = infer_slide(small_model, slide, tmp_path / "a.zarr", ["scorecam"], **options)
    assert auto.store.settings["cam_options"] == {"scorecam_int8": True}
    full = infer_slide(
        small_model, slide, tmp_path / "f.zarr", ["scorecam"], precision="float32", **options
    )
    assert full.store.settings["cam_options"] == {}
    kept = infer_slide(
        small_model, slide, tmp_path / "k.zarr", ["scorecam"], scorecam_int8=False, **options
    )
    assert kept.store.settings["cam_options"] == {"scorecam_int8": False}


def test_an_empty_tile_list_runs_nothing(small_model, slide, tmp_path: Path) -> None:
    result = infer_slide(small_model, slide, tmp_path / "e.zarr", ["cam"], level=1, tiles=[])
    assert result.tiles_run == 0 and result.store.complete
