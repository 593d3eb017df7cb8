"""Each CAM formula against values worked out by hand."""

from __future__ import annotations

import torch

from wsol.cams import formulas


def t(rows: list) -> torch.Tensor:
    """[K][h][w] nested lists -> [1, K, h, w] float64."""
    return torch.tensor([rows], dtype=torch.float64)


def test_cam_uses_the_class_weights() -> None:
    acts = t([[[1.0, 2.0]], [[0.0, 4.0]]])
    weights = torch.tensor([[1.0, -0.5]], dtype=torch.float64)
    # 1*[1, 2] - 0.5*[0, 4] = [1, 0]
    torch.testing.assert_close(
        formulas.cam(acts, weights), torch.tensor([[[1.0, 0.0]]], dtype=torch.float64)
    )


def test_gradcam_weights_are_mean_gradients_and_relu_applies() -> None:
    acts = t([[[1.0, 2.0], [3.0, 4.0]], [[0.0, 1.0], [0.0, 1.0]]])
    grads = t([[[0.5, 0.5], [0.5, 0.5]], [[-1.0, -1.0], [-1.0, -1.0]]])
    # 0.5 * A0 - 1 * A1 = [[0.5, 0], [1.5, 1]]
    expected = torch.tensor([[[0.5, 0.0], [1.5, 1.0]]], dtype=torch.float64)
    torch.testing.assert_close(formulas.gradcam(acts, grads), expected)
    # all-negative combination is clipped to zero
    torch.testing.assert_close(
        formulas.gradcam(acts, -3 * grads.abs()), torch.zeros(1, 2, 2, dtype=torch.float64)
    )


def test_gradcampp_eq19_by_hand() -> None:
    acts = t([[[1.0, 3.0]]])
    grads = t([[[2.0, 2.0]]])
    # sum A = 4, g2 = 4, g3 = 8: alpha = 4 / (8 + 32) = 0.1 per pixel; w = 2*0.1 + 2*0.1 = 0.4
    expected = torch.tensor([[[0.4, 1.2]]], dtype=torch.float64)
    torch.testing.assert_close(formulas.gradcampp(acts, grads), expected, atol=1e-6, rtol=1e-6)


def test_gradcampp_ignores_negative_and_zero_gradients() -> None:
    acts = t([[[1.0, 3.0]], [[5.0, 5.0]]])
    grads = t([[[2.0, 0.0]], [[-1.0, -1.0]]])
    w = formulas.gradcampp_weights(acts, grads)
    # channel 0: only the first pixel counts: alpha = 4 / (8 + 4*8) = 0.1, w = 0.2
    torch.testing.assert_close(
        w, torch.tensor([[0.2, 0.0]], dtype=torch.float64), atol=1e-6, rtol=1e-6
    )


def test_xgradcam_by_hand() -> None:
    acts = t([[[1.0, 3.0]]])
    grads = t([[[2.0, 4.0]]])
    # w = (2*1 + 4*3) / 4 = 3.5
    expected = torch.tensor([[[3.5, 10.5]]], dtype=torch.float64)
    torch.testing.assert_close(formulas.xgradcam(acts, grads), expected)


def test_layercam_by_hand() -> None:
    acts = t([[[1.0, 3.0]], [[2.0, 2.0]]])
    grads = t([[[-2.0, 4.0]], [[1.0, 0.0]]])
    # relu(G) * A summed over channels: [0 + 2, 12 + 0]
    expected = torch.tensor([[[2.0, 12.0]]], dtype=torch.float64)
    torch.testing.assert_close(formulas.layercam(acts, grads), expected)


def test_smoothgradcampp_with_identical_samples_is_gradcampp() -> None:
    acts = torch.rand(2, 4, 3, 3, dtype=torch.float64)
    grads = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    noisy = grads.unsqueeze(0).expand(5, -1, -1, -1, -1)
    torch.testing.assert_close(
        formulas.smoothgradcampp(acts, noisy), formulas.gradcampp(acts, grads)
    )


def test_smoothgradcampp_averages_gradient_powers() -> None:
    acts = t([[[1.0, 3.0]]])
    noisy = torch.stack([t([[[1.0, 1.0]]]), t([[[3.0, 3.0]]])])
    # mean g = 2, mean g^2 = 5, mean g^3 = 14; alpha = 5 / (10 + 4 * 14) = 5/66
    w = 2 * (5 / 66) * 2
    expected = torch.tensor([[[w, 3 * w]]], dtype=torch.float64)
    torch.testing.assert_close(
        formulas.smoothgradcampp(acts, noisy), expected, atol=1e-6, rtol=1e-6
    )


def test_scorecam_weights_softmax_and_skipped_channels() -> None:
    scores = torch.tensor([[0.0, float("-inf"), 0.0]])
    torch.testing.assert_close(formulas.scorecam_weights(scores), torch.tensor([[0.5, 0.0, 0.5]]))


def test_normalize_maps_per_image_and_constant_maps() -> None:
    maps = torch.stack([torch.tensor([[0.0, 2.0, 4.0]]), torch.full((1, 3), 7.0)])
    out = formulas.normalize_maps(maps)
    torch.testing.assert_close(out[0], torch.tensor([[0.0, 0.5, 1.0]]))
    torch.testing.assert_close(out[1], torch.zeros(1, 3))


def test_upsample_is_bilinear_and_keeps_batch() -> None:
    maps = torch.tensor([[[0.0, 1.0]]])
    up = formulas.upsample(maps, (1, 4))
    torch.testing.assert_close(up, torch.tensor([[[0.0, 0.25, 0.75, 1.0]]]))
