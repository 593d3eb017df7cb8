"""Model guidance: pixel labels imposed on the classifier's own differentiable CAM."""

from __future__ import annotations

import copy

import torch

import wsol
from tests.test_train import _toy
from wsol.cams import compute
from wsol.guidance import cam_logits, guidance_loss
from wsol.metrics import PixelMetrics
from wsol.pseudo import BG, FG, IGNORE
from wsol.train import TrainConfig, TrainData, train


def test_guidance_loss_is_balanced_partial_bce() -> None:
    logits = torch.tensor([[[2.0, -1.0, 0.5, 3.0]]], dtype=torch.float64)
    labels = torch.tensor([[[FG, BG, BG, IGNORE]]])
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    fg = bce(logits[0, 0, :1], torch.ones(1, dtype=torch.float64))
    bg = bce(logits[0, 0, 1:3], torch.zeros(2, dtype=torch.float64))
    torch.testing.assert_close(guidance_loss(logits, labels), (fg + bg) / 2)
    # the ignored pixel does not matter; no labels at all gives a zero with a graph
    changed = logits.clone()
    changed[..., 3] = -9
    torch.testing.assert_close(guidance_loss(changed, labels), (fg + bg) / 2)
    empty = guidance_loss(logits.requires_grad_(True), torch.full_like(labels, IGNORE))
    assert empty.item() == 0 and empty.requires_grad
    # coarse logits are upsampled to the labels' grid; gradients are right
    coarse = torch.randn(1, 2, 2, dtype=torch.float64, requires_grad=True)
    fine = torch.randint(-1, 2, (1, 4, 4))
    fine[0, 0, 0], fine[0, 3, 3] = FG, BG
    assert torch.autograd.gradcheck(lambda z: guidance_loss(z, fine), (coarse,))


def test_cam_logits_plus_bias_average_to_the_class_score_and_gradcam_matches_cam() -> None:
    torch.manual_seed(0)
    model = wsol.create_model("resnet10t", 3, input_size=64).train()
    x = torch.randn(2, 3, 64, 64)
    features = model.forward_features(x)
    targets = torch.tensor([2, 0])
    z = cam_logits(model, features, targets, "cam")
    logits = model.classify(features)
    bias = model.classifier.fc.bias[targets]
    torch.testing.assert_close(z.mean(dim=(1, 2)) + bias, logits.gather(1, targets[:, None])[:, 0])
    zg = cam_logits(model, features, targets, "gradcam")
    torch.testing.assert_close(zg, z, atol=1e-5, rtol=1e-5)
    # the loss reaches the encoder through the gradient (create_graph)
    guidance_loss(zg, torch.ones(2, 64, 64, dtype=torch.long)).backward()
    assert model.encoder.conv1[0].weight.grad.abs().sum() > 0


def _pxap(model: wsol.WSOLModel, data: TrainData, masks: torch.Tensor) -> float:
    metric = PixelMetrics()
    positive = data.labels == 1
    maps = compute(model, model.normalize(data.images[positive]), "cam", 1)
    metric.update(maps, masks[positive])
    return metric.pxap()


def test_guided_stage_with_a_few_labelled_images_localizes_better() -> None:
    data, masks = _toy(n=16, size=64)
    test_data, test_masks = _toy(n=8, size=64, seed=1)
    torch.manual_seed(0)
    # output stride 8: an 8x8 CAM on 64 px tiles, fine enough to draw the squares on
    base = wsol.create_model("resnet10t", 2, input_size=64, output_stride=8)
    train(base, data, "classifier", TrainConfig(epochs=4, batch_size=8, lr=3e-3))
    config = TrainConfig(epochs=3, batch_size=8, lr=1e-3, guide_weight=2.0)

    plain = copy.deepcopy(base)
    seen_plain = []
    train(plain, data, "guided", config, progress=seen_plain.append)
    assert all(p.losses["guide"] == 0 for p in seen_plain)  # no pixel labels: image loss only

    labelled = torch.full(masks.shape, IGNORE, dtype=torch.long)
    for i in (1, 3, 5, 6):  # three positives and one negative fully labelled
        labelled[i] = torch.where(masks[i], FG, BG)
    guided = copy.deepcopy(base)
    seen = []
    data.corrections = labelled
    result = train(guided, data, "guided", config, progress=seen.append)
    # every batch is topped up with labelled images, so every step has a guidance term
    assert all(p.losses["guide"] > 0 for p in seen) and result.steps_done == len(seen)
    assert seen[-1].losses["guide"] < seen[0].losses["guide"]
    before, after = _pxap(plain, test_data, test_masks), _pxap(guided, test_data, test_masks)
    assert after > before + 10, (before, after)  # measured: 74 -> 96
