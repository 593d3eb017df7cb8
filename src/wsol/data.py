"""The dataset format: a folder of images, ``labels.csv`` and optional ``masks/``.

::

    dataset/
      labels.csv          columns image,label (label: a class name or index)
      a.png  b.jpg ...    images, paths relative to the folder
      masks/a.png         optional ground truth: <image stem>.png, nonzero = foreground
      masks/<class>/a.png optional per-class ground truth of multi-label datasets

Images without a mask count for accuracy only. A negative image (no object) needs an
all-zero mask to count as all-background in the pixel metrics.

Multi-label datasets list several labels per image, ``;``-separated
(``tumour;necrosis``); the classifier then has independent sigmoid scores.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from wsol.errors import DatasetError
from wsol.imageio import read_image, read_mask

LABELS_FILE = "labels.csv"
MASKS_DIR = "masks"
LABEL_SEPARATOR = ";"


@dataclass(frozen=True)
class Sample:
    image: Path
    label: int  # the first (or only) label
    mask: Path | None
    labels: tuple[int, ...] = ()  # every label of a multi-label row
    class_masks: tuple[Path | None, ...] = ()  # per class, multi-label datasets only


@dataclass
class Batch:
    images: torch.Tensor  # uint8 [B, 3, S, S]
    labels: torch.Tensor  # long [B]
    masks: torch.Tensor  # bool [B, S, S] (all False where has_mask is False)
    has_mask: torch.Tensor  # bool [B]
    names: list[str]
    present: torch.Tensor  # bool [B, C] classes present (one per row unless multi-label)
    class_masks: torch.Tensor | None = None  # bool [B, C, S, S], multi-label only
    has_class_mask: torch.Tensor | None = None  # bool [B, C]
    shapes: list[tuple[int, int]] | None = None  # each image's (H, W) before resizing


class WSOLDataset:
    """Samples of a dataset folder, checked up front.

    Parameters
    ----------
    root : path
        The dataset folder.
    class_names : sequence of str, optional
        The model's classes; labels may be these names or indices into them. Without
        it, labels must be integers or the sorted distinct names become the classes.
    multilabel : bool, optional
        Whether rows may hold several labels; ``None`` decides from the file (any
        ``;`` in a label).

    Raises
    ------
    DatasetError
        Missing folder or labels.csv, a malformed row, an image named in the CSV that
        does not exist, or an unknown label; the message names the file and row.
    """

    def __init__(
        self,
        root: str | Path,
        class_names: Sequence[str] | None = None,
        multilabel: bool | None = None,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: dataset folder not found")
        csv_path = self.root / LABELS_FILE
        if not csv_path.is_file():
            raise DatasetError(f"{csv_path}: missing (needs columns image,label)")
        rows = self._read_rows(csv_path)
        if multilabel is None:
            multilabel = any(LABEL_SEPARATOR in label for _, _, label in rows)
        elif not multilabel:
            for line, _, label in rows:
                if LABEL_SEPARATOR in label:
                    raise DatasetError(
                        f"{csv_path}, line {line}: several labels ({label!r}) but the model "
                        "is single-label"
                    )
        self.multilabel = multilabel
        self.classes = self._classes(rows, class_names, csv_path)
        index = {name: i for i, name in enumerate(self.classes)}
        samples = []
        for line, image, label in rows:
            path = self.root / image
            if not path.is_file():
                raise DatasetError(f"{csv_path}, line {line}: image {path} does not exist")
            labels = tuple(
                dict.fromkeys(
                    self._label(part.strip(), index, csv_path, line)
                    for part in label.split(LABEL_SEPARATOR)
                    if part.strip()
                )
            )
            if not labels:
                raise DatasetError(f"{csv_path}, line {line}: empty label")
            mask = self.root / MASKS_DIR / f"{Path(image).stem}.png"
            class_masks: tuple[Path | None, ...] = ()
            if multilabel:
                class_masks = tuple(
                    p if p.is_file() else None
                    for p in (
                        self.root / MASKS_DIR / name / f"{Path(image).stem}.png"
                        for name in self.classes
                    )
                )
            samples.append(
                Sample(path, labels[0], mask if mask.is_file() else None, labels, class_masks)
            )
        if not samples:
            raise DatasetError(f"{csv_path}: no rows")
        self.samples = samples

    @staticmethod
    def _read_rows(csv_path: Path) -> list[tuple[int, str, str]]:
        try:
            with open(csv_path, newline="", encoding="utf-8-sig") as fh:
                reader = csv.DictReader(fh)
                fields = [f.strip() for f in reader.fieldnames or []]
                if "image" not in fields or "label" not in fields:
                    raise DatasetError(
                        f"{csv_path}: needs a header with columns image,label, got {fields}"
                    )
                rows = []
                for n, row in enumerate(reader, start=2):
                    row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
                    if not row["image"] or not row["label"]:
                        raise DatasetError(f"{csv_path}, line {n}: empty image or label")
                    rows.append((n, row["image"], row["label"]))
                return rows
        except UnicodeDecodeError as exc:
            raise DatasetError(f"{csv_path}: not a UTF-8 text file ({exc})") from exc
        except csv.Error as exc:
            raise DatasetError(f"{csv_path}: malformed CSV ({exc})") from exc

    @staticmethod
    def _classes(
        rows: list[tuple[int, str, str]], class_names: Sequence[str] | None, csv_path: Path
    ) -> list[str]:
        if class_names:
            return list(class_names)
        labels = {
            part.strip()
            for _, _, label in rows
            for part in label.split(LABEL_SEPARATOR)
            if part.strip()
        }
        if all(label.isdigit() for label in labels):
            return [f"class{i}" for i in range(max(int(label) for label in labels) + 1)]
        if any(label.isdigit() for label in labels):
            raise DatasetError(f"{csv_path}: labels mix class names and indices")
        return sorted(labels)

    @staticmethod
    def _label(label: str, index: dict[str, int], csv_path: Path, line: int) -> int:
        if label in index:
            return index[label]
        if label.isdigit() and int(label) < len(index):
            return int(label)
        raise DatasetError(
            f"{csv_path}, line {line}: unknown label {label!r}; classes are {', '.join(index)}"
        )

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def num_masks(self) -> int:
        return sum(s.mask is not None for s in self.samples)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Image ``uint8 [H, W, 3]`` and mask ``bool [H, W]`` (or None) of sample ``i``."""
        sample = self.samples[i]
        image = read_image(sample.image)
        if sample.mask is None:
            return image, None
        return image, self._read_mask(sample.mask, image, sample)

    def load_class_masks(self, i: int, image: np.ndarray) -> list[np.ndarray | None]:
        """Per-class masks ``bool [H, W]`` (None where missing) of sample ``i``."""
        sample = self.samples[i]
        return [
            None if path is None else self._read_mask(path, image, sample)
            for path in sample.class_masks
        ]

    @staticmethod
    def _read_mask(path: Path, image: np.ndarray, sample: Sample) -> np.ndarray:
        mask = read_mask(path)
        if mask.shape != image.shape[:2]:
            raise DatasetError(
                f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} but image "
                f"{sample.image.name} is {image.shape[1]}x{image.shape[0]}"
            )
        return mask

    def present(self) -> torch.Tensor:
        """``bool [N, C]``: the classes of every sample."""
        out = torch.zeros(len(self), len(self.classes), dtype=torch.bool)
        for i, sample in enumerate(self.samples):
            out[i, list(sample.labels or (sample.label,))] = True
        return out

    def batches(self, batch_size: int, size: int) -> Iterator[Batch]:
        """Samples resized to ``size x size`` (images bilinear, masks nearest), in order."""
        present = self.present()
        empty = torch.zeros(size, size, dtype=torch.bool)
        for start in range(0, len(self), batch_size):
            idx = range(start, min(start + batch_size, len(self)))
            images, masks, has_mask, class_masks, shapes = [], [], [], [], []
            for i in idx:
                image, mask = self.load(i)
                shapes.append(image.shape[:2])
                images.append(resize_image(image, size))
                has_mask.append(mask is not None)
                masks.append(resize_mask(mask, size) if mask is not None else empty)
                if self.multilabel:
                    class_masks.append(
                        [
                            empty if m is None else resize_mask(m, size)
                            for m in self.load_class_masks(i, image)
                        ]
                    )
            yield Batch(
                images=torch.stack(images),
                labels=torch.tensor([self.samples[i].label for i in idx]),
                masks=torch.stack(masks),
                has_mask=torch.tensor(has_mask),
                names=[self.samples[i].image.name for i in idx],
                present=present[start : start + len(idx)],
                class_masks=(
                    torch.stack([torch.stack(m) for m in class_masks]) if class_masks else None
                ),
                has_class_mask=(
                    torch.tensor(
                        [[p is not None for p in self.samples[i].class_masks] for i in idx]
                    )
                    if self.multilabel
                    else None
                ),
                shapes=shapes,
            )


def resize_image(image: np.ndarray, size: int) -> torch.Tensor:
    """``uint8 [H, W, 3]`` to ``uint8 [3, size, size]`` (antialiased bilinear)."""
    t = torch.from_numpy(image).permute(2, 0, 1)
    if t.shape[-2:] == (size, size):
        return t.contiguous()
    out = F.interpolate(
        t[None].float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )
    return out[0].round().clamp(0, 255).to(torch.uint8)


def resize_mask(mask: np.ndarray, size: int) -> torch.Tensor:
    t = torch.from_numpy(mask)
    if t.shape == (size, size):
        return t
    return F.interpolate(t[None, None].float(), size=(size, size), mode="nearest")[0, 0].bool()
