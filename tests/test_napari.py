"""The napari side: sample data contributions and the WSOL widget, in a real viewer."""

from __future__ import annotations

from pathlib import Path

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
