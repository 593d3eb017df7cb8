"""Multi-label models: MinMax-CAM, D-MinMax-Grad-CAM, Kernel Usage Regularization,
``;``-separated labels, BCE training and per-class evaluation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import wsol
from wsol import cams
from wsol.cams import formulas
from wsol.data import WSOLDataset
from wsol.errors import DatasetError, InputError
from wsol.evaluate import evaluate
from wsol.train import TrainConfig, TrainData, train

F64 = torch.float64


def test_minmaxcam_subtracts_the_mean_weights_of_the_other_present_classes() -> None:
    acts = torch.tensor([[[[1.0, 0.0]], [[0.0, 2.0]], [[1.0, 1.0]]]], dtype=F64)  # K=3, 1x2
    weights = torch.tensor([[2.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 3.0, 1.0]], dtype=F64)
    # target 0, classes 1 and 2 present too: w = [2,1,0] - mean([1,0,1],[0,3,1]) = [1.5,-0.5,-1]
    # map = 1.5*[1,0] - 0.5*[0,2] - 1*[1,1] = [0.5, -2] -> ReLU [0.5, 0]
    present = torch.tensor([[True, True, True]])
    out = formulas.minmaxcam(acts, weights, torch.tensor([0]), present)
    torch.testing.assert_close(out, torch.tensor([[[0.5, 0.0]]], dtype=F64))
    # only class 2 besides the target: w = [2,1,0] - [0,3,1] = [2,-2,-1] -> [1, -5] -> [1, 0]
    present = torch.tensor([[True, False, True]])
    out = formulas.minmaxcam(acts, weights, torch.tensor([0]), present)
    torch.testing.assert_close(out, torch.tensor([[[1.0, 0.0]]], dtype=F64))
    # no other class present: plain CAM, 2*[1,0] + 1*[0,2] = [2, 2]
    alone = formulas.minmaxcam(acts, weights, torch.tensor([0]), torch.tensor([[1, 0, 0]]))
    torch.testing.assert_close(alone, formulas.cam(acts, weights[[0]]))


def test_dminmax_gradcam_by_hand() -> None:
    acts = torch.tensor([[[[1.0, 2.0]], [[3.0, 0.0]]]], dtype=F64)  # K=2, 1x2
    g_c = torch.tensor([[[[1.0, -1.0]], [[0.5, 0.5]]]], dtype=F64)
    g_n = torch.tensor([[[[2.0, 2.0]], [[-1.0, 0.0]]]], dtype=F64)
    g_all = torch.tensor([[[[-1.0, 0.0]], [[-3.0, 1.0]]]], dtype=F64)
    # |N| = 2, |C| = 3. Per kernel, summed over pixels:
    # k0: relu(g_c) = 1 + 0; relu(g_n)/2 = (2+2)/2 = 2; min(0,g_all)/3 = -1/3  -> 1-2-1/3
    # k1: relu(g_c) = 1; relu(g_n)/2 = 0; min(0,g_all)/3 = -1                   -> 0
    a0 = 1 - 2 - 1 / 3
    expected = F.relu(torch.tensor([[[a0 * 1 + 0 * 3, a0 * 2 + 0 * 0]]], dtype=F64))
    out = formulas.dminmax_gradcam(acts, g_c, g_n, g_all, torch.tensor([2]), torch.tensor([3]))
    torch.testing.assert_close(out, expected)
    # make alpha positive: flip g_n's sign -> k0 = 1 - 0 - 1/3
    out = formulas.dminmax_gradcam(acts, g_c, -g_n, g_all, torch.tensor([2]), torch.tensor([3]))
    a0 = 1 - 1 / 3 - 0.0
    k1 = 1 - 0.5 - 1  # relu(-g_n) for k1 = [1, 0] -> 1/2
    expected = F.relu(torch.tensor([[[a0 * 1 + k1 * 3, a0 * 2]]], dtype=F64))
    torch.testing.assert_close(out, expected)


def _model(num_classes: int = 3, **config) -> wsol.WSOLModel:
    torch.manual_seed(0)
    model = wsol.create_model("resnet10t", num_classes, input_size=64, **config)
    with torch.no_grad():  # signed weights big enough for visible, distinct maps
        model.classifier.fc.weight.normal_(0, 1)
    return model


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.rand(2, 3, 64, 64, generator=g) * 4 - 2


def test_dminmax_on_a_linear_head_uses_the_analytic_gradients(x) -> None:
    model = _model(multilabel=True)
    with torch.no_grad():  # the targets' kernels mostly positive, so the maps are not empty
        model.classifier.fc.weight[0].abs_()
        model.classifier.fc.weight[2].abs_()
    present = torch.tensor([[1, 1, 1], [0, 1, 1]], dtype=torch.bool)
    targets = torch.tensor([0, 2])
    got = cams.compute(model, x, "dminmaxgradcam", targets, present=present)
    with torch.no_grad():
        acts = model.forward_features(x)[-1]
    w = model.classifier.weight.detach()
    rows = []
    for b, c in enumerate(targets.tolist()):
        others = [n for n in range(3) if present[b, n] and n != c]
        allc = [n for n in range(3) if present[b, n]]
        # dS_n/dA_kij = w_nk / (hw): summing over the pixels gives w_nk itself
        alpha = F.relu(w[c]) - F.relu(w[others].sum(0)) / max(1, len(others))
        alpha = alpha + w[allc].sum(0).clamp(max=0) / len(allc)
        rows.append(F.relu(torch.einsum("k,khw->hw", alpha, acts[b])))
    expected = formulas.normalize_maps(formulas.upsample(torch.stack(rows), (64, 64)))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert (got.flatten(1).amax(1) > 0).all()


def test_without_other_classes_minmax_is_cam_and_dminmax_is_gradcam(x) -> None:
    model = _model(num_classes=2)  # single-label: only the target is present
    r = cams.compute_many(model, x, ["cam", "gradcam", "minmaxcam", "dminmaxgradcam"], [0, 1])
    torch.testing.assert_close(r.maps["minmaxcam"], r.maps["cam"])
    torch.testing.assert_close(r.maps["dminmaxgradcam"], r.maps["gradcam"], atol=1e-5, rtol=0)
    # with a co-occurring class the map changes
    multi = _model(multilabel=True)
    both = torch.tensor([[1, 1, 0], [1, 1, 0]], dtype=torch.bool)
    r = cams.compute_many(multi, x, ["cam", "minmaxcam"], [0, 0], present=both)
    assert not torch.allclose(r.maps["cam"], r.maps["minmaxcam"], atol=1e-3)


def test_present_defaults_to_the_detections_of_a_multilabel_model(x) -> None:
    model = _model(multilabel=True)
    with torch.no_grad():
        model.classifier.fc.bias.copy_(torch.tensor([50.0, -50.0, 50.0]))  # detects 0 and 2
    auto = cams.compute(model, x, "minmaxcam", [0, 0])
    given = cams.compute(
        model, x, "minmaxcam", [0, 0], present=torch.tensor([[1, 0, 1], [1, 0, 1]]).bool()
    )
    wrong = cams.compute(
        model, x, "minmaxcam", [0, 0], present=torch.tensor([[1, 1, 0], [1, 1, 0]]).bool()
    )
    torch.testing.assert_close(auto, given)
    assert not torch.allclose(auto, wrong, atol=1e-3)
    with pytest.raises(ValueError, match="present"):
        cams.compute(model, x, "minmaxcam", [0, 0], present=torch.ones(2, 2, dtype=torch.bool))


def test_kernel_usage_regularization_reweights_the_classifier(x) -> None:
    model = _model(num_classes=3, kernel_usage=2.0)
    w = model.classifier.fc.weight
    torch.testing.assert_close(model.classifier.weight, w * 2.0 * torch.softmax(w, dim=0))
    with torch.no_grad():
        feats = model.forward_features(x)
        pooled = feats[-1].mean(dim=(2, 3))
        expected = pooled @ model.classifier.weight.T + model.classifier.fc.bias
        torch.testing.assert_close(model.classify(feats), expected)
        plain = pooled @ w.T + model.classifier.fc.bias
        assert not torch.allclose(plain, expected)
    # CAM reads the effective weights: it still equals Grad-CAM for GAP + linear
    r = cams.compute_many(model, x, ["cam", "gradcam"], [1, 2])
    torch.testing.assert_close(r.maps["cam"], r.maps["gradcam"], atol=1e-5, rtol=0)
    # and survives a checkpoint round trip
    with pytest.raises(ValueError, match="kernel_usage"):
        wsol.create_model("resnet10t", 2, kernel_usage=-1.0)


def test_kernel_usage_is_saved_and_set_by_training(tmp_path: Path) -> None:
    model = _model(num_classes=2)
    g = torch.Generator().manual_seed(0)
    data = TrainData(
        torch.randint(0, 255, (4, 3, 64, 64), generator=g, dtype=torch.uint8),
        torch.tensor([0, 1, 0, 1]),
    )
    train(model, data, "classifier", TrainConfig(epochs=1, batch_size=4, kernel_usage=1.5))
    assert model.config.kernel_usage == 1.5 and model.classifier.kernel_usage == 1.5
    model.save(tmp_path / "kur.safetensors")
    loaded = wsol.load_model(tmp_path / "kur.safetensors")
    assert loaded.classifier.kernel_usage == 1.5
    with torch.no_grad():
        xx = model.normalize(data.images)
        torch.testing.assert_close(loaded(xx), model(xx))


def _write_dataset(root: Path, rows: list[tuple[str, str]], masks: dict | None = None) -> None:
    root.mkdir(parents=True, exist_ok=True)
    g = np.random.default_rng(0)
    lines = ["image,label"]
    for name, label in rows:
        Image.fromarray(g.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / name)
        lines.append(f"{name},{label}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    for (cls, name), mask in (masks or {}).items():
        (root / "masks" / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / cls / name)


def test_semicolon_labels_make_a_multilabel_dataset(tmp_path: Path) -> None:
    left = np.zeros((32, 32), bool)
    left[:, :16] = True
    masks = {("a", "x.png"): left, ("b", "x.png"): ~left, ("b", "y.png"): ~left}
    _write_dataset(tmp_path / "ds", [("x.png", "a;b"), ("y.png", "b"), ("z.png", "a")], masks)
    ds = WSOLDataset(tmp_path / "ds")
    assert ds.multilabel and ds.classes == ["a", "b"]
    assert ds.present().tolist() == [[True, True], [False, True], [True, False]]
    assert [s.labels for s in ds.samples] == [(0, 1), (1,), (0,)]
    batch = next(ds.batches(8, 32))
    assert batch.class_masks.shape == (3, 2, 32, 32)
    assert batch.has_class_mask.tolist() == [[True, True], [False, True], [False, False]]
    assert torch.equal(batch.class_masks[0, 0], torch.from_numpy(left))
    assert not batch.class_masks[2].any()
    with pytest.raises(DatasetError, match="several labels"):
        WSOLDataset(tmp_path / "ds", multilabel=False)
    _write_dataset(tmp_path / "bad", [("x.png", "a;c")])
    with pytest.raises(DatasetError, match="unknown label 'c'"):
        WSOLDataset(tmp_path / "bad", ["a", "b"])


def _two_texture_data(n: int = 24, size: int = 64):
    """Grey tiles; class 0 = red square on the left, class 1 = blue square on the right."""
    g = torch.Generator().manual_seed(0)
    images = torch.full((n, 3, size, size), 0.5) + 0.03 * torch.randn(n, 3, size, size, generator=g)
    present = torch.zeros(n, 2, dtype=torch.bool)
    masks = torch.zeros(n, 2, size, size, dtype=torch.bool)
    for i in range(n):
        kind = i % 3  # 0: both, 1: only class 0, 2: only class 1
        for c in (0, 1):
            if kind == 0 or kind == c + 1:
                present[i, c] = True
                x0 = 4 if c == 0 else 36
                masks[i, c, 16:40, x0 : x0 + 24] = True
                images[i, :, 16:40, x0 : x0 + 24] = torch.tensor(
                    [0.9, 0.1, 0.1] if c == 0 else [0.1, 0.1, 0.9]
                ).view(3, 1, 1)
    images = (images.clamp(0, 1) * 255).to(torch.uint8)
    return images, present, masks


def test_multilabel_classifier_trains_with_bce_and_evaluates_per_class(tmp_path: Path) -> None:
    images, present, masks = _two_texture_data()
    model = wsol.create_model("resnet10t", 2, input_size=64, multilabel=True)
    with pytest.raises(InputError, match="present"):
        train(model, TrainData(images, present.long().argmax(1)), "classifier")
    data = TrainData(images, present.long().argmax(1), present=present)
    result = train(
        model, data, "classifier", TrainConfig(epochs=6, batch_size=8, lr=3e-3, augment=False)
    )
    assert result.history[-1]["ce"] < result.history[0]["ce"]
    with torch.no_grad():
        probs = model.probabilities(model(model.normalize(images)))
    assert ((probs >= 0.5) == present).float().mean() > 0.8  # learnt both labels

    root = tmp_path / "ml"
    (root / "masks" / "class0").mkdir(parents=True)
    (root / "masks" / "class1").mkdir(parents=True)
    lines = ["image,label"]
    for i in range(len(images)):
        name = f"t{i}.png"
        Image.fromarray(images[i].permute(1, 2, 0).numpy()).save(root / name)
        lines.append(f"{name},{';'.join(str(c) for c in present[i].nonzero()[:, 0].tolist())}")
        for c in (0, 1):
            mask = masks[i, c].numpy().astype(np.uint8) * 255
            Image.fromarray(mask).save(root / "masks" / f"class{c}" / name)
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    ds = WSOLDataset(root, model.config.class_names, multilabel=True)
    report = evaluate(model, ds, ["gradcam", "minmaxcam"], batch_size=8)
    assert report["multilabel"] and report["num_masks"] == int(present.sum())
    assert report["accuracy"] > 80
    for entry in report["methods"].values():
        # both classes of the 8 tiles that hold both
        assert 0 <= entry["leak"] <= 100 and entry["leak_maps"] == 16
        assert 0 <= entry["pxap"] <= 100
