from __future__ import annotations

import pytest
import torch

import wsol
from wsol.config import ModelConfig


@pytest.mark.parametrize(
    ("backbone", "size", "cam_grid"),
    [
        ("resnet18", 64, 2),
        ("resnet50", 64, 2),
        ("vgg16_bn", 64, 4),  # CAM on the last convolution (stride 16), not the final pool
        ("deit_small_patch16_224", 64, 4),  # tokens reshaped to a 4x4 map
    ],
)
def test_backbones_share_one_encoder_across_three_heads(
    backbone: str, size: int, cam_grid: int
) -> None:
    model = wsol.create_model(backbone, 3)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        out = model.forward_heads(x)
    assert out.logits.shape == (2, 3)
    assert out.fcam.shape == (2, 2, size, size)  # (bg, fg) at input resolution
    assert out.pixel.shape == (2, 4, size, size)  # bg + one channel per class (multi-class)
    assert out.features[model.cam_tap].shape[-1] == cam_grid
    # model(x) is the plain classifier, so classifier tooling works unchanged.
    with torch.no_grad():
        torch.testing.assert_close(model(x), out.logits)


def test_binary_task_pixel_head_is_background_foreground(resnet18: wsol.WSOLModel) -> None:
    with torch.no_grad():
        out = resnet18.forward_heads(torch.randn(1, 3, 64, 64))
    assert out.pixel.shape[1] == 2


def test_vit_accepts_tiles_of_other_sizes() -> None:
    model = wsol.create_model("deit_small_patch16_224", 2)
    with torch.no_grad():
        out = model.forward_heads(torch.randn(1, 3, 96, 128))
    assert out.fcam.shape == (1, 2, 96, 128)
    assert out.features[-1].shape[-2:] == (6, 8)


def test_output_stride_dilates_the_cam_tap() -> None:
    plain = wsol.create_model("resnet18", 2)
    dilated = wsol.create_model("resnet18", 2, output_stride=8)
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        assert plain.forward_features(x)[-1].shape[-1] == 4
        feats = dilated.forward_features(x)
        assert feats[-1].shape[-1] == 16
        assert dilated.forward_heads(x).fcam.shape[-2:] == (128, 128)
    assert dilated.feature_reductions[-1] == 8


def test_output_stride_on_a_backbone_without_dilation_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"vgg16_bn.*output_stride"):
        wsol.create_model("vgg16_bn", 2, output_stride=8)


def test_unknown_backbone_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown timm backbone 'resnet1000'"):
        wsol.create_model("resnet1000", 2)


def test_normalization_lives_in_the_config(resnet18: wsol.WSOLModel) -> None:
    images = torch.full((1, 3, 8, 8), 255, dtype=torch.uint8)
    x = resnet18.normalize(images)
    expected = (1.0 - torch.tensor(resnet18.config.mean)) / torch.tensor(resnet18.config.std)
    torch.testing.assert_close(x[0, :, 0, 0], expected)
    # float input is taken as RGB in [0, 1]
    torch.testing.assert_close(resnet18.normalize(images.float() / 255), x)
    with pytest.raises(ValueError, match="RGB"):
        resnet18.normalize(torch.zeros(1, 1, 8, 8))


def test_config_validates_and_round_trips() -> None:
    cfg = ModelConfig(backbone="resnet50", num_classes=3, mpp=0.5, input_size=512, output_stride=16)
    assert ModelConfig.from_json(cfg.to_json()) == cfg
    assert cfg.class_names == ["class0", "class1", "class2"]
    with pytest.raises(ValueError, match="class names"):
        ModelConfig(num_classes=2, class_names=["a"])
    with pytest.raises(ValueError, match="output_stride"):
        ModelConfig(output_stride=4)
    with pytest.raises(ValueError, match="unknown model config keys: bogus"):
        ModelConfig.from_json('{"bogus": 1}')


def test_summary_names_backbone_classes_and_mpp() -> None:
    model = wsol.create_model("resnet18", 2, class_names=["normal", "tumor"], mpp=0.5)
    text = model.summary()
    assert "resnet18" in text and "normal, tumor" in text and "mpp 0.5" in text
