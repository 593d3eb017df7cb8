"""Rounds of the ``heads`` stage that take over the round before's features and maps."""

from __future__ import annotations

import copy

import pytest
import torch

import wsol
from wsol.pseudo import BG, FG, IGNORE
from wsol.train import RoundCache, TrainConfig, TrainData, train


def _region(size: int = 256) -> TrainData:
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(1, 3, size, size, generator=g) * 255).to(torch.uint8)
    images[..., 96:160, 96:160] = torch.tensor([100, 50, 150], dtype=torch.uint8).view(3, 1, 1)
    corrections = torch.full((1, size, size), IGNORE)
    corrections[0, 110:120, 110:120] = FG
    corrections[0, 10:20, 200:210] = BG
    return TrainData(images, torch.tensor([1]), corrections)


def _more_strokes(data: TrainData) -> TrainData:
    corrections = data.corrections.clone()
    corrections[0, 140:150, 130:140] = FG
    corrections[0, 220:230, 30:40] = BG
    return TrainData(data.images, data.labels, corrections)


def _model() -> wsol.WSOLModel:
    torch.manual_seed(0)
    return wsol.create_model("resnet18", 2, input_size=64).eval()


# Checks every 3 steps: a round of 6 ends on a checked step, whose maps the cache keeps.
# At this learning rate round 1 ends on step 3, not on its last step.
CONFIG = TrainConfig(
    steps=6, lr=1e-2, heads=("fcam",), cam_method="fcam", heads_crop=128, heads_check_every=3
)


def _weights(model: wsol.WSOLModel) -> list[torch.Tensor]:
    return [t.clone() for t in model.state_dict().values()]


def _second_round(model, data, cache):
    result = train(model, _more_strokes(data), "heads", CONFIG, cache=cache)
    return _weights(model), result.history


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_a_round_given_the_round_befores_cache_ends_as_without_it() -> None:
    data, model, cache = _region(), _model(), RoundCache()
    first = train(model, data, "heads", CONFIG, cache=cache)
    # The maps kept must be those of the weights kept, not of the last check.
    assert first.kept_step == 3 and cache.hits == {"features": 0, "probs": 0}
    with_cache = _second_round(copy.deepcopy(model), data, cache)
    # Both the features and the held map came from round 1 ...
    assert cache.hits == {"features": 1, "probs": 1}
    # ... and round 2 ends where it ends when it recomputes them: the reused map is the
    # one the weights round 1 ended on give, to the bit.
    without = _second_round(copy.deepcopy(model), data, None)
    assert _same(with_cache[0], without[0]) and with_cache[1] == without[1]
    assert not _same(with_cache[0], _weights(model))  # round 2 did learn something


def test_the_cache_recomputes_what_changed() -> None:
    data, model, cache = _region(), _model(), RoundCache()
    start = copy.deepcopy(model)
    train(model, data, "heads", CONFIG, cache=cache)

    # Another version's heads (the user reverted to the model before the round): the
    # features are reused, the held map is recomputed for those weights.
    reverted = copy.deepcopy(start)
    assert _same(_second_round(reverted, data, cache)[0], _second_round(start, data, None)[0])
    assert cache.hits == {"features": 1, "probs": 0}

    # A changed encoder (the guided stage trains it): both are recomputed.
    guided, plain = copy.deepcopy(model), copy.deepcopy(model)
    with torch.no_grad():
        for m in (guided, plain):
            next(m.encoder.parameters()).mul_(1.01)
    hits = dict(cache.hits)
    assert _same(_second_round(guided, data, cache)[0], _second_round(plain, data, None)[0])
    assert cache.hits == hits

    # Other pixels: nothing is reused.
    other = TrainData(255 - data.images, data.labels, data.corrections)
    hits = dict(cache.hits)
    a, b = copy.deepcopy(model), copy.deepcopy(model)
    train(a, other, "heads", CONFIG, cache=cache)
    train(b, other, "heads", CONFIG)
    assert cache.hits == hits and _same(_weights(a), _weights(b))


def test_a_cache_keeps_maps_only_of_its_images() -> None:
    data, model, cache = _region(), _model(), RoundCache()
    with pytest.raises(ValueError, match="features first"):
        cache.keep_probs("fcam", model.decoder, torch.zeros(1, 2, 256, 256))
    train(model, data, "heads", CONFIG, cache=cache)
    with pytest.raises(ValueError, match="other images"):
        cache.keep_probs("fcam", model.decoder, torch.zeros(1, 2, 64, 64))
    cache.clear()
    assert cache.lookup(data.images, model.encoder, {"fcam": model.decoder}) == (None, {})
