"""What a ``heads`` round can take over from the round before it on the same images.

In the app a user corrects one region round after round. A ``heads`` round leaves the
encoder as it was, so the next round's encoder features are the ones it computed; and a
round that ends on checked weights has already run the heads over the whole region, which
is the map the next round holds them to. Recomputing both took a round on the app's
default region (about 1100 x 1500 px, resnet10t, a 2-core CPU) about 1.8 s of its 9.
"""

from __future__ import annotations

import torch
from torch import nn


def _state(module: nn.Module) -> list[torch.Tensor]:
    return [t.detach() for t in module.state_dict().values()]


def _same(kept: list[torch.Tensor] | None, now: list[torch.Tensor]) -> bool:
    return (
        kept is not None
        and len(kept) == len(now)
        and all(torch.equal(a, b) for a, b in zip(kept, now, strict=True))
    )


class RoundCache:
    """The encoder features of a ``heads`` round's images and its heads' final maps.

    Pass the same cache to each round on the same images (:func:`wsol.train.train`'s
    ``cache``). Every entry is kept with copies of the images and weights it came from and
    is used only while they are equal (``torch.equal``): a changed image, a new encoder
    (the ``guided`` stage, another model) or other head weights (a version reverted to)
    recompute it. Features cost memory: about 100 MB a megapixel with resnet18.
    """

    def __init__(self) -> None:
        self._images: torch.Tensor | None = None
        self._encoder: list[torch.Tensor] | None = None
        self._features: list[torch.Tensor] | None = None
        self._heads: dict[str, tuple[list[torch.Tensor], torch.Tensor]] = {}
        self.hits: dict[str, int] = {"features": 0, "probs": 0}  # rounds that reused each

    def _matches(self, images: torch.Tensor, encoder: nn.Module) -> bool:
        return (
            self._images is not None
            and self._images.shape == images.shape
            and torch.equal(self._images, images)
            and _same(self._encoder, _state(encoder))
        )

    def lookup(
        self, images: torch.Tensor, encoder: nn.Module, heads: dict[str, nn.Module]
    ) -> tuple[list[torch.Tensor] | None, dict[str, torch.Tensor]]:
        """The kept features of ``images`` for this encoder (None if there are none),
        and the kept probabilities of each of ``heads`` whose weights are unchanged."""
        if not self._matches(images, encoder):
            return None, {}
        self.hits["features"] += 1
        probs = {}
        for name, module in heads.items():
            kept = self._heads.get(name)
            if kept is not None and _same(kept[0], _state(module)):
                probs[name] = kept[1]
                self.hits["probs"] += 1
        return self._features, probs

    def keep_features(
        self, images: torch.Tensor, encoder: nn.Module, features: list[torch.Tensor]
    ) -> None:
        """Keep ``features`` of ``images``; other images or encoder weights replace all."""
        if not self._matches(images, encoder):
            self._heads = {}
            self._images = images.clone()
            self._encoder = [t.clone() for t in _state(encoder)]
        self._features = features

    def keep_probs(self, head: str, module: nn.Module, probs: torch.Tensor) -> None:
        """Keep a head's probabilities on the kept images at its current weights."""
        if self._images is None or probs.shape[-2:] != self._images.shape[-2:]:
            raise ValueError("keep the images' features first: these maps are of other images")
        self._heads[head] = ([t.clone() for t in _state(module)], probs)

    def clear(self) -> None:
        """Forget everything (frees the features' memory)."""
        self._images = self._encoder = self._features = None
        self._heads = {}
