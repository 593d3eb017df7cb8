"""The engine behind the app's editing: regions, pseudo-labels, flips, sessions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from wsol.errors import InputError
from wsol.region import (
    BACKGROUND,
    FOREGROUND,
    NONE,
    PaintedLabels,
    Region,
    apply_painted,
    check_editable,
    clip_region,
    effective_labels,
    flip_component,
    honour_corrections,
    pseudo_labels,
    resample_labels,
    tiles_in_box,
)
from wsol.session import FINE_TUNE, Session, SessionWriter
from wsol.slide import ImageSlide


def _slide(h: int = 300, w: int = 500, mpp: float | None = 0.5) -> ImageSlide:
    return ImageSlide.from_array(np.zeros((h, w, 3), np.uint8), mpp=mpp)


def test_clip_region_clips_and_snaps_to_the_encoder_grid() -> None:
    slide = _slide()
    region = clip_region(slide, -10, 450, 100, 100, downsample=2.0, multiple=32)
    assert (region.y, region.x) == (0, 436) and region.x + region.w <= 500
    assert region.shape == (64, 32)  # 110 x 50 level-0 px -> whole 32-px cells at 2x
    # A slide shorter than whole cells: the region spans it, to the edge.
    whole = clip_region(slide, 0, 0, 300, 500, downsample=2.0, multiple=32)
    assert whole.box == (0, 0, 300, 500) and whole.shape == (150, 250)
    with pytest.raises(InputError, match="outside the slide"):
        clip_region(slide, 400, 0, 10, 10)


def test_a_region_off_the_grid_is_mirrored_onto_it_and_its_labels_left_unpainted() -> None:
    from wsol.model import create_model
    from wsol.region import pad_to_grid

    model = create_model("resnet18", num_classes=2)
    rgb = np.arange(150 * 250 * 3, dtype=np.uint32).reshape(150, 250, 3).astype(np.uint8)
    padded = pad_to_grid(model, rgb)
    assert padded.shape == (160, 256, 3)
    np.testing.assert_array_equal(padded[:150, :250], rgb)
    np.testing.assert_array_equal(padded[150:, :250], rgb[148:138:-1])  # mirrored rows
    labels = np.full((150, 250), 2, np.uint8)
    assert (pad_to_grid(model, labels, fill=0)[150:] == 0).all()
    assert pad_to_grid(model, padded) is padded  # already on the grid
    assert pad_to_grid(model, rgb[:20, :20]).shape == (32, 32, 3)  # shorter than its pad


def test_check_editable_names_the_size() -> None:
    with pytest.raises(InputError, match="2000 x 100 px"):
        check_editable(Region(0, 0, 100, 2000))


def test_pseudo_labels_use_napari_values() -> None:
    heat = torch.zeros(40, 40)
    heat[10:20, 10:20] = 1.0
    labels = pseudo_labels(heat, bg_fraction=0.5)
    assert labels.dtype == np.uint8 and set(np.unique(labels)) <= {NONE, BACKGROUND, FOREGROUND}
    assert (labels[10:20, 10:20] == FOREGROUND).all() and labels[30, 30] == BACKGROUND


def test_flip_component_swaps_one_connected_region() -> None:
    labels = np.full((6, 8), BACKGROUND, np.uint8)
    labels[1:3, 1:3] = FOREGROUND
    labels[4:6, 5:8] = FOREGROUND
    labels[0, 7] = NONE
    indices, value = flip_component(labels, 1, 1)
    assert value == BACKGROUND and len(indices[0]) == 4  # the other fg blob is untouched
    assert flip_component(labels, 0, 7) is None and flip_component(labels, 9, 9) is None
    corrections = np.zeros_like(labels)
    corrections[indices] = value
    merged = effective_labels(labels, corrections)
    assert (merged[1:3, 1:3] == BACKGROUND).all() and (merged[4:6, 5:8] == FOREGROUND).all()


def test_labels_carried_to_another_scale_stay_on_the_same_level0_pixels() -> None:
    """Corrections painted at 1 level-0 px per pixel, carried to 4 (a pixel size set
    later) and back: each stroke stays where it was painted, a stroke thinner than the
    coarse pixel is kept, and what lies outside the source region is unpainted."""
    fine = Region(100, 200, 64, 96, 1.0)
    labels = np.zeros(fine.shape, np.uint8)
    labels[10:20, 30:50] = FOREGROUND  # level-0 rows 110-120, cols 230-250
    labels[40, :] = BACKGROUND  # a one-pixel line: thinner than a coarse pixel
    coarse = Region(96, 192, 80, 112, 4.0)  # 20 x 28, a little larger than ``fine``
    moved = resample_labels(labels, fine, coarse)
    assert moved.shape == coarse.shape
    # coarse pixel (r, c) covers level-0 rows 96 + 4r ... : the square is rows 3.5-6
    assert (moved[4:6, 10:14] == FOREGROUND).all()
    line = (100 + 40 - 96) // 4  # the coarse row holding level-0 row 140
    assert (moved[line, 2:26] == BACKGROUND).all()  # one level-0 px thick, still there
    assert np.delete(moved[:, 2:9], line, axis=0).max() == NONE  # nothing else painted
    assert moved[0].max() == NONE and moved[-1].max() == NONE  # outside ``fine``
    back = resample_labels(moved, coarse, fine)
    assert (back[12:18, 32:48] == FOREGROUND).all()  # the square, within a coarse pixel
    assert back[0, 0] == NONE
    same = resample_labels(labels, fine, fine)
    np.testing.assert_array_equal(same, labels)
    with pytest.raises(InputError, match="do not fit"):
        resample_labels(labels[1:], fine, coarse)


def test_a_mask_keeps_the_corrections_painted_on_it() -> None:
    mask = np.array([[1, 1, 0], [0, 1, 0]], np.uint8)
    painted = np.array([[BACKGROUND, NONE, FOREGROUND], [NONE, NONE, NONE]], np.uint8)
    out = honour_corrections(mask, painted)
    np.testing.assert_array_equal(out, [[0, 1, 1], [0, 1, 0]])
    assert out.dtype == np.uint8 and mask[0, 0] == 1  # a new array
    with pytest.raises(ValueError, match="do not match"):
        honour_corrections(mask, painted[:1])


def test_painted_labels_land_on_the_level0_pixels_of_every_map_level() -> None:
    # Corrections on a region at 2 level-0 px per pixel, starting at level-0 (40, 60).
    region = Region(40, 60, 64, 96, 2.0)
    labels = np.zeros(region.shape, np.uint8)
    labels[4:8, 10:14] = FOREGROUND  # level-0 rows 48..55, cols 80..87
    labels[20, 30] = BACKGROUND  # level-0 rows 80..81, cols 120..121: thinner than level 2
    painted = PaintedLabels(labels, region)
    assert painted.any
    for scale in (1.0, 2.0, 4.0, 8.0):
        shape = (int(200 / scale), int(240 / scale))
        mask = np.ones(shape, bool)
        mask[:, : int(100 / scale)] = False
        rows, cols = np.arange(shape[0]), np.arange(shape[1])
        out = apply_painted(mask, [painted], scale, rows, cols)
        # Pixel (i, j) of this level covers level-0 [i * scale, (i + 1) * scale).
        fg = out & ~mask
        ys, xs = np.nonzero(fg)
        assert ys.min() * scale <= 48 < (ys.max() + 1) * scale, scale
        assert xs.min() * scale <= 80 < (xs.max() + 1) * scale, scale
        bg = ~out & mask
        ys, xs = np.nonzero(bg)  # the stroke's 2 x 2 level-0 px, even on coarser levels
        assert len(ys) == max(1, int(2 / scale)) ** 2, scale
        assert (ys * scale < 82).all() and ((ys + 1) * scale > 80).all()
        assert (xs * scale < 122).all() and ((xs + 1) * scale > 120).all()
        np.testing.assert_array_equal(out[~(fg | bg)], mask[~(fg | bg)])  # nothing else
        # A window of the level gives the same pixels as the whole level.
        window = apply_painted(mask[5:, 3:], [painted], scale, rows[5:], cols[3:])
        np.testing.assert_array_equal(window, out[5:, 3:])
        strided = apply_painted(mask[1::2, ::3], [painted], scale, rows[1::2], cols[::3])
        np.testing.assert_array_equal(strided, out[1::2, ::3])
        outside = apply_painted(mask[:2, :2], [painted], scale, rows[:2], cols[:2])
        np.testing.assert_array_equal(outside, mask[:2, :2])
    # Later regions win where they overlap.
    later = PaintedLabels(np.full(region.shape, BACKGROUND, np.uint8), region)
    out = apply_painted(np.ones((200, 240), bool), [painted, later], 1.0, range(200), range(240))
    assert not out[40:104, 60:156].any() and out[:40].all()
    assert not PaintedLabels(np.zeros(region.shape, np.uint8), region).any


def test_painted_labels_leave_a_box_another_region_owns() -> None:
    region = Region(0, 0, 64, 64, 2.0)  # 32 x 32 labels
    labels = np.full(region.shape, FOREGROUND, np.uint8)
    painted = PaintedLabels(labels, region)
    left = painted.outside(Region(0, 0, 64, 32, 1.0))  # the left half, level-0 x < 32
    assert (left.labels[:, :16] == NONE).all() and (left.labels[:, 16:] == FOREGROUND).all()
    assert (painted.labels == FOREGROUND).all()  # a new object; this one is unchanged
    assert painted.outside(Region(100, 100, 10, 10)) is painted  # no overlap
    assert not painted.outside(Region(-8, -8, 80, 80)).any


def test_a_region_is_found_again_from_its_key() -> None:
    for region in (Region(0, 0, 64, 96, 2.0), Region(-32, 96, 512, 1024, 1.5), Region(1, 2, 3, 4)):
        assert Region.from_key(region.key()) == region
    with pytest.raises(InputError, match="does not name a region"):
        Region.from_key("y0_x0_h1")


def test_the_session_lists_every_region_s_corrections_oldest_first(tmp_path: Path) -> None:
    import os

    session = Session(tmp_path / "s")
    a, b = Region(0, 0, 64, 64, 2.0), Region(64, 0, 64, 64, 2.0)
    labels = np.zeros(a.shape, np.uint8)
    session.save_labels(b, "corrections", labels)
    session.save_labels(a, "corrections", labels)
    session.save_labels(a, "pseudo", labels)
    (session.folder / "labels" / "notes.corrections.png").write_bytes(b"")  # not a region
    os.utime(session.labels_path(b, "corrections"), ns=(2_000_000_000, 2_000_000_000))
    os.utime(session.labels_path(a, "corrections"), ns=(1_000_000_000, 1_000_000_000))
    assert [r for _, r in session.corrections_files()] == [a, b]
    assert Session(tmp_path / "empty").corrections_files() == []


def test_the_session_lays_the_edited_region_last_and_names_a_bad_file(tmp_path: Path) -> None:
    import os

    session = Session(tmp_path / "s")
    edit, other = Region(0, 0, 64, 64, 1.0), Region(32, 0, 64, 64, 1.0)  # overlap: y 32..64
    session.save_labels(edit, "corrections", np.full(edit.shape, BACKGROUND, np.uint8))
    session.save_labels(other, "corrections", np.full(other.shape, FOREGROUND, np.uint8))
    empty = Region(500, 500, 8, 8, 1.0)
    session.save_labels(empty, "corrections", np.zeros(empty.shape, np.uint8))
    for stamp, region in enumerate((other, edit, empty)):  # the edited file is not the newest
        path = session.labels_path(region, "corrections")
        os.utime(path, ns=((stamp + 1) * 10**9,) * 2)
    mask = np.zeros((96, 64), bool)
    rows, cols = np.arange(96), np.arange(64)

    def laid(painted):
        return apply_painted(mask, painted, 1.0, rows, cols)

    # Files in the order written: the edited one then wins over the other one's overlap.
    plain = session.painted()
    assert [p.region for p in plain] == [other, edit]  # the empty file lays nothing
    assert not laid(plain)[:64].any() and laid(plain)[64:].all()
    # The edited region comes last and owns its box: the other one's strokes inside it go.
    owned = session.painted(edit)
    assert [p.region for p in owned] == [other, edit]
    assert not laid(owned)[:64].any() and laid(owned)[64:].all()
    session.state.edit_region = other.to_dict()
    owned = session.painted(session.edit_region())
    assert [p.region for p in owned] == [edit, other]
    assert not laid(owned)[:32].any() and laid(owned)[32:].all()
    session.labels_path(edit, "corrections").write_bytes(b"not a png")
    with pytest.raises(InputError, match=r"y0_x0_h64_w64_d1\.corrections\.png"):
        session.painted()
    errors = []
    assert [p.region for p in session.painted(on_error=errors.append)] == [other]
    assert len(errors) == 1


def test_tiles_in_box_finds_the_overlapping_tiles(synthetic_slide: Path) -> None:
    from wsol.infer import make_grid
    from wsol.slide import open_slide

    with open_slide(synthetic_slide) as slide:
        grid = make_grid(slide, 64, overlap=0.25, level=1)
        hits = tiles_in_box(grid, 0, 0, 10, 10)
    boxes = grid.level0_boxes()[hits]
    assert len(hits) >= 1 and (boxes[:, 0] < 10).all() and (boxes[:, 1] < 10).all()


def test_session_round_trip_and_labels(tmp_path: Path) -> None:
    session = Session(tmp_path / "s")
    session.state.thresholds = {"fcam": 0.3}
    session.save()
    region = Region(0, 0, 64, 96, 2.0)
    labels = np.zeros(region.shape, np.uint8)
    labels[3, 4] = 2
    session.save_labels(region, "corrections", labels)
    copy = session.copy_to(tmp_path / "copy")
    loaded = Session.load(copy.folder)
    assert loaded.state.thresholds == {"fcam": 0.3}
    np.testing.assert_array_equal(loaded.load_labels(region, "corrections"), labels)
    with pytest.raises(InputError, match="do not fit"):
        session.save_labels(region, "pseudo", np.zeros((5, 5), np.uint8))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "session.json").write_text("{not json")
    with pytest.raises(InputError, match="unreadable session file"):
        Session.load(tmp_path / "bad")


def test_the_session_writer_writes_every_state_in_order_off_the_caller_s_thread(
    tmp_path: Path,
) -> None:
    errors: list[str] = []
    writer = SessionWriter(errors.append)
    session = Session(tmp_path / "s")
    for t in (0.1, 0.2, 0.3):
        session.state.thresholds = {"fcam": t}
        writer.save(session)  # the state is captured now, written later
    session.state.thresholds = {"fcam": 0.9}  # not saved
    writer.flush()
    assert Session.load(session.folder).state.thresholds == {"fcam": 0.3}
    assert not errors and not list(session.folder.glob("*.tmp"))

    blocked = Session(tmp_path / "a file")
    (tmp_path / "a file").write_text("not a folder")
    writer.save(blocked)
    writer.flush()
    assert len(errors) == 1 and "a file" in errors[0], errors


def test_an_older_session_file_gets_the_new_fine_tune_defaults(tmp_path: Path) -> None:
    folder = tmp_path / "old"
    folder.mkdir()
    # Written before keep_weight and crop existed; its own choices stay.
    state = {"fine_tune": {"heads": ["pixelcam"], "steps": 15, "lr": 3e-4, "guide": False}}
    (folder / "session.json").write_text(json.dumps({"format": 1, "state": state}))
    tune = Session.load(folder).state.fine_tune
    assert tune["heads"] == ["pixelcam"] and tune["steps"] == 15 and tune["lr"] == 3e-4
    assert tune["keep_weight"] == FINE_TUNE["keep_weight"] and tune["crop"] == FINE_TUNE["crop"]
    assert tune["keep_fg"] == FINE_TUNE["keep_fg"] and tune["seconds"] == FINE_TUNE["seconds"]


@pytest.mark.parametrize(
    ("state", "problem"),
    [
        ([], "malformed session state"),
        ({"current": 5}, "current 5 is not a version"),
        ({"methods": ["cam", "bogus"]}, "methods ['cam', 'bogus']"),
        ({"thresholds": {"cam": "high"}}, "must be numbers in [0, 1]"),
        ({"thresholds": {"cam": 7}}, "must be numbers in [0, 1]"),
        ({"edit_region": {"y": 0}}, "edit_region"),
    ],
)
def test_a_damaged_session_file_is_named_when_opened(tmp_path: Path, state, problem) -> None:
    (tmp_path / "session.json").write_text(json.dumps({"format": 1, "state": state}))
    with pytest.raises(InputError, match=r"session\.json: malformed session state") as info:
        Session.load(tmp_path)
    assert problem in str(info.value)
