"""Training stages of the shared-encoder model: classifier, F-CAM, PixelCAM, heads.

Every stage reports progress per step, stops between steps when asked (the last good
weights stay on disk), resumes from its last finished epoch, is deterministic under a
seed (a ``heads`` round given a time limit, ``heads_seconds``, takes as many steps as
the machine affords) and refuses to go on from a non-finite loss.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage

from wsol.atomic import atomic_path
from wsol.cams import compute_many
from wsol.checkpoint import model_fingerprint, tensor_bytes
from wsol.errors import InputError, WSOLError
from wsol.guidance import cam_logits, guidance_loss
from wsol.losses import BarrierSchedule, crf_loss, keep_loss, partial_cross_entropy, size_loss
from wsol.model import WSOLModel
from wsol.precision import autocast_dtype
from wsol.pseudo import BG, FG, IGNORE, apply_corrections, sample_seeds
from wsol.train.augment import apply_dihedral, stain_jitter
from wsol.train.reuse import RoundCache

STAGES = ("classifier", "fcam", "pixelcam", "heads", "guided")
CORRECTIONS_DIR = "corrections"


class TrainingError(WSOLError, RuntimeError):
    """Training cannot go on (e.g. a loss became NaN); the last good weights are kept."""


@dataclass
class TrainData:
    """Training images in memory: ``uint8 [N, 3, S, S]``, labels, optional corrections.

    ``corrections`` (long ``[N, S, S]``, :data:`wsol.pseudo.IGNORE` where unpainted) are
    the user's fg/bg strokes, or whole ground-truth masks of a few fully labelled
    images; they are kept apart from the seeds and override them. ``present`` (bool
    ``[N, C]``) lists every class of each image for multi-label models; ``labels``
    then holds the first.
    """

    images: torch.Tensor
    labels: torch.Tensor
    corrections: torch.Tensor | None = None
    present: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[1] != 3 or self.images.dtype != torch.uint8:
            raise InputError(f"images must be uint8 [N, 3, S, S], got {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise InputError(f"need one label per image, got {tuple(self.labels.shape)}")
        if self.corrections is not None and self.corrections.shape != (
            self.images.shape[0],
            *self.images.shape[-2:],
        ):
            raise InputError(f"corrections {tuple(self.corrections.shape)} do not fit the images")
        if self.present is not None and (
            self.present.ndim != 2 or self.present.shape[0] != self.images.shape[0]
        ):
            raise InputError(f"present must be [N, classes], got {tuple(self.present.shape)}")

    def __len__(self) -> int:
        return self.images.shape[0]

    @classmethod
    def from_dataset(cls, dataset, size: int, masks_as_labels: bool = False) -> TrainData:
        """All of a :class:`wsol.data.WSOLDataset`, resized to ``size``, with its corrections.

        Corrections are read from ``<dataset>/corrections/<image stem>.png`` when present:
        0 = not painted, 1 = background, 2 = foreground (napari Labels values), resized
        with nearest neighbours. With ``masks_as_labels`` the ground-truth masks of the
        images that have one (``masks/``) become full pixel labels (fully labelled
        images, e.g. for the ``guided`` stage); painted corrections still override them.
        """
        images, labels, masks, shapes = [], [], [], []
        for batch in dataset.batches(64, size):
            images.append(batch.images)
            labels.append(batch.labels)
            shapes += batch.shapes
            if masks_as_labels:
                truth = torch.where(batch.masks, FG, BG)
                masks.append(torch.where(batch.has_mask[:, None, None], truth, IGNORE))
        folder = Path(dataset.root) / CORRECTIONS_DIR
        corrections = torch.cat(masks).long() if masks_as_labels else None
        if folder.is_dir():
            if corrections is None:
                corrections = torch.full((len(dataset), size, size), IGNORE, dtype=torch.long)
            for i, sample in enumerate(dataset.samples):
                path = folder / f"{sample.image.stem}.png"
                if not path.exists():
                    continue
                painted = torch.from_numpy(_read_labels(path))
                if tuple(painted.shape) != tuple(shapes[i]):
                    (h, w), (ph, pw) = shapes[i], painted.shape
                    raise InputError(
                        f"{path}: corrections are {pw}x{ph} but image "
                        f"{sample.image.name} is {w}x{h}"
                    )
                painted = F.interpolate(
                    painted[None, None].float(), size=(size, size), mode="nearest"
                )[0, 0].long()
                if painted.max() > 2:
                    raise InputError(f"{path}: corrections must be 0 (none), 1 (bg), 2 (fg)")
                # 0 -> keep, 1 -> BG (0), 2 -> FG (1)
                corrections[i] = torch.where(painted > 0, painted - 1, corrections[i])
        present = dataset.present() if getattr(dataset, "multilabel", False) else None
        return cls(torch.cat(images), torch.cat(labels), corrections, present)


@dataclass
class TrainConfig:
    """Settings of a stage; stored beside the checkpoint so a resume uses the same ones."""

    epochs: int = 10
    steps: int | None = None  # "heads": optimizer steps instead of epochs
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    augment: bool = True
    stain_jitter: float = 0.05
    cam_method: str = "gradcampp"  # where seeds come from
    seeds_per_class: int = 64
    bg_fraction: float = 0.3
    erode: int = 0
    fg_sampling: str = "uniform"
    crf_weight: float = 1.0
    crf_radius: int = 5
    crf_scale: float = 0.5
    size_weight: float = 0.1
    barrier_t0: float = 1.0
    barrier_factor: float = 1.01
    barrier_cap: float = 10.0
    pixel_weight: float = 1.0
    heads: tuple[str, ...] = ("fcam", "pixelcam")
    heads_crop: int | None = 256  # "heads": train on windows of this size per step
    keep_weight: float = 3.0  # "heads": hold each head's earlier map where nothing is painted
    keep_fg: float = 2.0  # "heads": extra hold where that map is > 0.9 foreground
    heads_focus: float = 0.75  # "heads": share of windows centred on a stroke, strokes in turn
    heads_windows: int = 1  # "heads": windows per step; all but the first drawn at random
    # "heads": every this many steps (and at the last) score the strokes + keep terms on
    # the whole images, and end the round on the weights that scored best (0: the last)
    heads_check_every: int = 5
    # "heads": end the round on a step boundary once another step (and the check that
    # follows it) would take it past this many seconds, per 512 x 512 px of images;
    # None: all ``steps``. The round then depends on the machine's speed, not only the seed.
    heads_seconds: float | None = None
    negative_class: int | None = -1  # -1: class 0 of a two-class model, else none
    kernel_usage: float | None = None  # "classifier"/"guided": set Kernel Usage Regularization
    guide_method: str = "cam"  # "guided": the differentiable map the pixel labels act on
    guide_weight: float = 1.0
    labelled_fraction: float = 0.25  # "guided"/"heads": batch share from pixel-labelled images
    amp: bool = True  # float16 autocast on CUDA
    # On a CPU: "float32", or bfloat16 autocast ("bfloat16"; "auto": only where the CPU
    # has native bfloat16, see wsol.precision). Weights and optimizer stay float32.
    cpu_precision: str = "float32"


#: ``heads_seconds`` is the limit for this many pixels of images; more take longer in
#: proportion (their encoding and checks do), fewer get the same limit.
LIMIT_AREA = 512 * 512
#: A whole-image check's time per step's time, per pixel of images per window pixel,
#: until a check has been timed (0.19 measured for resnet18 in float32 on a CPU).
CHECK_PER_STEP_PIXEL = 0.25
#: After this many steps a round under a time limit knows its step time; if its steps
#: and checks will not all fit, it drops the checks. Measured on a 2-core AVX2 CPU
#: (resnet18, float32): 11 steps with checks gained 3.7 Dice points, 16 without 6.3.
CHECKS_DECIDED_AFTER = 3


@dataclass
class _RoundClock:
    """Whether a ``heads`` round under a time limit has room for one more step.

    A step's time is the median of the round's latest steps, its first left out when
    there are more (it carries one-off set-up); a check's is the last one's, or a guess
    from its pixels before any has run. Room for a step means room for the step and,
    when the round checks, for a check after it: either one is due there, or the step
    turns out to be the round's last and gets one.
    """

    deadline: float
    check_guess: float  # a check's time in steps, until one is timed
    steps: list[float] = field(default_factory=list)
    check: float | None = None

    def room_for_step(self, checked: bool) -> bool:
        if not self.steps:
            return True  # a round takes at least one step
        return self.fits(1, 1 if checked else 0)

    def fits(self, steps: int, checks: int) -> bool:
        """Whether ``steps`` more steps and ``checks`` checks end before the deadline."""
        step, check = self._times()
        return time.perf_counter() + steps * step + checks * check <= self.deadline

    def expected_steps(self, cap: int, checked: bool) -> int:
        """The round's steps in all, as far as the time left tells: for progress bars,
        which would otherwise stop short of their end when the limit ends a round."""
        step, check = self._times()
        if step <= 0:
            return cap
        left = self.deadline - time.perf_counter() - (check if checked else 0.0)
        return min(cap, len(self.steps) + max(0, int(left / step)))

    def _times(self) -> tuple[float, float]:
        recent = self.steps[1:] or self.steps
        step = float(np.median(recent[-8:])) if recent else 0.0
        return step, self.check if self.check is not None else self.check_guess * step


@dataclass
class TrainProgress:
    stage: str
    epoch: int
    epochs: int
    step: int  # within the epoch
    steps: int  # in the epoch; under ``heads_seconds``, as many as the time left allows
    losses: dict[str, float]


@dataclass
class TrainResult:
    stage: str
    epochs_done: int
    steps_done: int
    seconds: float
    cancelled: bool = False
    history: list[dict[str, float]] = field(default_factory=list)  # mean losses per epoch
    kept_step: int | None = None  # "heads" with checks: the step whose weights were kept
    timed_out: bool = False  # "heads": ended before ``steps`` on ``heads_seconds``


def train(
    model: WSOLModel,
    data: TrainData,
    stage: str,
    config: TrainConfig | None = None,
    *,
    checkpoint: str | Path | None = None,
    resume: bool = True,
    progress: Callable[[TrainProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    cache: RoundCache | None = None,
) -> TrainResult:
    """Train one stage in place on ``model``.

    Stages
    ------
    ``classifier``
        Encoder + classifier from image labels (cross-entropy, flips, 90° turns, stain
        jitter).
    ``fcam``
        Encoder and classifier frozen; the U-Net decoder learns from seeds sampled each
        step from the classifier's ``cam_method`` maps (Otsu foreground, lowest
        ``bg_fraction`` background; images of ``negative_class`` give background only)
        plus the user's corrections: partial cross-entropy + CRF loss + absolute-size
        log-barrier (``t`` from ``barrier_t0``, times ``barrier_factor`` per epoch).
    ``pixelcam``
        Encoder, classifier and pixel head jointly: image cross-entropy + partial
        cross-entropy of the pixel head on seeds from the current CAMs.
    ``heads``
        Fine-tunes only the heads in ``config.heads`` for ``config.steps`` steps on
        encoder features computed once: what the napari app runs after corrections.
    ``guided``
        Encoder + classifier with the image loss on every image plus, on images with
        pixel labels (``data.corrections``), a class-balanced partial BCE imposed on
        the classifier's own differentiable ``guide_method`` map
        (:mod:`wsol.guidance`); ``labelled_fraction`` of every batch is drawn from the
        labelled images. Afterwards ``cam`` / ``gradcam`` are the segmentation.

    The image loss is cross-entropy, or binary cross-entropy over ``data.present``
    for multi-label models (``model.config.multilabel``). ``kernel_usage`` switches
    Kernel Usage Regularization of the classifier on (or off with 0) for the
    ``classifier`` and ``guided`` stages; it is saved in the model's config.

    ``cache`` (``heads`` only) carries the encoder's features and the heads' maps from
    one round to the next on the same images (:class:`wsol.train.reuse.RoundCache`): a
    round given the cache of the round before skips recomputing what has not changed,
    and ends with the same weights as without it.

    With ``checkpoint``, weights are saved there (atomically) after every epoch, with the
    optimizer state beside them (``<checkpoint>.state.pt``). A stop between steps leaves
    the checkpoint at the last finished epoch (the model in memory keeps its newer,
    finite weights); a later call with the same stage and settings resumes after that
    epoch and ends with the same weights as an uninterrupted run.

    Raises
    ------
    TrainingError
        When a loss is not finite; the weights are put back to the last good step.
    """
    if stage not in STAGES:
        raise InputError(f"unknown stage {stage!r}; choose from {', '.join(STAGES)}")
    config = config or TrainConfig()
    trainer = _Trainer(model, data, stage, config, cache if stage == "heads" else None)
    return trainer.run(checkpoint, resume, progress, should_stop)


class _Trainer:
    def __init__(
        self,
        model: WSOLModel,
        data: TrainData,
        stage: str,
        config: TrainConfig,
        cache: RoundCache | None = None,
    ) -> None:
        self.model, self.data, self.stage, self.config = model, data, stage, config
        self.cache = cache
        self._check_probs: dict[str, torch.Tensor] = {}  # the last check's maps (cache)
        self.device = model.device
        if self.device.type == "cuda":
            self.amp, self.amp_dtype = config.amp, torch.float16
        else:
            cpu_dtype = autocast_dtype(self.device, config.cpu_precision)
            self.amp, self.amp_dtype = cpu_dtype is not None, cpu_dtype
        self.barrier = BarrierSchedule(config.barrier_t0, config.barrier_factor, config.barrier_cap)
        negative = config.negative_class
        if negative == -1:
            negative = 0 if model.config.num_classes == 2 else None
        self.negative = negative
        if config.kernel_usage is not None and stage in ("classifier", "guided"):
            model.config.kernel_usage = float(config.kernel_usage)
            model.classifier.kernel_usage = float(config.kernel_usage)
        if model.config.multilabel and data.present is None:
            raise InputError("a multi-label model needs data.present (the classes of each image)")
        self._origin: dict = {}  # start weights and data, with a checkpoint (run)
        self.labelled = (
            torch.zeros(0, dtype=torch.long)
            if data.corrections is None
            else (data.corrections != IGNORE).flatten(1).any(dim=1).nonzero()[:, 0]
        )
        self.modules = self._trainable()
        for p in model.parameters():
            p.requires_grad_(False)
        self.params = [p for m in self.modules for p in m.parameters()]
        for p in self.params:
            p.requires_grad_(True)
        # One fused kernel for all weights instead of a dozen ops per tensor: on a 2-core
        # CPU a step of the F-CAM decoder's 3.2 M weights took 3 ms instead of 8.5.
        self.optimizer = torch.optim.AdamW(
            self.params,
            lr=config.lr,
            weight_decay=config.weight_decay,
            fused=self.device.type in ("cpu", "cuda"),
        )
        # bfloat16 has float32's range: only CUDA's float16 needs its loss scaled.
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.device.type == "cuda")
        self.maps: torch.Tensor | None = None  # fixed seed maps (fcam, heads)
        self.features: list[torch.Tensor] | None = None  # cached features (heads)
        self.keep: dict[str, torch.Tensor] = {}  # each head's probabilities before (heads)
        # "heads": the painted areas of the current batch, and the cycle over them
        self._stroke_key: tuple | None = None
        self._stroke_list: list[torch.Tensor] = []
        self._stroke_turns: list[int] = []

    def _trainable(self) -> list[torch.nn.Module]:
        m = self.model
        if self.stage in ("classifier", "guided"):
            return [m.encoder, m.classifier]
        if self.stage == "fcam":
            return [m.decoder]
        if self.stage == "pixelcam":
            return [m.encoder, m.classifier, m.pixel_head]
        unknown = set(self.config.heads) - {"fcam", "pixelcam"}
        if unknown or not self.config.heads:
            raise InputError(f"heads must be fcam and/or pixelcam, got {self.config.heads}")
        return [m.decoder if h == "fcam" else m.pixel_head for h in self.config.heads]

    # --- the loop ----------------------------------------------------------------------
    def run(self, checkpoint, resume, progress, should_stop) -> TrainResult:
        config, n = self.config, len(self.data)
        if n == 0:
            raise InputError("no training images")
        round_started = time.perf_counter()  # a time limit counts the encoding too
        if checkpoint:
            # What this run starts from and learns on: a checkpoint's state resumes a
            # run only with the same weights and data, not merely the same settings.
            self._origin = {"start": model_fingerprint(self.model), "data": self._data_digest()}
        start_epoch = self._resume(checkpoint) if (checkpoint and resume) else 0
        if self.stage == "heads":
            self._start_heads()
        if self.stage in ("fcam", "heads"):
            self.maps = self._seed_maps()
        if self.stage == "heads":
            epochs = 1
            steps = config.steps or 15
        else:
            epochs = config.epochs
            steps = -(-n // config.batch_size)
        history: list[dict[str, float]] = []
        started = time.perf_counter()
        steps_done, cancelled, epochs_done = 0, False, start_epoch
        good = self._snapshot()
        checks = self._check_steps(steps) if len(self.labelled) else set()
        best_score, best, kept_step, best_probs = math.inf, None, None, {}
        clock, timed_out = self._clock(round_started), False
        for epoch in range(start_epoch, epochs):
            self._set_modes()
            gen = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
            order = self._order(gen, steps)
            sums: dict[str, float] = {}
            taken = 0
            for step, index in enumerate(order):
                if clock is not None and not clock.room_for_step(checked=bool(checks)):
                    break
                step_started = time.perf_counter()
                losses = self._step(index, epoch, gen)
                total = losses["loss"]
                if not torch.isfinite(total):
                    self._restore(good)
                    terms = ", ".join(f"{k} {float(v.detach()):.4g}" for k, v in losses.items())
                    raise TrainingError(
                        f"{self.stage}: loss is not finite at epoch {epoch + 1}, step "
                        f"{step + 1} ({terms}); weights are back at the last good step"
                    )
                self.optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(total).backward()
                # These weights just gave a finite loss: the ones to go back to if the
                # step about to move them yields a non-finite one.
                self._snapshot(into=good)
                self.scaler.step(self.optimizer)
                self.scaler.update()
                values = {k: float(v.detach()) for k, v in losses.items()}
                for k, v in values.items():
                    sums[k] = sums.get(k, 0.0) + v
                steps_done += 1
                taken = step + 1
                if clock is not None:
                    clock.steps.append(time.perf_counter() - step_started)
                    if checks and step + 1 == CHECKS_DECIDED_AFTER:
                        left = len(order) - step - 1
                        due = sum(s > step + 1 for s in checks)
                        if not clock.fits(left, due):
                            # Too slow a machine for every step: the checks' time goes
                            # to steps, and the round ends on its last one as without.
                            checks, best, best_score, kept_step = set(), None, math.inf, None
                            best_probs = {}
                if step + 1 in checks:
                    score = self._timed_check(clock)
                    if score < best_score:
                        best_score, kept_step = score, step + 1
                        best = self._snapshot(into=best)
                        best_probs = self._check_probs
                if progress is not None:
                    expected = len(order)
                    if clock is not None:
                        expected = clock.expected_steps(len(order), bool(checks))
                    progress(
                        TrainProgress(self.stage, epoch + 1, epochs, step + 1, expected, values)
                    )
                if should_stop is not None and should_stop():
                    cancelled = True
                    break
            timed_out = clock is not None and taken < len(order) and not cancelled
            if timed_out and checks and taken and taken not in checks:
                # Time was kept for this check: the last step's weights are a candidate
                # too, and the round ends on the best checked ones as usual.
                score = self._timed_check(clock)
                if score < best_score:
                    best_score, kept_step = score, taken
                    best = self._snapshot(into=best)
                    best_probs = self._check_probs
            history.append({k: v / max(1, taken) for k, v in sums.items()})
            if best is not None:  # before the save below: the checkpoint holds these too
                self._restore(best)
                if self.cache is not None and not cancelled:
                    for h, probs in best_probs.items():  # the next round's held maps
                        self.cache.keep_probs(h, self._head_module(h), probs)
            if cancelled:
                break
            epochs_done = epoch + 1
            if checkpoint:
                self._save(checkpoint, epochs_done)
        for p in self.model.parameters():
            p.requires_grad_(True)
        self.model.eval()
        return TrainResult(
            self.stage,
            epochs_done,
            steps_done,
            time.perf_counter() - started,
            cancelled,
            history,
            kept_step,
            timed_out,
        )

    def _clock(self, started: float) -> _RoundClock | None:
        """The time limit of a ``heads`` round, scaled to its images' area; None: none."""
        seconds = self.config.heads_seconds
        if self.stage != "heads" or not seconds or seconds <= 0:
            return None
        area = self._image_pixels()
        return _RoundClock(
            deadline=started + seconds * max(1.0, area / LIMIT_AREA),
            check_guess=CHECK_PER_STEP_PIXEL * area / self._step_pixels(),
        )

    def _timed_check(self, clock: _RoundClock | None) -> float:
        started = time.perf_counter()
        score = self._whole_objective()
        if clock is not None:
            clock.check = time.perf_counter() - started
        return score

    def _order(self, gen: torch.Generator, steps: int) -> list[torch.Tensor]:
        n, b = len(self.data), self.config.batch_size
        if self.stage == "heads":
            batches = [torch.randperm(n, generator=gen)[:b] for _ in range(steps)]
        else:
            perm = torch.randperm(n, generator=gen)
            batches = [perm[i : i + b] for i in range(0, n, b)]
        extra = round(b * self.config.labelled_fraction)
        if (
            self.stage in ("guided", "heads")
            and len(self.labelled)
            and extra
            and len(self.labelled) < n
        ):
            # A few labelled images among hundreds would meet the loss a few times an
            # epoch; topping every batch up with them makes the guidance steady.
            picks = torch.randint(len(self.labelled), (len(batches), extra), generator=gen)
            batches = [
                torch.cat([bt, self.labelled[p]]) for bt, p in zip(batches, picks, strict=True)
            ]
        return batches

    def _set_modes(self) -> None:
        self.model.eval()  # frozen parts keep their BatchNorm statistics
        if self.stage == "heads":
            # The heads keep theirs too: batches of one region's windows would replace
            # statistics learnt on the whole training set within a few steps and shift
            # every pixel's prediction, which no stroke asked for (docs/BENCHMARKS.md).
            return
        for module in self.modules:
            module.train()

    # --- one step per stage ------------------------------------------------------------
    def _batch(self, index: torch.Tensor, gen: torch.Generator):
        if self.stage == "heads":
            return self._region_batch(index)
        images = self.data.images[index].float() / 255.0
        labels = self.data.labels[index]
        corrections = None
        if self.data.corrections is not None:
            corrections = self.data.corrections[index].long()
        maps = self.maps[index] if self.maps is not None else None
        if self.config.augment and self.stage != "heads":
            codes = torch.randint(0, 8, (len(index),), generator=gen)
            images = apply_dihedral(images, codes)
            images = stain_jitter(images, self.config.stain_jitter, gen)
            if corrections is not None:
                corrections = apply_dihedral(corrections, codes)
            if maps is not None:
                maps = apply_dihedral(maps, codes)
        return (
            images.to(self.device),
            labels.to(self.device),
            None if corrections is None else corrections.to(self.device),
            None if maps is None else maps.to(self.device),
        )

    def _region_batch(self, index: torch.Tensor):
        """A ``heads`` batch as stored (uint8 pixels), on the CPU, for :meth:`_crop`.

        A one-image round (the app's) takes the tensors as they are: indexing, converting
        and normalizing the whole region at every step took 40 ms of a 160-ms step on a
        1108 x 1481-px region (2-core CPU), for a window that is all the step uses.
        """
        whole = torch.equal(index, torch.arange(len(self.data)))

        def pick(t: torch.Tensor | None) -> torch.Tensor | None:
            return t if t is None or whole else t[index]

        corrections = pick(self.data.corrections)
        if corrections is not None:
            corrections = corrections.long()
        return pick(self.data.images), self.data.labels[index], corrections, pick(self.maps)

    def _step(
        self, index: torch.Tensor, epoch: int, gen: torch.Generator
    ) -> dict[str, torch.Tensor]:
        images, labels, corrections, maps = self._batch(index, gen)
        # "heads" works on cached features and crops before it converts anything
        x = None if self.stage == "heads" else self.model.normalize(images)
        size = (images.shape[-2], images.shape[-1])
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
            if self.stage == "classifier":
                logits = self.model.classify(self.model.forward_features(x))
                ce = self._image_loss(logits, index, labels)
                return {"loss": ce, "ce": ce}
            if self.stage == "guided":
                features = self.model.forward_features(x)
                logits = self.model.classify(features)
                ce = self._image_loss(logits, index, labels)
                guide = x.new_zeros(())
                if corrections is not None and (corrections != IGNORE).any():
                    targets = self._guide_targets(labels)
                    pixel = cam_logits(self.model, features, targets, self.config.guide_method)
                    guide = guidance_loss(pixel.float(), corrections)
                total = ce + self.config.guide_weight * guide
                return {"loss": total, "ce": ce, "guide": guide}
            keep, unpainted = {}, None  # "heads": each head's map held where nothing is painted
            if self.stage == "heads":
                # A one-image round (the app's) takes the cached tensors as they are:
                # indexing would copy the whole region's features at every step.
                whole = torch.equal(index, torch.arange(len(self.data)))
                features = [f if whole else f[index] for f in self.features]
                held = self.keep if self.config.keep_weight > 0 else {}
                keep = {h: p if whole else p[index] for h, p in held.items()}
                images, maps, corrections, features, keep = self._crop(
                    index, images, maps, corrections, features, keep, gen
                )
                images = images.to(self.device).float() / 255.0
                maps = maps.to(self.device)
                if corrections is not None:
                    corrections = corrections.to(self.device)
                features = [f.to(self.device) for f in features]
                keep = {h: p.to(self.device) for h, p in keep.items()}
                windows = images.shape[0] // labels.shape[0]
                labels = labels.to(self.device).repeat(windows)  # one per window
                size = (images.shape[-2], images.shape[-1])
                unpainted = None if corrections is None else corrections == IGNORE
            elif self.stage == "fcam":
                with torch.no_grad():
                    features = self.model.forward_features(x)
            else:
                features = self.model.forward_features(x)
            losses: dict[str, torch.Tensor] = {}
            total = torch.zeros((), device=self.device)
            if self.stage == "pixelcam":
                logits = self.model.classify(features)
                losses["ce"] = self._image_loss(logits, index, labels)
                total = total + losses["ce"]
                maps = compute_many(
                    self.model,
                    x,
                    [self.config.cam_method],
                    labels,
                    features=[f.detach() for f in features],
                ).maps[self.config.cam_method]
                self._set_modes()  # compute_many leaves the model in eval mode
            seeds = self._seeds(maps, labels, corrections, gen)
            if self.stage == "fcam" or (self.stage == "heads" and "fcam" in self.config.heads):
                head = self.model.fcam_logits(features, size).float()
                probs = torch.softmax(head, dim=1)
                losses["fcam_pce"] = partial_cross_entropy(head, seeds)
                losses["crf"] = crf_loss(
                    probs, images, radius=self.config.crf_radius, scale=self.config.crf_scale
                )
                positive = self._positive(labels)
                t = self.barrier(epoch)
                losses["size"] = (
                    size_loss(probs[positive], t) if positive.any() else probs.sum() * 0
                )
                total = (
                    total
                    + losses["fcam_pce"]
                    + self.config.crf_weight * losses["crf"]
                    + self.config.size_weight * losses["size"]
                )
                if "fcam" in keep:
                    losses["fcam_keep"] = keep_loss(
                        head, keep["fcam"], unpainted, fg_extra=self.config.keep_fg
                    )
                    total = total + self.config.keep_weight * losses["fcam_keep"]
            if self.stage == "pixelcam" or (
                self.stage == "heads" and "pixelcam" in self.config.heads
            ):
                head = self.model.pixel_logits(features, size).float()
                losses["pixel_pce"] = partial_cross_entropy(head, self._pixel_labels(seeds, labels))
                total = total + self.config.pixel_weight * losses["pixel_pce"]
                if "pixelcam" in keep:
                    losses["pixel_keep"] = keep_loss(
                        head, keep["pixelcam"], unpainted, fg_extra=self.config.keep_fg
                    )
                    total = total + self.config.keep_weight * losses["pixel_keep"]
        losses["loss"] = total
        return losses

    def _crop(self, index, images, maps, corrections, features, keep, gen):
        """``heads_windows`` windows of ``heads_crop`` px of the batch, stacked as a batch.

        The decoder's cost grows with pixels; a window per step keeps a heads round on a
        large region short while every part of it is seen over the steps. A share
        ``heads_focus`` of the first windows is centred on a stroke: where nothing is
        painted the held map leaves little to learn, so most steps go to the strokes.
        Further windows are drawn anywhere, so each step also holds some of the rest of
        the region to its earlier map (the keep term), not only the strokes' surroundings.
        """
        crop = self.config.heads_crop
        h, w = images.shape[-2:]
        if not crop or (h <= crop and w <= crop):
            return images, maps, corrections, features, keep
        parts = [
            self._window(index, images, maps, corrections, features, keep, gen, focus=k == 0)
            for k in range(max(1, self.config.heads_windows))
        ]
        return parts[0] if len(parts) == 1 else stack_windows(parts)

    def _window(self, index, images, maps, corrections, features, keep, gen, focus: bool):
        """One window of the batch, on the encoder's coarsest grid."""
        grid = max(self.model.feature_reductions)
        h, w = images.shape[-2:]
        ch, cw = min(self.config.heads_crop, h), min(self.config.heads_crop, w)
        centre = self._focus_centre(index, corrections, gen) if focus else None
        if centre is not None:
            y0, x0 = centre[0] - ch // 2, centre[1] - cw // 2
        else:
            y0 = int(torch.randint(0, h - ch + 1, (), generator=gen))
            x0 = int(torch.randint(0, w - cw + 1, (), generator=gen))
        y0 = min(max(0, y0), h - ch) // grid * grid
        x0 = min(max(0, x0), w - cw) // grid * grid
        window = (..., slice(y0, y0 + ch), slice(x0, x0 + cw))
        # Contiguous copies: the decoder's backward ran 1.3x slower on strided views of
        # the cached features (a 2-core CPU, resnet18, 192-px windows).
        cropped = []
        for f, r in zip(features, self.model.feature_reductions, strict=True):
            part = f[..., y0 // r : (y0 + ch) // r, x0 // r : (x0 + cw) // r]
            cropped.append(part.contiguous())
        return (
            images[window].contiguous(),
            maps[window],
            None if corrections is None else corrections[window],
            cropped,
            {h: p[window].contiguous() for h, p in keep.items()},
        )

    def _focus_centre(self, index, corrections, gen) -> tuple[int, int] | None:
        """A pixel of a stroke for a share ``heads_focus`` of the windows; None: anywhere.

        The strokes (connected painted areas) take their turns in a shuffled cycle, so
        every stroke of a round gets windows even when a few large ones hold most of the
        painted pixels (drawing painted pixels independently left about one in five of
        round 1's ten strokes without a window).
        """
        strokes = self._strokes(index, corrections)
        if not strokes:
            return None
        if torch.rand((), generator=gen) >= self.config.heads_focus:
            return None
        if not self._stroke_turns:
            self._stroke_turns = torch.randperm(len(strokes), generator=gen).tolist()
        pixels = strokes[self._stroke_turns.pop()]
        y, x = pixels[int(torch.randint(len(pixels), (), generator=gen))].tolist()
        return y, x

    def _strokes(self, index, corrections) -> list[torch.Tensor]:
        """The pixels (``[k, 2]``) of each connected painted area of the batch's images.

        Corrections do not change within a run, so the areas are found once per batch
        of images (one region in the app), not at every step.
        """
        if corrections is None:
            return []
        key = tuple(index.tolist())
        if self._stroke_key != key:
            painted = (corrections != IGNORE).any(0)
            areas, _ = ndimage.label(painted.cpu().numpy())
            pixels = ndimage.value_indices(areas, ignore_value=0)  # row-major in each area
            self._stroke_list = [
                torch.from_numpy(np.stack(pixels[area], axis=1)) for area in sorted(pixels)
            ]
            self._stroke_key, self._stroke_turns = key, []
        return self._stroke_list

    def _image_loss(
        self, logits: torch.Tensor, index: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        if self.model.config.multilabel:
            present = self.data.present[index].to(logits.device, torch.float32)
            return F.binary_cross_entropy_with_logits(logits.float(), present)
        return F.cross_entropy(logits.float(), labels)

    def _guide_targets(self, labels: torch.Tensor) -> torch.Tensor:
        """The class whose map the pixel labels describe: the positive class of a
        two-class model with a negative class (a negative image's labels are then all
        background of the positive class's map), else each image's label."""
        if self.negative is not None and self.model.config.num_classes == 2:
            return torch.full_like(labels, 1 - self.negative)
        return labels

    def _positive(self, labels: torch.Tensor) -> torch.Tensor:
        if self.negative is None:
            return torch.ones_like(labels, dtype=torch.bool)
        return labels != self.negative

    def _seeds(self, maps, labels, corrections, gen) -> torch.Tensor:
        c = self.config
        seeds = sample_seeds(
            maps.float(),
            c.seeds_per_class,
            bg_fraction=c.bg_fraction,
            erode=c.erode,
            fg_sampling=c.fg_sampling,
            negatives=~self._positive(labels),
            generator=gen if maps.device.type == "cpu" else None,
        )
        return apply_corrections(seeds, corrections)

    def _pixel_labels(self, seeds: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Seeds in the pixel head's classes: binary (bg, fg), or (bg, class 0, ...)."""
        if self.model.config.pixel_classes == 2:
            return seeds
        fg_class = (labels + 1).view(-1, 1, 1).expand_as(seeds)
        return torch.where(seeds == FG, fg_class, torch.where(seeds == BG, 0, IGNORE))

    # --- fixed inputs of the head stages -----------------------------------------------
    def _seed_maps(self) -> torch.Tensor:
        """The classifier's CAMs of every image for its label, computed once."""
        before = self.keep.get(self.config.cam_method)
        if before is not None and before.shape[1] == 2:
            return before[:, 1].clone()  # seeds from a head's own map: already computed
        maps = []
        for start in range(0, len(self.data), 32):
            images = self.data.images[start : start + 32]
            labels = self.data.labels[start : start + 32].to(self.device)
            x = self.model.normalize(images)
            cached = None
            if self.features is not None:
                cached = [f[start : start + 32].to(self.device) for f in self.features]
            maps.append(
                compute_many(self.model, x, [self.config.cam_method], labels, features=cached)
                .maps[self.config.cam_method]
                .float()
                .cpu()
            )
        return torch.cat(maps)

    def _start_heads(self) -> None:
        """The round's encoder features and each head's map before it: from the cache
        of the round before on the same images where nothing changed, else computed."""
        images, encoder = self.data.images, self.model.encoder
        features, known = None, {}
        if self.cache is not None:
            heads = {h: self._head_module(h) for h in self.config.heads}
            features, known = self.cache.lookup(images, encoder, heads)
        if features is None:
            features = self._encode_all()
            if self.cache is not None:
                self.cache.keep_features(images, encoder, features)
        self.features = features
        self.keep = self._head_probs(known)

    def _head_module(self, head: str) -> torch.nn.Module:
        return self.model.decoder if head == "fcam" else self.model.pixel_head

    @torch.no_grad()
    def _head_probs(self, known: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Probabilities of each fine-tuned head on every image before the round
        (``known``: those already at hand), in the precision of the round's checks, so
        that a check's maps can be a later round's."""
        if self.config.keep_weight <= 0 and self.config.cam_method not in self.config.heads:
            return {}
        known = known or {}
        missing = [h for h in self.config.heads if h not in known]
        self.model.eval()
        size = (self.data.images.shape[-2], self.data.images.shape[-1])
        out: dict[str, list[torch.Tensor]] = {h: [] for h in missing}
        for start in range(0, len(self.data), 16) if missing else ():
            feats = [f[start : start + 16].to(self.device) for f in self.features]
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
                for h in missing:
                    logits = self._head_logits(h, feats, size)
                    out[h].append(torch.softmax(logits.float(), dim=1).cpu())
        return {**known, **{h: torch.cat(parts) for h, parts in out.items()}}

    def _head_logits(self, head: str, features: list[torch.Tensor], size) -> torch.Tensor:
        if head == "fcam":
            return self.model.fcam_logits(features, size)
        return self.model.pixel_logits(features, size)

    def _check_interval(self) -> int:
        """Steps between checks of the whole images (0: none): ``heads_check_every``, or
        more on large images, so the checks' pixels stay under 1.5x the steps' pixels.

        A 512-px region with 192-px windows is checked every 5 steps, about a quarter of
        the round's time; a 1536-px one every 43 steps instead of adding seconds.
        """
        every = self.config.heads_check_every
        if self.stage != "heads" or every <= 0:
            return 0
        return max(every, math.ceil(self._image_pixels() / (1.5 * self._step_pixels())))

    def _image_pixels(self) -> int:
        """Pixels of all the images: what a whole-image check runs the heads on."""
        h, w = self.data.images.shape[-2:]
        return len(self.data) * h * w

    def _step_pixels(self) -> int:
        """Pixels a ``heads`` step trains on: its windows of every image in the batch."""
        h, w = self.data.images.shape[-2:]
        crop = self.config.heads_crop or max(h, w)
        per_step = min(crop, h) * min(crop, w) * max(1, self.config.heads_windows)
        return per_step * min(self.config.batch_size, len(self.data))

    def _check_steps(self, steps: int) -> set[int]:
        """The steps after which the whole images are checked: every interval and the last,
        less one too close to the last to differ from it; none if one would be left."""
        every = self._check_interval()
        if not every:
            return set()
        chosen = {s for s in range(every, steps, every) if steps - s >= every / 2} | {steps}
        return chosen if len(chosen) > 1 else set()

    @torch.no_grad()
    def _whole_objective(self) -> float:
        """The strokes' partial CE plus the keep term, on the whole of every image.

        A step sees one window, so the decoder swings between steps: within a round the
        whole region's Dice can fall by thirty points and recover (docs/BENCHMARKS.md). This
        is what the windows estimate, measured where it counts, so the round can end on
        the weights that fit the user's strokes and the held map best.
        """
        config, size = self.config, (self.data.images.shape[-2], self.data.images.shape[-1])
        total = 0.0
        maps: dict[str, list[torch.Tensor]] = {h: [] for h in config.heads}
        for start in range(0, len(self.data), 16):
            index = torch.arange(start, min(start + 16, len(self.data)))
            feats = [f[index].to(self.device) for f in self.features]
            corrections = self.data.corrections[index].long().to(self.device)
            labels = self.data.labels[index].to(self.device)
            unpainted = corrections == IGNORE
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
                for h in config.heads:
                    logits = self._head_logits(h, feats, size).float()
                    if self.cache is not None:  # this check's maps may be the next round's
                        maps[h].append(torch.softmax(logits, dim=1).cpu())
                    target, weight = corrections, 1.0
                    if h == "pixelcam":
                        target = self._pixel_labels(corrections, labels)
                        weight = config.pixel_weight
                    if (~unpainted).any():
                        total += weight * float(partial_cross_entropy(logits, target)) * len(index)
                    if h in self.keep and config.keep_weight > 0:
                        held = self.keep[h][index].to(self.device)
                        total += (
                            config.keep_weight
                            * float(keep_loss(logits, held, unpainted, fg_extra=config.keep_fg))
                            * len(index)
                        )
        if self.cache is not None:
            self._check_probs = {h: torch.cat(parts) for h, parts in maps.items()}
        return total / len(self.data)

    @torch.no_grad()
    def _encode_all(self) -> list[torch.Tensor]:
        self.model.eval()
        chunks = []
        for start in range(0, len(self.data), 16):
            x = self.model.normalize(self.data.images[start : start + 16])
            chunks.append([f.cpu() for f in self.model.forward_features(x)])
        return [torch.cat(parts) for parts in zip(*chunks, strict=True)]

    # --- weights and resuming ----------------------------------------------------------
    def _snapshot(self, into: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
        if into is None:
            return [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for saved, p in zip(into, self.params, strict=True):
                saved.copy_(p)
        return into

    def _restore(self, snapshot: list[torch.Tensor]) -> None:
        with torch.no_grad():
            for p, saved in zip(self.params, snapshot, strict=True):
                p.copy_(saved)

    def _state_path(self, checkpoint: str | Path) -> Path:
        return Path(f"{checkpoint}.state.pt")

    def _settings(self) -> dict:
        return {"stage": self.stage, "config": asdict(self.config), **self._origin}

    def _data_digest(self) -> str:
        digest = hashlib.sha1()
        data = self.data
        for tensor in (data.images, data.labels, data.corrections, data.present):
            digest.update(b"-" if tensor is None else tensor_bytes(tensor))
        return digest.hexdigest()

    def _save(self, checkpoint: str | Path, epoch: int) -> None:
        self.model.save(checkpoint)
        state_path = self._state_path(checkpoint)
        state = {
            "settings": self._settings(),
            "epoch": epoch,
            "optimizer": self.optimizer.state_dict(),
        }
        with atomic_path(state_path) as tmp:
            torch.save(state, tmp)

    def _resume(self, checkpoint: str | Path) -> int:
        state_path = self._state_path(checkpoint)
        if not (Path(checkpoint).exists() and state_path.exists()):
            return 0
        state = torch.load(state_path, weights_only=True)
        if state.get("settings") != self._settings():
            return 0
        from wsol.checkpoint import load_model

        saved = load_model(checkpoint)
        self.model.load_state_dict(saved.state_dict())
        self.optimizer.load_state_dict(state["optimizer"])
        return int(state["epoch"])


def stack_windows(parts: list[tuple]) -> tuple:
    """Several windows ``(images, maps, corrections, features, keep)`` as one batch."""
    images, maps, corrections, features, keep = zip(*parts, strict=True)
    return (
        torch.cat(images),
        torch.cat(maps),
        None if corrections[0] is None else torch.cat(corrections),
        [torch.cat(level) for level in zip(*features, strict=True)],
        {head: torch.cat([k[head] for k in keep]) for head in keep[0]},
    )


def _read_labels(path: Path) -> np.ndarray:
    """A label image's raw values (palette indices, not colours) as int64 ``[H, W]``."""
    try:
        with Image.open(path) as img:
            values = np.asarray(img)
    except Exception as exc:
        raise InputError(f"{path}: not a readable label image ({exc})") from exc
    if values.ndim == 3:
        values = values[..., 0]
    return values.astype(np.int64)
