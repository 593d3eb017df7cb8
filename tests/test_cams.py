from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import wsol
from wsol import cams
from wsol.cams import formulas
from wsol.cams.int8 import int8_scorer

CAM_FAMILY = ["cam", "gradcam", "gradcampp", "xgradcam", "layercam", "scorecam", "smoothgradcampp"]


@pytest.fixture(scope="module")
def batch(resnet18: wsol.WSOLModel, he_tile) -> torch.Tensor:
    tiles = torch.from_numpy(he_tile).permute(2, 0, 1)
    crops = torch.stack(
        [tiles[:, :96, :96], tiles[:, 200:296, 100:196], tiles[:, 400:496, 400:496]]
    )
    return resnet18.normalize(crops)


@pytest.mark.parametrize("method", cams.METHODS)
def test_every_method_returns_maps_in_unit_range_at_input_size(resnet18, batch, method) -> None:
    maps = cams.compute(resnet18, batch, method)
    assert maps.shape == (3, 96, 96)
    assert maps.dtype == torch.float32 and maps.device == resnet18.device
    assert maps.min() >= 0 and maps.max() <= 1
    if method in cams.CAM_METHODS:
        # min-max normalized per image
        assert torch.allclose(maps.flatten(1).amax(1), torch.ones(3))


def test_cam_equals_gradcam_for_a_gap_linear_head(resnet18, batch) -> None:
    result = cams.compute_many(resnet18, batch, ["cam", "gradcam"])
    torch.testing.assert_close(result.maps["cam"], result.maps["gradcam"], atol=1e-5, rtol=0)


def test_default_target_is_the_predicted_class(resnet18, batch) -> None:
    result = cams.compute_many(resnet18, batch, ["gradcam"])
    assert torch.equal(result.targets, result.logits.argmax(1))
    explicit = cams.compute(resnet18, batch, "gradcam", targets=result.targets)
    torch.testing.assert_close(explicit, result.maps["gradcam"])
    other = cams.compute(resnet18, batch, "gradcam", targets=1 - result.targets)
    assert not torch.allclose(other, explicit)


@pytest.mark.parametrize(
    "method",
    ["cam", "gradcam", "gradcampp", "xgradcam", "layercam", "scorecam", "fcam", "pixelcam"],
)
def test_batched_maps_equal_one_image_at_a_time(resnet18, batch, method) -> None:
    together = cams.compute(resnet18, batch, method, targets=[0, 1, 0])
    alone = torch.cat(
        [
            cams.compute(resnet18, batch[i : i + 1], method, targets=[t])
            for i, t in enumerate([0, 1, 0])
        ]
    )
    torch.testing.assert_close(together, alone, atol=1e-4, rtol=0)


def test_one_encoder_forward_for_all_gradient_and_head_methods(resnet18, batch) -> None:
    calls = []
    handle = resnet18.encoder.register_forward_hook(lambda *a: calls.append(1))
    try:
        cams.compute_many(
            resnet18,
            batch,
            ["cam", "gradcam", "gradcampp", "xgradcam", "layercam", "fcam", "pixelcam"],
        )
    finally:
        handle.remove()
    assert len(calls) == 1


def test_no_state_left_behind(resnet18, batch) -> None:
    def hook_count() -> int:
        return sum(
            len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
            for m in resnet18.modules()
        )

    before = hook_count()
    resnet18.train()
    try:
        cams.compute_many(resnet18, batch, CAM_FAMILY)
        assert resnet18.training  # mode restored
    finally:
        resnet18.eval()
    assert hook_count() == before
    assert all(p.grad is None for p in resnet18.parameters())


def test_scorecam_skipping_zero_channels_is_exact(resnet18, batch) -> None:
    """Brute-force Score-CAM over every channel (as the paper writes it) matches."""
    x = batch[:1]
    with torch.no_grad():
        acts = resnet18.forward_features(x)[-1]
        target = resnet18(x).argmax(1)
        assert (acts.flatten(2).amax(2) == 0).any(), "test needs some all-zero channels"
        up = F.interpolate(
            acts.transpose(0, 1), size=x.shape[-2:], mode="bilinear", align_corners=True
        )
        lo = up.flatten(1).amin(1).view(-1, 1, 1, 1)
        hi = up.flatten(1).amax(1).view(-1, 1, 1, 1)
        masks = (up - lo) / (hi - lo + 1e-8)
        scores = torch.cat([resnet18(x * m) for m in masks.split(64)])[:, target[0]]
        raw = formulas.weighted_sum(torch.softmax(scores, 0)[None], acts)
        expected = formulas.normalize_maps(formulas.upsample(raw, x.shape[-2:]))
    torch.testing.assert_close(cams.compute(resnet18, x, "scorecam"), expected, atol=1e-5, rtol=0)


def test_smoothgradcampp_on_the_classifier_tap_is_gradcampp(resnet18, batch) -> None:
    """With GAP + linear, dS/dA = W_c / (h w) whatever the input, so averaging the
    gradients of noisy copies changes nothing: Smooth Grad-CAM++ == Grad-CAM++."""
    result = cams.compute_many(resnet18, batch, ["smoothgradcampp", "gradcampp"])
    torch.testing.assert_close(result.maps["smoothgradcampp"], result.maps["gradcampp"])


def test_smoothgradcampp_shortcut_equals_running_the_noisy_copies(resnet18, batch) -> None:
    from wsol.cams.compute import _noisy_gradients

    result = cams.compute_many(resnet18, batch, ["smoothgradcampp"])
    with torch.no_grad():
        acts = resnet18.forward_features(batch)[-1]
    noisy = _noisy_gradients(resnet18, batch, resnet18.cam_tap, result.targets, 4, 0.15, 0)
    assert noisy.shape[0] == 4 and not torch.equal(noisy[0], torch.zeros_like(noisy[0]))
    raw = formulas.smoothgradcampp(acts, noisy)
    expected = formulas.normalize_maps(formulas.upsample(raw, batch.shape[-2:]))
    torch.testing.assert_close(result.maps["smoothgradcampp"], expected, atol=1e-5, rtol=0)


def test_smoothgradcampp_on_an_inner_tap_is_smoothed_and_reproducible(resnet18, batch) -> None:
    def run(seed: int) -> dict[str, torch.Tensor]:
        return cams.compute_many(
            resnet18, batch, ["smoothgradcampp", "gradcampp"], layer=-2, seed=seed
        ).maps

    a, b = run(0), run(1)
    torch.testing.assert_close(a["smoothgradcampp"], run(0)["smoothgradcampp"])
    assert not torch.allclose(a["smoothgradcampp"], a["gradcampp"], atol=1e-3)
    assert not torch.allclose(a["smoothgradcampp"], b["smoothgradcampp"], atol=1e-4)


def test_head_maps_are_the_heads_foreground_probabilities(resnet18, batch) -> None:
    with torch.no_grad():
        out = resnet18.forward_heads(batch)
    torch.testing.assert_close(cams.compute(resnet18, batch, "fcam"), out.fcam.softmax(1)[:, 1])
    torch.testing.assert_close(
        cams.compute(resnet18, batch, "pixelcam"), out.pixel.softmax(1)[:, 1]
    )


def test_multiclass_pixelcam_explains_the_target_class() -> None:
    model = wsol.create_model("resnet18", 3)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        probs = model.forward_heads(x).pixel.softmax(1)
    maps = cams.compute(model, x, "pixelcam", targets=[2, 0])
    torch.testing.assert_close(maps[0], probs[0, 3])
    torch.testing.assert_close(maps[1], probs[1, 1])


def test_other_encoder_taps(resnet18, batch) -> None:
    maps = cams.compute_many(resnet18, batch, ["gradcam", "layercam"], layer=-2).maps
    assert maps["layercam"].shape == (3, 96, 96)
    assert not torch.allclose(maps["gradcam"], cams.compute(resnet18, batch, "gradcam"))
    with pytest.raises(ValueError, match="classifier's tap"):
        cams.compute_many(resnet18, batch, ["cam"], layer=-2)


def test_bad_arguments_are_clear(resnet18, batch) -> None:
    with pytest.raises(ValueError, match=r"unknown method.*gradcam"):
        cams.compute(resnet18, batch, "gradkam")
    with pytest.raises(ValueError, match="one target per sample"):
        cams.compute(resnet18, batch, "gradcam", targets=[0, 1])
    with pytest.raises(ValueError, match="class indices"):
        cams.compute(resnet18, batch, "gradcam", targets=[0, 1, 5])
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        cams.compute(resnet18, batch[0], "gradcam")


def test_scorecam_scale_is_an_opt_in_approximation(resnet18, batch) -> None:
    x = batch[:1]
    exact = cams.compute(resnet18, x, "scorecam")
    half = cams.compute_many(resnet18, x, ["scorecam"], scorecam_scale=0.5).maps["scorecam"]
    assert half.shape == exact.shape and 0 <= half.min() and half.max() <= 1
    assert not torch.equal(half, exact)
    assert torch.corrcoef(torch.stack([half.flatten(), exact.flatten()]))[0, 1] > 0.9
    with pytest.raises(ValueError, match="scale"):
        cams.compute_many(resnet18, x, ["scorecam"], scorecam_scale=0)


def _sharpened(model: wsol.WSOLModel) -> wsol.WSOLModel:
    """A copy whose masked images score far apart, as a trained model's do (a random
    classifier scores them all alike, and any Score-CAM weights look uniform)."""
    sharp = copy.deepcopy(model)
    with torch.no_grad():
        sharp.classifier.fc.weight.mul_(50)
    return sharp


def test_int8_scorer_is_a_quantized_copy_that_leaves_the_model_alone(resnet18, batch) -> None:
    before = {k: v.clone() for k, v in resnet18.state_dict().items()}
    score = int8_scorer(resnet18, batch)
    assert score is not None
    with torch.no_grad():
        floats, ints = resnet18(batch), score(batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # the pipeline calls it under autocast
            ints_autocast = score(batch)
    assert ints.dtype == torch.float32 and ints.shape == floats.shape
    assert not torch.equal(ints, floats)  # it really runs in int8 ...
    # Within 10% of the largest logit: int8 kernels differ between CPUs, and 5% held on
    # AVX-512 CPUs while an AVX2-only one (AMD Zen 3) came to 5.1% on one logit.
    torch.testing.assert_close(ints, floats, atol=0.1 * floats.abs().max().item(), rtol=0)
    torch.testing.assert_close(ints_autocast, ints)  # ... and autocast does not reach it
    after = resnet18.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in resnet18.modules())


def test_scorecam_int8_matches_float_scorecam(resnet18, batch) -> None:
    model = _sharpened(resnet18)
    exact = cams.compute(model, batch, "scorecam")
    fast = cams.compute_many(model, batch, ["scorecam"], scorecam_int8=True).maps["scorecam"]
    assert fast.shape == exact.shape and 0 <= fast.min() and fast.max() <= 1
    assert not torch.equal(fast, exact)
    for i in range(len(batch)):
        assert torch.corrcoef(torch.stack([fast[i].flatten(), exact[i].flatten()]))[0, 1] > 0.99


def test_scorecam_int8_falls_back_to_float_for_a_vit() -> None:
    model = wsol.create_model("deit_small_patch16_224", 2).eval()
    x = torch.randn(1, 3, 32, 32)
    assert int8_scorer(model, x) is None  # its token reshape does not trace
    exact = cams.compute(model, x, "scorecam")
    fast = cams.compute_many(model, x, ["scorecam"], scorecam_int8=True).maps["scorecam"]
    torch.testing.assert_close(fast, exact)
