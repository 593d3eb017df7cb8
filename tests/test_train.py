from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

import wsol
from wsol.pseudo import BG, FG, IGNORE
from wsol.train import TrainConfig, TrainData, TrainingError, train


def _toy(n: int = 16, size: int = 64, seed: int = 0) -> tuple[TrainData, torch.Tensor]:
    """Pink 'tissue'; odd images carry a purple square 'lesion' (the ground truth)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.empty(n, 3, size, size)
    images[:, 0], images[:, 1], images[:, 2] = 0.9, 0.6, 0.8
    images += 0.05 * torch.randn(n, 3, size, size, generator=g)
    labels = torch.arange(n) % 2
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    for i in range(1, n, 2):
        y, x = torch.randint(0, size - 24, (2,), generator=g).tolist()
        masks[i, y : y + 24, x : x + 24] = True
    for c, value in enumerate((0.4, 0.2, 0.6)):
        images[:, c][masks] = value
    return TrainData((images.clamp(0, 1) * 255).to(torch.uint8), labels), masks


def _model() -> wsol.WSOLModel:
    torch.manual_seed(0)
    return wsol.create_model("resnet18", 2, input_size=64)


def _weights(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


@torch.no_grad()
def _fcam_foreground(model: wsol.WSOLModel, images: torch.Tensor) -> torch.Tensor:
    return torch.softmax(model.forward_heads(model.normalize(images)).fcam, 1)[:, 1]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_classifier_stage_learns_and_reports_every_step() -> None:
    data, _ = _toy()
    model = _model()
    seen = []
    result = train(
        model, data, "classifier", TrainConfig(epochs=3, batch_size=8), progress=seen.append
    )
    assert result.epochs_done == 3 and result.steps_done == 6 == len(seen)
    assert seen[-1].stage == "classifier" and seen[-1].epoch == 3 and "ce" in seen[-1].losses
    assert result.history[-1]["ce"] < result.history[0]["ce"]


def test_fcam_stage_trains_only_the_decoder() -> None:
    data, _ = _toy()
    model = _model()
    encoder, classifier, pixel = (
        _weights(m) for m in (model.encoder, model.classifier, model.pixel_head)
    )
    decoder = _weights(model.decoder)
    result = train(model, data, "fcam", TrainConfig(epochs=2, batch_size=8, cam_method="cam"))
    assert set(result.history[0]) == {"loss", "fcam_pce", "crf", "size"}
    assert _same(encoder, _weights(model.encoder)) and _same(classifier, _weights(model.classifier))
    assert _same(pixel, _weights(model.pixel_head))
    assert not _same(decoder, _weights(model.decoder))
    # BatchNorm statistics of the frozen encoder did not move either.
    assert _same(
        [b.clone() for b in model.encoder.buffers()],
        [b.clone() for b in _model().encoder.buffers()],
    )


def test_pixelcam_stage_trains_encoder_classifier_and_pixel_head() -> None:
    data, _ = _toy()
    model = _model()
    before = {
        n: _weights(getattr(model, n)) for n in ("encoder", "classifier", "pixel_head", "decoder")
    }
    result = train(
        model, data, "pixelcam", TrainConfig(epochs=1, batch_size=8, lr=1e-4, cam_method="cam")
    )
    assert set(result.history[0]) == {"loss", "ce", "pixel_pce"}
    for name in ("encoder", "classifier", "pixel_head"):
        assert not _same(before[name], _weights(getattr(model, name))), name
    assert _same(before["decoder"], _weights(model.decoder))


def test_heads_stage_learns_from_the_users_corrections() -> None:
    data, masks = _toy(n=8)
    positive = data.labels == 1
    images, masks = data.images[positive], masks[positive]
    # Strokes: the left half of each lesion is painted foreground, a few clicks on the
    # tissue background. The untrained model's CAM seeds are noise: none are drawn.
    corrections = torch.full(masks.shape, IGNORE)
    painted_fg = masks.clone()
    for i, mask in enumerate(masks):
        cols = mask.any(dim=0).nonzero()[:, 0]
        painted_fg[i, :, int(cols[len(cols) // 2]) :] = False
    corrections[painted_fg] = FG
    clicks = torch.zeros_like(masks)  # five background clicks (disks) on tissue per image
    g = torch.Generator().manual_seed(1)
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    for i, mask in enumerate(masks):
        placed = 0
        while placed < 5:
            y, x = torch.randint(8, 56, (2,), generator=g).tolist()
            disk = (yy - y) ** 2 + (xx - x) ** 2 <= 9
            if not (disk & mask).any():
                clicks[i] |= disk
                placed += 1
    corrections[clicks] = BG
    unpainted_lesion = masks & ~painted_fg
    unpainted_tissue = ~masks & ~clicks

    def fg_probability(with_corrections: bool) -> tuple[float, float]:
        model = _model()
        train_data = TrainData(
            images,
            torch.ones(len(images), dtype=torch.long),
            corrections if with_corrections else None,
        )
        # keep_weight 0: an untrained decoder's map holds nothing worth keeping.
        config = TrainConfig(
            steps=30,
            batch_size=4,
            lr=3e-3,
            heads=("fcam",),
            cam_method="cam",
            seeds_per_class=0,
            keep_weight=0.0,
        )
        train(model, train_data, "heads", config)
        fg = _fcam_foreground(model, images)
        return float(fg[unpainted_lesion].mean()), float(fg[unpainted_tissue].mean())

    lesion, tissue = fg_probability(True)
    assert lesion > 0.7 and tissue < 0.35, (lesion, tissue)  # generalized past the strokes
    lesion0, tissue0 = fg_probability(False)
    assert lesion0 - tissue0 < 0.5 * (lesion - tissue)  # without strokes it does not


def test_heads_stage_keeps_batchnorm_statistics_and_what_nobody_painted() -> None:
    data, _ = _toy(n=4)
    images = data.images[data.labels == 1]
    corrections = torch.full((len(images), 64, 64), IGNORE)
    corrections[:, 10:14, 10:14] = BG  # one small background stroke per image
    far = torch.ones(64, 64, dtype=torch.bool)
    far[:30, :30] = False  # pixels well away from the strokes

    def round_(keep_weight: float) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        model = _model()
        before = _fcam_foreground(model, images)
        config = TrainConfig(
            steps=20, batch_size=2, lr=3e-3, heads=("fcam",), seeds_per_class=0,
            keep_weight=keep_weight,
        )  # fmt: skip
        train(model, TrainData(images, torch.ones(len(images), dtype=torch.long), corrections),
              "heads", config)  # fmt: skip
        after = _fcam_foreground(model, images)
        return before, after, [b.clone() for b in model.decoder.buffers()]

    before, kept, buffers = round_(3.0)
    assert _same(buffers, [b.clone() for b in _model().decoder.buffers()])  # BN stats as trained
    _, loose, _ = round_(0.0)
    assert float(kept[:, 10:14, 10:14].mean()) < float(before[:, 10:14, 10:14].mean()) - 0.05
    drift_kept = float((kept - before)[:, far].abs().mean())
    drift_loose = float((loose - before)[:, far].abs().mean())
    assert drift_kept < 0.5 * drift_loose, (drift_kept, drift_loose)


def test_heads_stage_holds_sure_foreground_harder_with_keep_fg() -> None:
    data, _ = _toy(n=4)
    images = data.images[data.labels == 1]
    corrections = torch.full((len(images), 64, 64), IGNORE)
    corrections[:, 10:14, 10:14] = BG  # background strokes on a map sure of foreground
    far = torch.ones(64, 64, dtype=torch.bool)
    far[:30, :30] = False

    def drift(keep_fg: float) -> float:
        model = _model()
        with torch.no_grad():
            model.decoder.segmentation.bias.copy_(torch.tensor([-2.5, 2.5]))  # p(fg) > 0.99
            logits = model.forward_heads(model.normalize(images)).fcam
        assert bool((torch.softmax(logits, 1)[:, 1] > 0.9).all())
        before = logits[:, 1] - logits[:, 0]  # log-odds: probabilities this sure barely move
        config = TrainConfig(
            steps=20, batch_size=2, lr=3e-3, heads=("fcam",), seeds_per_class=0,
            keep_weight=1.0, keep_fg=keep_fg,
        )  # fmt: skip
        train(model, TrainData(images, torch.ones(len(images), dtype=torch.long), corrections),
              "heads", config)  # fmt: skip
        with torch.no_grad():
            logits = model.forward_heads(model.normalize(images)).fcam
        return float((before - (logits[:, 1] - logits[:, 0]))[:, far].abs().mean())

    loose, held = drift(0.0), drift(4.0)
    assert loose > 0.05 and held < 0.7 * loose, (held, loose)


def test_same_seed_same_weights_other_seed_other_weights() -> None:
    data, _ = _toy()
    runs = []
    for seed in (3, 3, 4):
        model = _model()
        train(model, data, "fcam", TrainConfig(epochs=1, batch_size=8, seed=seed, cam_method="cam"))
        runs.append(_weights(model.decoder))
    assert _same(runs[0], runs[1]) and not _same(runs[0], runs[2])


def test_cancel_then_resume_ends_with_the_weights_of_a_straight_run(tmp_path: Path) -> None:
    data, _ = _toy()
    config = TrainConfig(epochs=3, batch_size=8, cam_method="cam")
    straight = _model()
    train(straight, data, "fcam", config)

    ckpt = tmp_path / "f.safetensors"
    steps = []
    stopped = train(
        _model(),
        data,
        "fcam",
        config,
        checkpoint=ckpt,
        progress=steps.append,
        should_stop=lambda: len(steps) == 3,
    )  # epoch 1 has 2 steps
    assert stopped.cancelled and stopped.epochs_done == 1 and stopped.steps_done == 3
    saved = wsol.load_model(ckpt)  # the last finished epoch, loadable
    assert all(torch.isfinite(p).all() for p in saved.parameters())

    resumed = _model()  # as in a new process: the weights come from the checkpoint
    result = train(resumed, data, "fcam", config, checkpoint=ckpt)
    assert result.epochs_done == 3 and result.steps_done == 4  # epochs 2 and 3 only
    assert _same(_weights(resumed.decoder), _weights(straight.decoder))
    # Nor do other start weights or other data, with the same settings: the finished
    # run's state is not theirs, so they train from the model given.
    changed = _model()
    with torch.no_grad():
        changed.decoder.segmentation.bias.add_(0.5)
    assert train(changed, data, "fcam", config, checkpoint=ckpt).steps_done == 6
    other_data, _ = _toy(seed=1)
    assert train(_model(), other_data, "fcam", config, checkpoint=ckpt).steps_done == 6
    # Other settings do not resume: a straight run from the model given.
    other = train(
        _model(),
        data,
        "fcam",
        TrainConfig(epochs=1, batch_size=8, lr=5e-4, cam_method="cam"),
        checkpoint=ckpt,
    )
    assert other.steps_done == 2


def test_a_non_finite_loss_stops_with_a_clear_error_and_sane_weights() -> None:
    data, _ = _toy()
    model = _model()
    bn = next(m for m in model.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn.running_var.fill_(-1.0)  # a corrupt checkpoint: the frozen encoder yields NaN
    decoder = _weights(model.decoder)
    with pytest.raises(TrainingError, match="fcam: loss is not finite at epoch 1, step 1"):
        train(model, data, "fcam", TrainConfig(epochs=1, batch_size=8, cam_method="cam"))
    assert _same(decoder, _weights(model.decoder))


def test_bad_arguments() -> None:
    data, _ = _toy(n=2)
    with pytest.raises(wsol.InputError, match="unknown stage"):
        train(_model(), data, "everything")
    with pytest.raises(wsol.InputError, match="heads must be"):
        train(_model(), data, "heads", TrainConfig(heads=("decoder",)))
    with pytest.raises(wsol.InputError, match="one label per image"):
        TrainData(data.images, torch.zeros(3, dtype=torch.long))


def test_a_step_that_breaks_the_weights_is_undone() -> None:
    # An absurd learning rate: the first step is finite, the weights it leaves give a
    # non-finite loss; the run must fall back to the weights before that step.
    data, _ = _toy()
    model = _model()
    decoder = _weights(model.decoder)
    with pytest.raises(TrainingError, match="fcam: loss is not finite at epoch 1, step 2"):
        train(model, data, "fcam", TrainConfig(epochs=1, batch_size=4, lr=1e30, cam_method="cam"))
    assert all(torch.isfinite(w).all() for w in _weights(model.decoder))
    assert _same(decoder, _weights(model.decoder))


def test_heads_round_in_cpu_bfloat16_learns_the_strokes() -> None:
    # The app's round runs in bfloat16 on CPUs that have it (cpu_precision="auto"):
    # the strokes must pull the map as in float32, with float32 weights kept.
    data, _ = _toy(n=4)
    images = data.images[data.labels == 1]
    corrections = torch.full((len(images), 64, 64), IGNORE)
    corrections[:, 10:14, 10:14] = BG

    def round_(precision: str) -> tuple[torch.Tensor, list[torch.Tensor]]:
        model = _model()
        config = TrainConfig(
            steps=20, batch_size=2, lr=3e-3, heads=("fcam",), seeds_per_class=0,
            cpu_precision=precision,
        )  # fmt: skip
        train(model, TrainData(images, torch.ones(len(images), dtype=torch.long), corrections),
              "heads", config)  # fmt: skip
        fg = _fcam_foreground(model, images)
        return fg, _weights(model.decoder)

    model = _model()
    before = _fcam_foreground(model, images)
    full, full_weights = round_("float32")
    low, low_weights = round_("bfloat16")
    assert all(w.dtype == torch.float32 for w in low_weights)
    assert not _same(full_weights, low_weights)  # it did run in bfloat16
    stroke = (slice(None), slice(10, 14), slice(10, 14))
    pull_full = float((before - full)[stroke].mean())
    pull_low = float((before - low)[stroke].mean())
    far = torch.ones(64, 64, dtype=torch.bool)
    far[:30, :30] = False
    drift_full = float((full - before)[:, far].abs().mean())
    drift_low = float((low - before)[:, far].abs().mean())
    # In both, the map moves most where it was painted. (On this random decoder the
    # bfloat16 round moves the map about 3x as much everywhere: Adam turns rounding noise
    # in tiny gradients into full-size steps. On trained models the correction benchmark
    # gives the same Dice gain in both precisions; docs/BENCHMARKS.md.)
    assert pull_full > 0.05 and drift_full < 0.7 * pull_full, (pull_full, drift_full)
    assert pull_low > 0.05 and drift_low < 0.7 * pull_low, (pull_low, drift_low)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_every_stage_runs_on_cuda_in_float16_and_saves_loadable_weights(tmp_path: Path) -> None:
    # On CUDA every stage runs under float16 autocast with a scaled loss; the weights
    # must stay float32 on the GPU, and the heads round must still follow the strokes.
    data, _ = _toy(n=8)
    model = _model().cuda()
    for stage, config in (
        ("classifier", TrainConfig(epochs=1, batch_size=4)),
        ("pixelcam", TrainConfig(epochs=1, batch_size=4, lr=1e-4, cam_method="cam")),
        ("fcam", TrainConfig(epochs=1, batch_size=4, cam_method="cam")),
    ):
        result = train(model, data, stage, config)
        assert all(torch.isfinite(torch.tensor(v)) for v in result.history[-1].values()), stage
    assert all(p.is_cuda and p.dtype == torch.float32 for p in model.parameters())
    images = data.images[data.labels == 1]
    corrections = torch.full((len(images), 64, 64), IGNORE)
    corrections[:, 10:14, 10:14] = BG
    before = _fcam_foreground(model, images.cuda())
    config = TrainConfig(steps=20, batch_size=2, lr=3e-3, heads=("fcam",), seeds_per_class=0)
    heads = TrainData(images, torch.ones(len(images), dtype=torch.long), corrections)
    train(model, heads, "heads", config)
    after = _fcam_foreground(model, images.cuda())
    assert float((before - after)[:, 10:14, 10:14].mean()) > 0.05
    model.save(tmp_path / "m.safetensors")
    loaded = wsol.load_model(tmp_path / "m.safetensors").cuda()
    torch.testing.assert_close(_fcam_foreground(loaded, images.cuda()), after)


def test_fine_tune_defaults_limit_a_round_by_time_not_by_machine() -> None:
    from wsol.session import FINE_TUNE, SessionState

    # Every machine gets up to 40 steps, as many as fit 4.5 s (TrainConfig.heads_seconds).
    assert FINE_TUNE["steps"] == 40 and FINE_TUNE["seconds"] == 4.5
    assert SessionState(slide="s.svs").fine_tune == FINE_TUNE
    # A session saved with its own steps keeps them, and gets the limit it lacked.
    older = SessionState(slide="s.svs", fine_tune={"steps": 20}).fine_tune
    assert older["steps"] == 20 and older["seconds"] == 4.5


def _painted_region(size: int = 256) -> tuple[TrainData, torch.Tensor, list[tuple[int, int]]]:
    """One lesion image of ``size`` px with a large background block and ten small
    foreground dots painted; returns the data, its corrections and the dots."""
    data, _ = _toy(n=2, size=size)
    corrections = torch.full((1, size, size), IGNORE)
    corrections[0, 100:200, 100:200] = BG
    dots = [(10 + 20 * k, 20) for k in range(10)]
    for y, x in dots:
        corrections[0, y : y + 2, x : x + 2] = FG
    return TrainData(data.images[1:], data.labels[1:], corrections), corrections, dots


def test_heads_windows_go_to_every_stroke_in_turn() -> None:
    # The block holds 10 000 painted pixels, the dots 40: windows centred on painted
    # pixels drawn at random would nearly all land on the block. In turn, every stroke
    # gets one window in each cycle of eleven.
    from scipy import ndimage

    from wsol.train.loop import _Trainer

    data, corrections, _ = _painted_region()
    config = TrainConfig(heads=("fcam",), heads_focus=1.0, heads_crop=64)
    trainer = _Trainer(_model(), data, "heads", config)
    areas, count = ndimage.label((corrections[0] != IGNORE).numpy())
    assert count == 11
    gen = torch.Generator().manual_seed(0)
    index = torch.tensor([0])
    hits = [areas[trainer._focus_centre(index, corrections, gen)] for _ in range(22)]
    assert sorted(hits[:11]) == list(range(1, 12)), hits
    assert sorted(hits[11:]) == list(range(1, 12)), hits
    # With no stroke painted, every window is drawn anywhere.
    none = torch.full_like(corrections, IGNORE)
    assert trainer._focus_centre(torch.tensor([1]), none, gen) is None


def test_heads_windows_beyond_the_first_are_drawn_anywhere_and_all_train() -> None:
    from wsol.train.loop import _Trainer

    data, corrections, dots = _painted_region()
    corrections[0, 100:200, 100:200] = IGNORE  # the dots alone
    model = _model()
    config = TrainConfig(heads=("fcam",), heads_focus=1.0, heads_crop=64, heads_windows=3)
    trainer = _Trainer(model, TrainData(data.images, data.labels, corrections), "heads", config)
    images = data.images.float() / 255
    with torch.no_grad():
        features = model.forward_features(model.normalize(data.images))
    maps = torch.rand(1, 256, 256)
    gen = torch.Generator().manual_seed(0)
    unpainted_windows = 0
    for _ in range(8):
        out = trainer._crop(torch.tensor([0]), images, maps, corrections, features, {}, gen)
        crops, _, painted, feats, _ = out
        assert crops.shape == (3, 3, 64, 64) and painted.shape == (3, 64, 64)
        assert [f.shape[0] for f in feats] == [3] * len(feats)
        assert (painted[0] == FG).any()  # the first window is on a dot...
        unpainted_windows += int((painted[1:] == IGNORE).flatten(1).all(1).sum())
    # ...the others are not tied to the strokes: most miss the dots' column.
    assert unpainted_windows >= 8, unpainted_windows
    # A round with three windows a step runs end to end and pulls the dots to foreground.
    before = _fcam_foreground(model, data.images)
    config.steps, config.lr, config.seeds_per_class, config.keep_weight = 15, 3e-3, 0, 0.0
    train(model, TrainData(data.images, data.labels, corrections), "heads", config)
    after = _fcam_foreground(model, data.images)
    on_dots = torch.zeros(256, 256, dtype=torch.bool)
    for y, x in dots:
        on_dots[y : y + 2, x : x + 2] = True
    assert float((after - before)[0][on_dots].mean()) > 0.05


def test_a_heads_window_is_a_contiguous_copy_of_the_region() -> None:
    # The decoder's backward runs about 1.3x slower on strided views of the cached
    # features, so a window's tensors are copies, equal to the region's pixels there.
    from wsol.train.loop import _Trainer

    data, corrections, _ = _painted_region()
    model = _model()
    config = TrainConfig(heads=("fcam",), heads_focus=0.0, heads_crop=64)
    trainer = _Trainer(model, data, "heads", config)
    images = data.images.float() / 255
    with torch.no_grad():
        features = model.forward_features(model.normalize(data.images))
    keep = {"fcam": torch.rand(1, 2, 256, 256)}
    gen = torch.Generator().manual_seed(0)
    crops, _, _, feats, held = trainer._crop(
        torch.tensor([0]), images, torch.rand(1, 256, 256), corrections, features, keep, gen
    )
    assert crops.is_contiguous() and held["fcam"].is_contiguous()
    assert all(f.is_contiguous() for f in feats)
    # Where the window lies: find the image crop in the region, then every tap agrees.
    matches = [
        (y, x)
        for y in range(0, 256 - 63, 32)
        for x in range(0, 256 - 63, 32)
        if torch.equal(images[..., y : y + 64, x : x + 64], crops)
    ]
    assert len(matches) == 1
    y, x = matches[0]
    assert torch.equal(held["fcam"], keep["fcam"][..., y : y + 64, x : x + 64])
    for f, cut, r in zip(features, feats, model.feature_reductions, strict=True):
        assert torch.equal(cut, f[..., y // r : (y + 64) // r, x // r : (x + 64) // r])


def test_heads_round_ends_on_the_checked_weights_that_fit_the_whole_region_best(
    tmp_path: Path,
) -> None:
    import copy

    from wsol.losses import keep_loss, partial_cross_entropy

    data, corrections, _ = _painted_region()
    model = _model()
    size = (256, 256)
    with torch.no_grad():
        features = model.forward_features(model.normalize(data.images))
        held = torch.softmax(model.fcam_logits(features, size), 1)
    steps = 12
    # Small windows and a high learning rate: the whole region's fit swings from step to step.
    config = TrainConfig(
        steps=steps, lr=1e-2, heads=("fcam",), cam_method="fcam", heads_crop=128, keep_weight=3.0
    )

    def round_with(check_every: int):
        trial = copy.deepcopy(model)
        snapshots = []
        config.heads_check_every = check_every
        result = train(
            trial,
            data,
            "heads",
            config,
            checkpoint=tmp_path / f"every{check_every}.safetensors",
            progress=lambda _: snapshots.append(_weights(trial.decoder)),
        )
        return trial, result, snapshots

    @torch.no_grad()
    def whole_objective(weights) -> float:
        probe = copy.deepcopy(model)
        for p, w in zip(probe.decoder.parameters(), weights, strict=True):
            p.copy_(w)
        logits = probe.fcam_logits(features, size)
        unpainted = corrections == IGNORE
        keep = keep_loss(logits, held, unpainted, fg_extra=config.keep_fg)
        return float(partial_cross_entropy(logits, corrections)) + 3.0 * float(keep)

    trial, result, snapshots = round_with(0)  # no checks: the round ends on its last step
    assert result.kept_step is None and _same(_weights(trial.decoder), snapshots[-1])

    scores = [whole_objective(w) for w in snapshots]
    # Checks at least every 3 steps here: a check's 256 x 256 pixels stay under 1.5x the
    # 3 steps' 128 x 128 windows.
    for every, interval in ((1, 3), (4, 4)):
        trial, result, checked = round_with(every)
        assert all(_same(a, b) for a, b in zip(checked, snapshots, strict=True))  # same steps
        candidates = [s for s in range(1, steps + 1) if s % interval == 0 or s == steps]
        best = min(candidates, key=lambda s: scores[s - 1])
        assert best != steps, scores  # the test needs a round whose last step is not its best
        assert result.kept_step == best
        assert _same(_weights(trial.decoder), snapshots[best - 1])
        saved = wsol.load_model(tmp_path / f"every{every}.safetensors")  # the checkpoint too
        assert _same(_weights(saved.decoder), snapshots[best - 1])


def test_whole_region_checks_are_spaced_out_on_large_regions() -> None:
    from wsol.train.loop import _Trainer

    data, _, _ = _painted_region(size=512)
    model = _model()
    for every, crop, interval in ((5, 192, 5), (5, 128, 11), (0, 192, 0), (30, 192, 30)):
        config = TrainConfig(heads=("fcam",), heads_crop=crop, heads_check_every=every)
        assert _Trainer(model, data, "heads", config)._check_interval() == interval
    config = TrainConfig(heads_check_every=5, epochs=1)
    assert _Trainer(model, data, "fcam", config)._check_interval() == 0  # heads rounds only
    # Checks 11 steps apart: in a round of 10 or 12 the last step would be the only one
    # (step 11 is too close to 12 to differ from it), so none is run; in 20, 11 and 20.
    config = TrainConfig(heads=("fcam",), heads_crop=128, heads_check_every=5)
    trainer = _Trainer(model, data, "heads", config)
    assert [sorted(trainer._check_steps(n)) for n in (10, 12, 20)] == [[], [], [11, 20]]
    assert sorted(
        _Trainer(model, data, "heads", replace(config, heads_crop=192))._check_steps(40)
    ) == [5, 10, 15, 20, 25, 30, 35, 40]
    config.steps = 12
    assert train(model, data, "heads", config).kept_step is None


def test_a_heads_round_under_a_time_limit_ends_early(monkeypatch) -> None:
    import copy
    import time

    from wsol.train import loop

    data, _, _ = _painted_region()
    model = _model()
    config = TrainConfig(
        steps=30, heads=("fcam",), cam_method="fcam", heads_crop=128, heads_check_every=4
    )
    started = time.perf_counter()
    every_step = train(copy.deepcopy(model), data, "heads", config)
    whole = time.perf_counter() - started
    assert every_step.steps_done == 30 and not every_step.timed_out
    assert every_step.kept_step is not None

    def limited(seconds: float):
        config.heads_seconds = seconds
        trial, snapshots = copy.deepcopy(model), []
        started = time.perf_counter()
        result = train(
            trial,
            data,
            "heads",
            config,
            progress=lambda _: snapshots.append(_weights(trial.decoder)),
        )
        return result, time.perf_counter() - started, _weights(trial.decoder), snapshots

    # Time to spare: every step and every check, as without a limit.
    result, _, _, _ = limited(10 * whole)
    assert not result.timed_out and result.steps_done == 30
    assert result.kept_step == every_step.kept_step

    # 40% of the round's time, as on a machine 2.5x slower: after 3 steps the round sees
    # that its steps and checks cannot all fit, drops the checks for steps and ends on
    # its last step within the limit.
    result, took, weights, snapshots = limited(0.4 * whole)
    assert result.timed_out and 3 <= result.steps_done < 30
    assert result.kept_step is None and _same(weights, snapshots[-1])
    assert took <= config.heads_seconds + 0.25 * whole + 2 * whole / 30, (took, whole)

    # Were the checks kept (the decision never made), the round would still end on
    # checked weights: every 4th step's, or its last step's, which gets the check that
    # the limit kept room for.
    monkeypatch.setattr(loop, "CHECKS_DECIDED_AFTER", 10**6)
    result, _, weights, snapshots = limited(0.4 * whole)
    assert result.timed_out and 1 <= result.steps_done < 30
    assert result.kept_step in {*range(4, result.steps_done + 1, 4), result.steps_done}
    assert _same(weights, snapshots[result.kept_step - 1])

    # Without corrections there is nothing to check: the limit alone ends the round.
    config.heads_seconds = 1e-9
    result = train(copy.deepcopy(model), TrainData(data.images, data.labels), "heads", config)
    assert result.timed_out and result.steps_done == 1 and result.kept_step is None


def test_the_round_clock_makes_room_for_a_step_and_its_check() -> None:
    import time

    from wsol.train.loop import _RoundClock

    def clock(left: float, steps: list[float], check: float | None = None) -> _RoundClock:
        return _RoundClock(time.perf_counter() + left, 2.0, steps, check)

    assert clock(-1.0, []).room_for_step(checked=True)  # a round takes at least one step
    # The first step (5 s: one-off set-up) is left out; a step is 0.1 s, a check
    # unmeasured is guessed at 2 steps.
    assert clock(0.5, [5.0, 0.1, 0.1]).room_for_step(checked=True)
    assert not clock(0.25, [5.0, 0.1, 0.1]).room_for_step(checked=True)
    assert clock(0.25, [5.0, 0.1, 0.1]).room_for_step(checked=False)
    assert not clock(0.5, [5.0, 0.1, 0.1], check=0.45).room_for_step(checked=True)  # measured
    assert not clock(1.0, [5.0]).room_for_step(checked=False)  # one step: its own time
    # The rest of a round: 5 steps and 2 checks take 0.9 s, 8 steps and 2 checks 1.2 s.
    assert clock(1.0, [5.0, 0.1, 0.1], check=0.2).fits(5, 2)
    assert not clock(1.0, [5.0, 0.1, 0.1], check=0.2).fits(8, 2)
    # What a progress bar is told the round's steps will be: the 3 done and those that
    # fit in the time left (0.75 s: 7 steps, or 5 and the last check), at most the cap.
    assert clock(0.75, [5.0, 0.1, 0.1]).expected_steps(40, checked=False) == 3 + 7
    assert clock(0.75, [5.0, 0.1, 0.1], check=0.2).expected_steps(40, checked=True) == 3 + 5
    assert clock(60.0, [5.0, 0.1, 0.1]).expected_steps(40, checked=False) == 40
    assert clock(-1.0, [5.0, 0.1, 0.1]).expected_steps(40, checked=True) == 3  # past it


def test_the_time_limit_is_per_512_px_square_of_images() -> None:
    from wsol.train.loop import _Trainer

    model = _model()
    config = TrainConfig(heads=("fcam",), heads_seconds=4.0)
    for size, limit in ((256, 4.0), (512, 4.0), (1024, 16.0)):
        data, _, _ = _painted_region(size=size)
        assert _Trainer(model, data, "heads", config)._clock(10.0).deadline == 10.0 + limit
    config.heads_seconds = None
    assert _Trainer(model, data, "heads", config)._clock(10.0) is None


def test_a_guided_round_takes_as_many_steps_as_its_heads_round() -> None:
    from wsol.region import fine_tune

    data, corrections, _ = _painted_region()
    rgb = data.images[0].permute(1, 2, 0).numpy()
    painted = (corrections[0] + 1).numpy().astype("uint8")  # napari's values: 0 none
    config = TrainConfig(
        steps=30, heads=("fcam",), cam_method="fcam", heads_crop=128, heads_seconds=1e-9
    )
    # The limit ends the heads round after one step; the encoder's guided steps follow
    # it, rather than taking all 30 on a machine that could not afford the heads' 30.
    result = fine_tune(_model(), rgb, 1, painted, config, guide=True)
    assert result.stage == "heads+guided" and result.steps_done == 1 + 1
