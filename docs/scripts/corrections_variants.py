"""Variants of the ``heads`` fine-tuning round, scored by ``wsol bench corrections``.

Each variant changes one thing in the trainer for the length of one benchmark run (a
temporary patch of ``wsol.train.loop``; the library is not changed) and prints the
mean Dice by round, the gain, and the share of painted pixels the mask agrees with.

    .venv/bin/python docs/scripts/corrections_variants.py /tmp/bench1 \\
        /tmp/q18final.safetensors --regions 12 base two-windows stroke-term

Variants:

- ``base``: the app's defaults, unchanged.
- ``keep-near-R``: the keep term fades to 0 within R px of a stroke (``keep-near-32``).
- ``seeds-near-R``: no automatic seeds within R px of a stroke.
- ``keep-sure-A``: the keep term weighs (1 + A)x on pixels either class of the
  round-start map holds above 0.9, instead of the defaults' extra hold on sure
  foreground alone (``keep_fg``; ``set-keep_fg=A`` varies that one).
- ``no-crf``: CRF weight 0.
- ``fast-last``: 5x the learning rate on the last two decoder blocks and the output.
- ``freeze-deep``: the deepest decoder block frozen.
- ``two-windows``: each step adds a random window to the window on a stroke, so the
  keep term sees more of the region (about 1.45x the time; ``TrainConfig.heads_windows``
  2, ``wsol bench corrections --windows 2``).
- ``l2sp-L``: an L2 pull of the heads' weights towards their round-start values
  (L2-SP, weight L / 2; ``l2sp-1``), which unlike the keep term acts on the whole region.
- ``layer4`` / ``layer4-F``: the encoder's last stage trains with the decoder (from
  cached layer3 features; the classifier's CAMs then change too), at F times the
  decoder's learning rate (default 1).
- ``sgd-LR``: SGD with momentum 0.9 at learning rate LR instead of AdamW (``sgd-0.01``).
  Adam's first steps move every weight by about the learning rate whatever its
  gradient, so weights the strokes barely touch drift too; SGD moves them in
  proportion to the gradient.
- ``adam-eps-E``: AdamW with ``eps`` E (``adam-eps-1e-4``): gradients much smaller than
  E get SGD-like steps instead of full-size ones.
- ``warmup-N``: the learning rate rises linearly to the round's over its first N steps,
  so Adam's first steps, full-size in every weight while its second moments are still
  empty, are small.
- ``radam``: RAdam (decoupled weight decay), which damps Adam's first steps by itself.
- ``cosine-LR``: the learning rate starts at LR and falls to 0 over the round on a
  cosine (``cosine-3e-4``), so the last steps settle instead of jumping.
- ``avg-last-N``: the round ends on the mean of the weights after each of its last N
  steps (``avg-last-10``; stochastic weight averaging within one round).
- ``draw-strokes``: the windows on strokes are centred on independently drawn painted
  pixels, as before 2026-12-03, instead of going to the strokes in turn (a shuffled
  cycle over the connected painted areas, the trainer's way since; the variant
  ``cycle-strokes`` of the rows measured earlier), which can leave a stroke of the round
  without a window.
- ``focus-wrong``: the windows on strokes are centred on painted pixels, drawn
  independently, that the map from the start of the round still gets wrong (all
  painted pixels when none is).
- ``stroke-term``: a class-balanced partial CE on the stroke pixels alone, added to the
  usual one (foreground and background strokes weigh the same however many are painted).
- ``windows-B-C``: each step trains on B windows of C px instead of one of the app's size
  (``windows-4-96`` covers as many pixels as one 192-px window), each centred as usual.
- ``grow-R``: each stroke also labels, within R px of it, the round-start mask's
  connected region it was painted on, where that mask says the other class (``grow-24``;
  a "smart brush"). The grown pixels are corrections for the round only.
- ``paint-all``: the simulated user paints the whole ground truth every round instead
  of 10 disks, so every pixel of the region is a correction. An upper bound: what the
  round's fine-tuning can learn in its steps when nothing is left to guess.
  The mask that keeps the strokes is then the truth itself, so read the head's own
  mask ("head alone" in the output).
- ``bf16``: the round's steps under bfloat16 autocast on the CPU (weights and optimizer
  stay float32; ``TrainConfig.cpu_precision``), as the app runs them on a CPU with native
  bfloat16: the same work in less time.
- ``set-FIELD=VALUE[,FIELD=VALUE]``: any ``TrainConfig`` field for the round
  (``set-crf_weight=3.0``, ``set-seeds_per_class=32``).
- ``A+B``: two variants at once (``paint-all+layer4-0.1``).

``--thresholds`` also prints, by round, the mean Dice at the threshold that is best for
each region (an oracle: it reads the ground truth) and the mean of those thresholds, to
tell a mask that is uniformly too large or too small from one that is wrong in places.

``--boundary`` also prints, by round, how the mask's error pixels lie from the true
lesion border: the share within 2, 4 and 8 px, and the false positive and negative counts
(means per region).

``--dense-crf`` scores every mask (the start's and each round's) from the head's map
refined by the dense CRF, as the app shows the maps with its *Refine maps (dense CRF)* box ticked.

``--flips`` also prints, by round, the pixels the round fixed and the pixels it broke
(right before, wrong after), how many of the broken ones are new false positives, and
how many of each lie more than 48 px from any stroke (means per region).

Every variant starts from the float32 round of 20 steps, the app's defaults until
2026-11-22 and still on a CPU without native bfloat16, on which the variant rows in
docs/BENCHMARKS.md were measured; ``--precision auto --steps 40`` starts from today's
defaults on a CPU with native bfloat16. A variant's rounds take all their steps, without
the app's time limit (``TrainConfig.heads_seconds``), so the figures do not depend on the
machine's speed.
``--steps N`` changes the steps per round for every variant run, ``--radius R`` the
simulated user's disks (4 px, the app's brush, by default). With ``--fill-largest`` the
simulated user paints, each round, the largest error region whole (as a big brush or
*Click to flip* would) and disks on the next nine: strokes of very different sizes.
``--repeats N`` runs each variant with fine-tuning seeds 0..N-1 and reports the mean
(default 1: seed 0 alone, which is how the variant rows in docs/BENCHMARKS.md were run;
the seed alone moves a 12-region gain by about two points).
Round times are only comparable between runs made alone on an idle machine. Dice is
exact for a given seed and thread count (``OMP_NUM_THREADS``).
"""

from __future__ import annotations

import argparse
import contextlib
import math

import numpy as np
import torch
from scipy import ndimage

import wsol.bench_corrections as bc
from wsol.losses import keep_loss, partial_cross_entropy
from wsol.precision import PRECISIONS
from wsol.pseudo import BG, FG, IGNORE, apply_corrections
from wsol.refine import dense_crf
from wsol.train import TrainConfig, loop


def _distance(corrections: torch.Tensor) -> torch.Tensor:
    """Distance of every pixel to the nearest painted one (inf when none is)."""
    out = []
    for c in corrections:
        painted = (c != IGNORE).cpu().numpy()
        d = ndimage.distance_transform_edt(~painted) if painted.any() else None
        out.append(
            torch.full(painted.shape, np.inf, dtype=torch.float64)
            if d is None
            else torch.from_numpy(d)
        )
    return torch.stack(out).float().to(corrections.device)


@contextlib.contextmanager
def _patched(owner, name: str, value):
    old = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, old)


def _keep_near(radius: float):
    def faded(logits, previous, unpainted=None, **kwargs):
        if unpainted is not None:
            painted = torch.where(unpainted, IGNORE, 0)
            unpainted = (_distance(painted) / radius).clamp(0, 1)
        return keep_loss(logits, previous, unpainted, **kwargs)

    return _patched(loop, "keep_loss", faded)


def _keep_sure(extra: float):
    def firmer(logits, previous, unpainted=None, **_):
        held = torch.ones_like(previous[:, 1]) if unpainted is None else unpainted.float()
        weight = held * (1 + extra * (previous.amax(1) > 0.9).float())
        log_q = torch.log_softmax(logits, dim=1)
        p = previous.to(log_q.dtype)
        kl = (p * (torch.log(p.clamp_min(1e-8)) - log_q)).sum(dim=1)
        return (kl * weight).sum() / held.sum().clamp_min(1.0)

    return _patched(loop, "keep_loss", firmer)


def _seeds_near(radius: float):
    original = loop._Trainer._seeds

    def seeds(self, maps, labels, corrections, gen):
        s = original(self, maps, labels, None, gen)
        if corrections is not None:
            s = torch.where(_distance(corrections) < radius, IGNORE, s)
        return apply_corrections(s, corrections)

    return _patched(loop._Trainer, "_seeds", seeds)


def _optimizer(make):
    original = loop._Trainer.__init__

    def init(self, model, data, stage, config, *rest):
        original(self, model, data, stage, config, *rest)
        if stage == "heads":
            make(self, model, config)

    return _patched(loop._Trainer, "__init__", init)


def _fast_last(self, model, config) -> None:
    d = model.decoder
    fast = [p for b in d.blocks[3:] for p in b.parameters()] + list(d.segmentation.parameters())
    ids = {id(p) for p in fast}
    slow = [p for p in self.params if id(p) not in ids]
    groups = [{"params": slow}, {"params": fast, "lr": config.lr * 5}]
    self.optimizer = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)


def _sgd(lr: float):
    def make(self, model, config) -> None:
        self.optimizer = torch.optim.SGD(self.params, lr=lr, momentum=0.9)

    return make


def _adam_eps(eps: float):
    def make(self, model, config) -> None:
        self.optimizer = torch.optim.AdamW(
            self.params, lr=config.lr, weight_decay=config.weight_decay, eps=eps
        )

    return make


def _cosine(peak: float):
    def make(self, model, config) -> None:
        self.optimizer = torch.optim.AdamW(self.params, lr=peak, weight_decay=config.weight_decay)
        total, step, calls = config.steps, self.optimizer.step, [0]

        def scheduled(*args, **kwargs):
            for group in self.optimizer.param_groups:
                group["lr"] = peak * 0.5 * (1 + math.cos(math.pi * calls[0] / total))
            calls[0] += 1
            return step(*args, **kwargs)

        self.optimizer.step = scheduled

    return make


def _warmup(steps: int):
    def make(self, model, config) -> None:
        step, calls = self.optimizer.step, [0]

        def scheduled(*args, **kwargs):
            for group in self.optimizer.param_groups:
                group["lr"] = config.lr * min(1.0, (calls[0] + 1) / steps)
            calls[0] += 1
            return step(*args, **kwargs)

        self.optimizer.step = scheduled

    return make


def _radam(self, model, config) -> None:
    self.optimizer = torch.optim.RAdam(
        self.params, lr=config.lr, weight_decay=config.weight_decay, decoupled_weight_decay=True
    )


def _freeze_deep(self, model, config) -> None:
    frozen = {id(p) for p in model.decoder.blocks[0].parameters()}
    for p in model.decoder.blocks[0].parameters():
        p.requires_grad_(False)
    self.params = [p for p in self.params if id(p) not in frozen]
    self.optimizer = torch.optim.AdamW(self.params, lr=config.lr, weight_decay=config.weight_decay)


@contextlib.contextmanager
def _windows(count: int, size: int):
    crop = loop._Trainer._window

    def several(self, index, images, maps, corrections, features, keep, gen):
        full, self.config.heads_crop = self.config.heads_crop, size
        parts = [
            crop(self, index, images, maps, corrections, features, keep, gen, focus=True)
            for _ in range(count)
        ]
        self.config.heads_crop = full
        return loop.stack_windows(parts)

    with _patched(loop._Trainer, "_crop", several):
        yield


@contextlib.contextmanager
def _average_last(n: int):
    run = loop._Trainer.run

    def averaged(self, *args, **kwargs):
        if self.stage != "heads":
            return run(self, *args, **kwargs)
        total, step, calls = self.config.steps, self.optimizer.step, [0]
        sums = [torch.zeros_like(p) for p in self.params]

        def accumulate(*a, **k):
            out = step(*a, **k)
            calls[0] += 1
            if calls[0] > total - n:
                for acc, p in zip(sums, self.params, strict=True):
                    acc += p.detach()
            return out

        self.optimizer.step = accumulate
        result = run(self, *args, **kwargs)
        counted = max(1, min(n, calls[0]))
        with torch.no_grad():
            for acc, p in zip(sums, self.params, strict=True):
                p.copy_(acc / counted)
        return result

    with _patched(loop._Trainer, "run", averaged):
        yield


def _painted_pixel(self, corrections, gen) -> tuple[int, int] | None:
    """The trainer's window centre before strokes took turns: any painted pixel, drawn
    independently for each window (a share ``heads_focus`` of them)."""
    painted = None if corrections is None else (corrections != IGNORE).nonzero()
    if painted is None or not len(painted):
        return None
    if torch.rand((), generator=gen) >= self.config.heads_focus:
        return None
    _, py, px = painted[int(torch.randint(len(painted), (), generator=gen))].tolist()
    return py, px


@contextlib.contextmanager
def _draw_strokes():
    def independent(self, index, corrections, gen):
        return _painted_pixel(self, corrections, gen)

    with _patched(loop._Trainer, "_focus_centre", independent):
        yield


@contextlib.contextmanager
def _focus_wrong():
    window = loop._Trainer._window

    def holding(self, index, images, maps, corrections, features, keep, gen, focus):
        self._held = keep.get("fcam")  # the round-start map of this step's images
        return window(self, index, images, maps, corrections, features, keep, gen, focus)

    def wrong_first(self, index, corrections, gen):
        held = getattr(self, "_held", None)
        if corrections is not None and held is not None:
            wrong = (corrections != IGNORE) & (held.argmax(1) != corrections)
            if wrong.any():
                corrections = torch.where(wrong, corrections, IGNORE)
        return _painted_pixel(self, corrections, gen)

    with (
        _patched(loop._Trainer, "_window", holding),
        _patched(loop._Trainer, "_focus_centre", wrong_first),
    ):
        yield


@contextlib.contextmanager
def _stroke_term():
    seen: dict[str, torch.Tensor | None] = {}
    seeds = loop._Trainer._seeds

    def remember(self, maps, labels, corrections, gen):
        seen["corrections"] = corrections
        return seeds(self, maps, labels, corrections, gen)

    def pce(logits, labels):
        loss = partial_cross_entropy(logits, labels)
        corrections = seen.get("corrections")
        if corrections is not None:
            for label in (FG, BG):
                only = torch.where(corrections == label, corrections, IGNORE)
                if (only != IGNORE).any():
                    loss = loss + 0.5 * partial_cross_entropy(logits, only)
        return loss

    with _patched(loop._Trainer, "_seeds", remember), _patched(loop, "partial_cross_entropy", pce):
        yield


@contextlib.contextmanager
def _l2sp(weight: float):
    init, step = loop._Trainer.__init__, loop._Trainer._step

    def remember(self, model, data, stage, config, *rest):
        init(self, model, data, stage, config, *rest)
        self._start = [p.detach().clone() for p in self.params]

    def pulled(self, index, epoch, gen):
        losses = step(self, index, epoch, gen)
        if self.stage == "heads":
            sp = sum(((p - p0) ** 2).sum() for p, p0 in zip(self.params, self._start, strict=True))
            losses["l2sp"] = sp
            losses["loss"] = losses["loss"] + weight / 2 * sp
        return losses

    with _patched(loop._Trainer, "__init__", remember), _patched(loop._Trainer, "_step", pulled):
        yield


@contextlib.contextmanager
def _layer4(factor: float = 1.0):
    init, crop = loop._Trainer.__init__, loop._Trainer._crop

    def trainable(self, model, data, stage, config, *rest):
        init(self, model, data, stage, config, *rest)
        if stage == "heads":
            extra = list(model.encoder.layer4.parameters())
            for p in extra:
                p.requires_grad_(True)
            self.optimizer = torch.optim.AdamW(
                [
                    {"params": self.params},
                    {"params": extra, "lr": config.lr * factor},
                ],
                lr=config.lr,
                weight_decay=config.weight_decay,
            )
            self.params = self.params + extra

    def recomputed(self, index, images, maps, corrections, features, keep, gen):
        out = list(crop(self, index, images, maps, corrections, features, keep, gen))
        out[3] = [*out[3][:-1], self.model.encoder.layer4(out[3][-2])]
        return tuple(out)

    with (
        _patched(loop._Trainer, "__init__", trainable),
        _patched(loop._Trainer, "_crop", recomputed),
    ):
        yield


@contextlib.contextmanager
def _refined_masks():
    """Every mask the benchmark scores comes from the head's map refined by the dense
    CRF (``wsol.refine.dense_crf``, default parameters), as the app's *Refine maps* box
    refines the maps; the strokes are then kept on top of it as usual."""

    @torch.no_grad()
    def refined(model, image, head):
        model.eval()
        out = model.forward_heads(model.normalize(image[None].to(model.device)))
        logits = out.fcam if head == "fcam" else out.pixel
        probs = torch.softmax(logits.float(), 1)[:, 1]
        return (dense_crf(probs, image[None])[0] >= 0.5).cpu().numpy()

    with _patched(bc, "_predict", refined):
        yield


@contextlib.contextmanager
def _after_each_prediction(score):
    """Call ``score(state, model, image, head, pred)`` after every mask the benchmark
    scores; ``state`` holds the region's ``truth`` and ``round`` (0: the start mask)
    and is emptied for each region."""
    correct, predict = bc._correct_region, bc._predict
    state: dict = {}

    def remember(base, image, truth, seed, settings):
        state.clear()
        state.update(truth=truth, round=0)
        return correct(base, image, truth, seed, settings)

    def scored(model, image, head):
        pred = predict(model, image, head)
        score(state, model, image, head, pred)
        state["round"] += 1
        return pred

    with _patched(bc, "_correct_region", remember), _patched(bc, "_predict", scored):
        yield state


def _best_thresholds(found: list):
    """Record (round, Dice at 0.5, best Dice, best threshold) of every prediction."""
    taus = np.linspace(0.1, 0.9, 33)

    @torch.no_grad()
    def score(state, model, image, head, pred):
        model.eval()
        out = model.forward_heads(model.normalize(image[None]))
        logits = out.fcam if head == "fcam" else out.pixel
        prob = torch.softmax(logits, 1)[0, 1].cpu().numpy()
        dice = [bc.dice(prob >= t, state["truth"]) for t in taus]
        best = int(np.argmax(dice))
        found.append((state["round"], bc.dice(pred, state["truth"]), dice[best], taus[best]))

    return _after_each_prediction(score)


def _boundary_errors(found: list):
    """Record (round, errors, within 2 / 4 / 8 px of the true border, FP, FN) per mask."""

    def score(state, model, image, head, pred):
        truth = state["truth"]
        if "border" not in state:
            inside = ndimage.distance_transform_edt(truth)
            state["border"] = np.where(truth, inside, ndimage.distance_transform_edt(~truth))
        wrong = pred != truth
        found.append(
            (
                state["round"],
                wrong.sum(),
                *((wrong & (state["border"] <= d)).sum() for d in (2, 4, 8)),
                (pred & ~truth).sum(),
                (~pred & truth).sum(),
            )
        )

    return _after_each_prediction(score)


@contextlib.contextmanager
def _flips(found: list):
    """Record (round, fixed, broken, broken FP, fixed far, broken far) per round.

    "Far" is more than 48 px from every pixel painted so far.
    """
    strokes = bc.strokes

    def score(state, model, image, head, pred):
        before, truth = state.get("before"), state["truth"]
        if before is not None:
            far = ndimage.distance_transform_edt(~state["painted"]) > 48
            fixed = (before != truth) & (pred == truth)
            broken = (before == truth) & (pred != truth)
            found.append(
                (
                    state["round"],
                    fixed.sum(),
                    broken.sum(),
                    (broken & pred).sum(),
                    (fixed & far).sum(),
                    (broken & far).sum(),
                )
            )
        state["before"] = pred

    with _after_each_prediction(score) as state:

        def painting(pred, truth, k, radius):
            out = strokes(pred, truth, k, radius)
            yy, xx = np.mgrid[0 : truth.shape[0], 0 : truth.shape[1]]
            painted = state.setdefault("painted", np.zeros(truth.shape, bool))
            for y, x, _ in out:
                painted |= (yy - y) ** 2 + (xx - x) ** 2 <= radius**2
            return out

        with _patched(bc, "strokes", painting):
            yield


def _grow(radius: float):
    """Each stroke also labels, within ``radius`` px of it, the pixels of the round-start
    mask's connected region it was painted on (where that mask says the other class)."""
    made: dict = {}
    paint, data = bc.paint, bc.TrainData

    def painting(corrections, pred, truth, k, radius_):
        made["pred"] = pred.copy()
        return paint(corrections, pred, truth, k, radius_)

    def grown(images, labels, corrections=None, present=None):
        pred = made.get("pred")
        if corrections is not None and pred is not None:
            c = corrections[0].numpy().copy()
            out = c.copy()
            for value, other_side in ((FG, ~pred), (BG, pred)):
                stroke = c == value
                if not stroke.any():
                    continue
                near = ndimage.distance_transform_edt(~stroke) <= radius
                parts, _ = ndimage.label(other_side)
                hit = np.unique(parts[stroke & other_side])
                region = np.isin(parts, hit[hit > 0]) & near
                out[region & (c == IGNORE)] = value
            corrections = torch.from_numpy(out)[None]
        return data(images, labels, corrections, present)

    stack = contextlib.ExitStack()
    stack.enter_context(_patched(bc, "paint", painting))
    stack.enter_context(_patched(bc, "TrainData", grown))
    return stack


def _paint_all():
    def everything(corrections, pred, truth, k, radius):
        corrections.copy_(torch.where(torch.from_numpy(truth), FG, BG))

    return _patched(bc, "paint", everything)


def _fill_largest():
    paint, strokes = bc.paint, bc.strokes

    def filled(corrections, pred, truth, k, radius):
        error = pred != truth
        areas, n = ndimage.label(error)
        if n:
            sizes = ndimage.sum(error, areas, range(1, n + 1))
            largest = torch.from_numpy(areas == int(np.argmax(sizes)) + 1)
            corrections[largest] = torch.from_numpy(np.where(truth, FG, BG))[largest]
        # The other k - 1 get their disks; the filled one is the first of the k largest.
        with _patched(bc, "strokes", lambda *a: strokes(*a)[1:]):
            paint(corrections, pred, truth, k, radius)

    return _patched(bc, "paint", filled)


def _variant(name: str):
    if "+" in name:
        stack, settings = contextlib.ExitStack(), {}
        patches = []
        for part in name.split("+"):
            patch, more = _variant(part)
            patches.append(patch)
            settings.update(more)

        @contextlib.contextmanager
        def combined():
            with stack:
                for patch in patches:
                    stack.enter_context(patch)
                yield

        return combined(), settings
    if name == "base":
        return contextlib.nullcontext(), {}
    if name.startswith("keep-near-"):
        return _keep_near(float(name.rsplit("-", 1)[1])), {}
    if name.startswith("keep-sure-"):
        return _keep_sure(float(name.rsplit("-", 1)[1])), {}
    if name.startswith("seeds-near-"):
        return _seeds_near(float(name.rsplit("-", 1)[1])), {}
    if name == "no-crf":
        return contextlib.nullcontext(), {"crf_weight": 0.0}
    if name == "fast-last":
        return _optimizer(_fast_last), {}
    if name.startswith("sgd-"):
        return _optimizer(_sgd(float(name.split("-", 1)[1]))), {}
    if name.startswith("adam-eps-"):
        return _optimizer(_adam_eps(float(name.split("-", 2)[2]))), {}
    if name.startswith("cosine-"):
        return _optimizer(_cosine(float(name.split("-", 1)[1]))), {}
    if name.startswith("warmup-"):
        return _optimizer(_warmup(int(name.split("-", 1)[1]))), {}
    if name == "radam":
        return _optimizer(_radam), {}
    if name == "freeze-deep":
        return _optimizer(_freeze_deep), {}
    if name == "two-windows":
        return contextlib.nullcontext(), {"heads_windows": 2}
    if name.startswith("set-"):
        settings = {}
        for pair in name[4:].split(","):
            field, value = pair.split("=")
            kind = type(getattr(TrainConfig(), field))
            settings[field] = value.lower() in ("1", "true") if kind is bool else kind(value)
        return contextlib.nullcontext(), settings
    if name.startswith("windows-"):
        _, count, size = name.split("-")
        return _windows(int(count), int(size)), {}
    if name.startswith("l2sp-"):
        return _l2sp(float(name.split("-", 1)[1])), {}
    if name == "layer4" or name.startswith("layer4-"):
        return _layer4(float(name.split("-", 1)[1]) if "-" in name else 1.0), {}
    if name.startswith("avg-last-"):
        return _average_last(int(name.rsplit("-", 1)[1])), {}
    if name == "draw-strokes":
        return _draw_strokes(), {}
    if name == "focus-wrong":
        return _focus_wrong(), {}
    if name == "stroke-term":
        return _stroke_term(), {}
    if name.startswith("grow-"):
        return _grow(float(name.split("-", 1)[1])), {}
    if name == "paint-all":
        return _paint_all(), {}
    if name == "bf16":
        return contextlib.nullcontext(), {"cpu_precision": "bfloat16"}
    raise SystemExit(f"unknown variant {name!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data")
    parser.add_argument("checkpoint")
    parser.add_argument("variants", nargs="+")
    parser.add_argument("--regions", type=int, default=12)
    parser.add_argument("--steps", type=int, help="steps per round (default 20)")
    parser.add_argument(
        "--precision",
        default="float32",
        choices=PRECISIONS,
        help="what the round runs in on a CPU (default float32; auto with --steps 40: the "
        "app's defaults on a CPU with native bfloat16)",
    )
    parser.add_argument(
        "--radius", type=int, default=4, help="radius of the simulated user's disks (px)"
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="fine-tuning seeds 0..N-1, mean reported"
    )
    parser.add_argument(
        "--fill-largest",
        action="store_true",
        help="the simulated user paints the largest error region whole each round",
    )
    parser.add_argument(
        "--thresholds", action="store_true", help="also the best threshold's Dice by round"
    )
    parser.add_argument(
        "--boundary", action="store_true", help="also where the errors lie, by round"
    )
    parser.add_argument(
        "--flips", action="store_true", help="also the pixels each round fixed and broke"
    )
    parser.add_argument(
        "--dense-crf", action="store_true", help="score masks of maps refined by the dense CRF"
    )
    parser.add_argument("--device", default="cpu", help="torch device of the rounds")
    args = parser.parse_args()
    for name in args.variants:
        patch, settings = _variant(name)
        found: list = []
        oracle = _best_thresholds(found) if args.thresholds else contextlib.nullcontext()
        errors: list = []
        border = _boundary_errors(errors) if args.boundary else contextlib.nullcontext()
        flips: list = []
        flipped = _flips(flips) if args.flips else contextlib.nullcontext()

        # The variant's settings win over those the benchmark passes (steps, lr, keep_fg...).
        def config(settings=settings, **given):
            return TrainConfig(**{**given, **settings})

        painter = _fill_largest() if args.fill_largest else contextlib.nullcontext()
        # Outermost, so the oracle and the error tables see the refined masks too.
        refine = _refined_masks() if args.dense_crf else contextlib.nullcontext()
        with refine, patch, oracle, border, flipped, painter, _patched(bc, "TrainConfig", config):
            report = bc.bench_corrections(
                args.data,
                args.checkpoint,
                regions=args.regions,
                repeats=args.repeats,
                radius=args.radius,
                log=lambda *a: None,
                steps=args.steps or 20,
                seconds=None,  # every step: the variants compare settings, not machines
                precision=args.precision,
                device=args.device,
            )
        honoured = {
            k: " / ".join("-" if v is None else f"{100 * v:.0f}%" for v in values)
            for k, values in report["strokes_honoured"].items()
        }
        label = name + ("" if args.steps is None else f" ({args.steps} steps)")
        label += "" if args.precision == "float32" else f" ({args.precision})"
        label += "" if args.radius == 4 else f" (radius {args.radius})"
        label += " (largest error filled)" if args.fill_largest else ""
        label += " (dense CRF)" if args.dense_crf else ""
        gain = f"gain {report['gain']:+.1f}"
        if args.repeats > 1:
            label += f" ({args.repeats} seeds)"
            gain += "; by seed " + ", ".join(f"{g:+.1f}" for g in report["gain_by_seed"])
        dice = " -> ".join(f"{d:.1f}" for d in report["mean_dice"])
        # With every pixel painted (paint-all) the kept mask is the truth itself: what the
        # round learnt shows in the head's own mask.
        alone = " -> ".join(f"{d:.1f}" for d in report["model_mean_dice"])
        print(
            f"{label}: Dice {dice} ({gain}); head alone {alone} "
            f"({report['model_gain']:+.1f}); strokes honoured fg {honoured['fg']}, "
            f"bg {honoured['bg']}; round {report['median_round_seconds']:.2f} s median, "
            f"{report['max_round_seconds']:.2f} s max",
            flush=True,
        )
        if found:
            table = np.array(found)
            by_round = [table[table[:, 0] == r] for r in range(int(table[:, 0].max()) + 1)]
            print(
                "  at the best threshold per region: Dice "
                + " -> ".join(f"{rows[:, 2].mean():.1f}" for rows in by_round)
                + "; mean threshold "
                + " -> ".join(f"{rows[:, 3].mean():.2f}" for rows in by_round),
                flush=True,
            )
        if errors:
            table = np.array(errors, dtype=float)
            for r in range(int(table[:, 0].max()) + 1):
                rows = table[table[:, 0] == r]
                near = " / ".join(f"{rows[:, i].sum() / rows[:, 1].sum():.0%}" for i in (2, 3, 4))
                print(
                    f"  round {r}: {rows[:, 1].mean():.0f} wrong px per region, within "
                    f"2 / 4 / 8 px of the border {near}; false positive "
                    f"{rows[:, 5].mean():.0f}, false negative {rows[:, 6].mean():.0f}",
                    flush=True,
                )
        if flips:
            table = np.array(flips, dtype=float)
            for r in range(1, int(table[:, 0].max()) + 1):
                m = table[table[:, 0] == r].mean(axis=0)
                print(
                    f"  round {r}: fixed {m[1]:.0f} px per region ({m[4]:.0f} beyond 48 px "
                    f"of a stroke), broke {m[2]:.0f} ({m[5]:.0f} beyond 48 px; "
                    f"{m[3]:.0f} new false positives)",
                    flush=True,
                )


if __name__ == "__main__":
    main()
