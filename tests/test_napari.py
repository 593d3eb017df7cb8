"""The napari side: sample data contributions and the WSOL widget, in a real viewer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import wsol


@pytest.fixture
def viewer(display, make_napari_viewer):
    return make_napari_viewer(show=True)


def test_sample_data_opens_with_physical_scale(viewer) -> None:
    (layer,) = viewer.open_sample("napari-wsol", "he_tile")
    assert layer.rgb and layer.data.shape == (512, 512, 3)
    assert tuple(layer.scale) == pytest.approx((0.499, 0.499))
    assert [str(u) for u in layer.units] == ["micrometer", "micrometer"]
    (cat,) = viewer.open_sample("napari-wsol", "chelsea")
    assert cat.data.shape == (300, 451, 3) and tuple(cat.scale) == (1.0, 1.0)


def _dock(viewer):
    _, widget = viewer.window.add_plugin_dock_widget("napari-wsol", "WSOL")
    return widget


def test_widget_computes_maps_as_aligned_layers(viewer, qtbot, tmp_path: Path) -> None:
    ckpt = wsol.create_model("resnet18", 2, class_names=["normal", "lesion"], input_size=96).save(
        tmp_path / "m.safetensors"
    )
    (image,) = viewer.open_sample("napari-wsol", "he_tile")
    widget = _dock(viewer)
    assert widget.image.value is image
    widget.checkpoint.value = str(ckpt)
    widget.methods.value = ["gradcam", "pixelcam"]
    widget.run_button.native.click()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)
    for name in ("gradcam", "pixelcam"):
        layer = viewer.layers[name]
        assert layer.data.shape == (512, 512)
        assert 0 <= layer.data.min() and layer.data.max() <= 1
        assert tuple(layer.scale) == pytest.approx(tuple(image.scale))
    assert viewer.layers["gradcam"].data.max() == pytest.approx(1.0, abs=0.01)
    # maps are overlays, not images to explain
    assert [layer.name for layer in widget.image.choices if layer is not None] == ["he_tile"]
    # the model's classes are offered as targets and the scores are shown
    assert list(widget.target.choices)[1:] == ["normal", "lesion"]
    assert "normal:" in widget.status.value and "lesion:" in widget.status.value
    assert widget.run_button.enabled and not widget.cancel_button.enabled


def test_widget_cancel_stops_before_the_remaining_methods(viewer, qtbot) -> None:
    viewer.open_sample("napari-wsol", "chelsea")
    widget = _dock(viewer)
    widget.methods.value = ["cam", "gradcam", "scorecam"]
    widget.run_button.native.click()
    widget.cancel_button.native.click()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)
    assert "scorecam" not in viewer.layers
    assert widget.status.value == "Cancelled."
    assert widget.run_button.enabled


def test_widget_reports_a_bad_checkpoint(viewer, qtbot, tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    viewer.open_sample("napari-wsol", "chelsea")
    widget = _dock(viewer)
    widget.checkpoint.value = str(bad)
    widget.run_button.native.click()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    assert widget.status.value.startswith("Error:") and "bad.safetensors" in widget.status.value
    assert [layer.name for layer in viewer.layers] == ["chelsea"]


def test_widget_needs_an_image(viewer) -> None:
    widget = _dock(viewer)
    widget.run()
    assert "Choose an image layer" in widget.status.value
    np.testing.assert_equal(len(viewer.layers), 0)


def test_slide_pyramid_tissue_and_heatmap_layers_align(
    viewer, tmp_path: Path, synthetic_slide: Path
) -> None:
    """The engine's outputs drop into napari as they are: lazy pyramid, Labels, heatmap."""
    from wsol.infer import infer_slide
    from wsol.slide import open_slide
    from wsol.tissue import detect_tissue

    model = wsol.create_model("resnet18", 2, input_size=64)
    with open_slide(synthetic_slide) as slide:
        image = viewer.add_image(slide.pyramid(), multiscale=True, rgb=True, name="slide")
        tissue = detect_tissue(slide)
        labels = viewer.add_labels(tissue.labels, scale=(tissue.downsample,) * 2, name="tissue")
        store = infer_slide(model, slide, tmp_path / "s.zarr", ["cam"], level=1).store
        heat = viewer.add_image(
            [a for a in store.levels("cam")],
            multiscale=True,
            scale=(store.scale(0),) * 2,
            colormap="inferno",
            blending="additive",
            contrast_limits=(0, 1),
            name="cam",
        )
        viewer.reset_view()
        shot = viewer.screenshot(canvas_only=True)
    assert image.data[0].shape == (1500, 2100, 3)
    # All three cover the same level-0 extent.
    for layer in (labels, heat):
        extent = layer.extent.world[1]
        assert extent == pytest.approx((1500, 2100), rel=0.02)
    assert shot.std() > 5  # something was drawn
