"""Parity with pytorch-grad-cam on the same timm model and layer (Pearson per image)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import wsol
from wsol import cams
from wsol.bench import REFERENCE, reference_layer

pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def _model(backbone: str) -> wsol.WSOLModel:
    torch.manual_seed(0)
    model = wsol.create_model(backbone, 2)
    # A random classifier scores every masked image almost alike, which would make
    # Score-CAM's weights uniform and the comparison weak; sharper logits (as a
    # trained model has) make every weight count.
    with torch.no_grad():
        model.classifier.fc.weight.mul_(50)
    return model


def _inputs(model: wsol.WSOLModel, he_tile: np.ndarray, size: int) -> torch.Tensor:
    tile = torch.from_numpy(he_tile).permute(2, 0, 1)
    crops = torch.stack([tile[:, :size, :size], tile[:, -size:, -size:]])
    return model.normalize(crops)


@pytest.mark.parametrize(
    ("backbone", "methods"),
    [
        ("resnet18", ["gradcam", "gradcampp", "xgradcam", "layercam", "scorecam"]),
        ("vgg16_bn", ["gradcam", "gradcampp", "xgradcam", "layercam"]),
    ],
)
def test_pearson_with_pytorch_grad_cam(backbone: str, methods: list[str], he_tile) -> None:
    model = _model(backbone)
    x = _inputs(model, he_tile, 128)
    targets = [0, 1]
    ours = cams.compute_many(model, x, methods, targets=targets).maps
    layer = [reference_layer(model)]
    for method in methods:
        with getattr(pytorch_grad_cam, REFERENCE[method])(model=model, target_layers=layer) as ref:
            theirs = ref(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])
        mine = ours[method].cpu().numpy()
        rs = [pearson(mine[i], theirs[i]) for i in range(len(x))]
        print(f"parity {backbone} {method}: Pearson per image {[round(r, 6) for r in rs]}")
        for i, r in enumerate(rs):
            assert r >= 0.99, f"{backbone} {method} image {i}: Pearson {r:.4f}"


def test_int8_scorecam_keeps_parity_with_pytorch_grad_cam(he_tile) -> None:
    """The CPU's fast Score-CAM (masked images scored in int8) against the reference."""
    model = _model("resnet18")
    x = _inputs(model, he_tile, 128)
    targets = [0, 1]
    ours = cams.compute_many(model, x, ["scorecam"], targets=targets, scorecam_int8=True)
    with pytorch_grad_cam.ScoreCAM(model=model, target_layers=[reference_layer(model)]) as ref:
        theirs = ref(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])
    mine = ours.maps["scorecam"].cpu().numpy()
    rs = [pearson(mine[i], theirs[i]) for i in range(len(x))]
    print(f"parity resnet18 scorecam (int8 scoring): Pearson per image {rs}")
    assert min(rs) >= 0.99
