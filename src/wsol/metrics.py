"""Localization metrics of the WSOL protocol, accumulated batch by batch.

Following "Evaluating Weakly Supervised Object Localization Methods Right"
(Choe et al., CVPR 2020): PxAP pools every pixel of the dataset into one
precision-recall curve over map thresholds 0, 0.001, ..., 0.999; MaxBoxAcc and
MaxBoxAccV2 take the best threshold for boxes. Nothing here stores pixels: masks
update fixed-size histograms and counters. All values are reported in percent.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

#: Number of threshold steps of the pixel curves: tau = i / PIXEL_BINS.
PIXEL_BINS = 1000
IOU_THRESHOLDS = (30, 50, 70)


class PixelMetrics:
    """PxAP and Dice/IoU of foreground and background from score histograms.

    Each pixel adds one count to a histogram of its map value (bin ``floor(v *
    1000)``, the value 1.0 in a bin of its own), one histogram for ground-truth
    foreground and one for background; any threshold ``tau = i / 1000`` then gives
    TP = foreground counts in bins >= i, and so on. Histograms live on the maps'
    device.
    """

    def __init__(self, device: torch.device | str | None = None) -> None:
        self.fg_hist = torch.zeros(PIXEL_BINS + 1, dtype=torch.float64, device=device)
        self.bg_hist = torch.zeros(PIXEL_BINS + 1, dtype=torch.float64, device=device)

    def update(
        self, maps: torch.Tensor, masks: torch.Tensor, ignore: torch.Tensor | None = None
    ) -> None:
        """Add maps ``[B, H, W]`` in [0, 1] with boolean ground-truth masks ``[B, H, W]``."""
        if maps.shape != masks.shape:
            raise ValueError(f"maps {tuple(maps.shape)} and masks {tuple(masks.shape)} differ")
        device = self.fg_hist.device
        maps, masks = maps.to(device), masks.to(device).bool()
        bins = (maps.clamp(0, 1) * PIXEL_BINS).floor().long().clamp_(0, PIXEL_BINS)
        keep = torch.ones_like(masks) if ignore is None else ~ignore.to(device).bool()
        self.fg_hist += torch.bincount(bins[masks & keep], minlength=PIXEL_BINS + 1).double()
        self.bg_hist += torch.bincount(bins[~masks & keep], minlength=PIXEL_BINS + 1).double()

    def _counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """TP, FP, FN, TN for thresholds tau_i = i / 1000, i = 0 .. 1000."""
        fg = self.fg_hist.cpu().numpy()
        bg = self.bg_hist.cpu().numpy()
        tp = np.cumsum(fg[::-1])[::-1]  # foreground pixels with value >= tau_i
        fp = np.cumsum(bg[::-1])[::-1]
        return tp, fp, fg.sum() - tp, bg.sum() - fp

    @property
    def num_pixels(self) -> int:
        return int(self.fg_hist.sum().item() + self.bg_hist.sum().item())

    def pxap(self) -> float:
        """Area under the pixel precision-recall curve (average precision), percent."""
        tp, fp, fn, _ = self._counts()
        if tp[0] + fn[0] == 0:
            return float("nan")  # no foreground pixel in the dataset
        predicted = tp + fp
        precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
        recall = tp / (tp[0] + fn[0])
        # From the highest threshold down, recall grows; add precision x recall step.
        recall_step = recall - np.append(recall[1:], 0.0)
        return float(100.0 * np.sum(precision * recall_step))

    def at_threshold(self, tau: float) -> dict[str, float]:
        """Dice and IoU of foreground and background with ``map >= tau``, percent."""
        if not 0.0 <= tau <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {tau}")
        i = round(tau * PIXEL_BINS)
        tp, fp, fn, tn = (c[i] for c in self._counts())
        return _overlaps(tp, fp, fn, tn) | {"tau": i / PIXEL_BINS}

    def best(self) -> dict[str, float]:
        """Scores at the threshold that maximizes foreground Dice."""
        tp, fp, fn, _ = self._counts()
        denom = 2 * tp + fp + fn
        dice = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
        return self.at_threshold(int(np.argmax(dice[:PIXEL_BINS])) / PIXEL_BINS)

    def summary(self, tau: float | None = None) -> dict[str, object]:
        out: dict[str, object] = {"pxap": self.pxap(), "best": self.best()}
        if tau is not None:
            out["at_tau"] = self.at_threshold(tau)
        return out


def _overlaps(tp: float, fp: float, fn: float, tn: float) -> dict[str, float]:
    def ratio(num: float, den: float) -> float:
        return float(100.0 * num / den) if den > 0 else float("nan")

    return {
        "dice_fg": ratio(2 * tp, 2 * tp + fp + fn),
        "dice_bg": ratio(2 * tn, 2 * tn + fn + fp),
        "iou_fg": ratio(tp, tp + fp + fn),
        "iou_bg": ratio(tn, tn + fn + fp),
    }


def mask_boxes(mask: np.ndarray) -> np.ndarray:
    """Boxes ``[N, 4]`` (x0, y0, x1, y1, inclusive) of the 8-connected components."""
    labels, _ = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    slices = ndimage.find_objects(labels)
    return np.array(
        [[s[1].start, s[0].start, s[1].stop - 1, s[0].stop - 1] for s in slices if s is not None],
        dtype=np.int64,
    ).reshape(-1, 4)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU ``[Na, Nb]`` of inclusive pixel boxes (x0, y0, x1, y1)."""
    ix0 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy0 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix1 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix1 - ix0 + 1, 0, None) * np.clip(iy1 - iy0 + 1, 0, None)
    area_a = (a[:, 2] - a[:, 0] + 1) * (a[:, 3] - a[:, 1] + 1)
    area_b = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros(inter.shape), where=union > 0)


class BoxMetrics:
    """MaxBoxAcc (largest component, IoU >= 50) and MaxBoxAccV2 (all components,
    mean over IoU 30/50/70), each at its best map threshold.

    As in the reference protocol, the map is quantized to 8 bits and a pixel is
    foreground at threshold tau when its value exceeds ``int(tau * max)``; boxes come
    from 8-connected components (the reference traces contours with OpenCV) and the
    ground-truth boxes from the mask's components. Only images whose mask has
    foreground count. Per threshold only hit counts are kept.
    """

    def __init__(self, thresholds: np.ndarray | None = None) -> None:
        self.thresholds = (
            np.arange(PIXEL_BINS) / PIXEL_BINS if thresholds is None else np.asarray(thresholds)
        )
        self.hits_v1 = np.zeros(len(self.thresholds), dtype=np.int64)
        self.hits_v2 = np.zeros((len(IOU_THRESHOLDS), len(self.thresholds)), dtype=np.int64)
        self.count = 0

    def update(self, maps: torch.Tensor | np.ndarray, masks: torch.Tensor | np.ndarray) -> None:
        maps_np = maps.detach().cpu().numpy() if isinstance(maps, torch.Tensor) else maps
        masks_np = masks.detach().cpu().numpy() if isinstance(masks, torch.Tensor) else masks
        for scoremap, mask in zip(maps_np, masks_np.astype(bool), strict=True):
            gt = mask_boxes(mask)
            if len(gt):
                self._add(scoremap, gt)

    def _add(self, scoremap: np.ndarray, gt: np.ndarray) -> None:
        u8 = (np.clip(scoremap, 0, 1) * 255).astype(np.uint8)
        levels = (self.thresholds * int(u8.max())).astype(np.int64)
        best_v1 = np.zeros(256)
        best_v2 = np.zeros(256)
        for level in np.unique(levels):
            fg = u8 > level
            labels, n = ndimage.label(fg, structure=np.ones((3, 3), dtype=bool))
            if n == 0:
                continue
            slices = ndimage.find_objects(labels)
            boxes = np.array(
                [[s[1].start, s[0].start, s[1].stop - 1, s[0].stop - 1] for s in slices]
            )
            ious = box_iou(boxes, gt).max(axis=1)
            sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
            best_v1[level] = ious[int(np.argmax(sizes))]
            best_v2[level] = ious.max()
        self.hits_v1 += best_v1[levels] >= 0.5
        for j, delta in enumerate(IOU_THRESHOLDS):
            self.hits_v2[j] += best_v2[levels] >= delta / 100
        self.count += 1

    def maxboxacc(self) -> float:
        if self.count == 0:
            return float("nan")
        return float(100.0 * self.hits_v1.max() / self.count)

    def maxboxacc_v2(self) -> float:
        if self.count == 0:
            return float("nan")
        return float(100.0 * (self.hits_v2.max(axis=1) / self.count).mean())

    def summary(self) -> dict[str, object]:
        per_iou = {
            f"iou{delta}": float(100.0 * self.hits_v2[j].max() / self.count)
            if self.count
            else float("nan")
            for j, delta in enumerate(IOU_THRESHOLDS)
        }
        return {
            "maxboxacc": self.maxboxacc(),
            "maxboxacc_v2": self.maxboxacc_v2(),
            "maxboxacc_v2_per_iou": per_iou,
            "box_images": self.count,
        }


class LeakMetrics:
    """How much of a class's map falls on the *other* classes present in the image.

    Per map: ``100 * sum(map * other) / sum(map)`` with ``other`` the union of the
    ground truth of the other present classes; the mean over maps is reported. Lower
    is better: a class-specific explanation keeps off the co-occurring objects. Maps
    with no mass, and images with no other class, are skipped.
    """

    def __init__(self) -> None:
        self.total = 0.0
        self.count = 0

    def update(self, maps: torch.Tensor, others: torch.Tensor) -> None:
        mass = maps.flatten(1).sum(dim=1)
        inside = (maps * others.to(maps.device, maps.dtype)).flatten(1).sum(dim=1)
        keep = (mass > 0) & others.flatten(1).any(dim=1).to(mass.device)
        self.total += float((100.0 * inside[keep] / mass[keep]).sum())
        self.count += int(keep.sum())

    def value(self) -> float:
        return self.total / self.count if self.count else float("nan")


class LabelAccuracy:
    """Multi-label accuracy: percent of correct per-class decisions (sigmoid >= 0.5),
    and percent of images whose whole label set is right (exact match)."""

    def __init__(self) -> None:
        self.correct = self.decisions = self.exact = self.images = 0

    def update(self, logits: torch.Tensor, present: torch.Tensor) -> None:
        hit = (torch.sigmoid(logits.float()) >= 0.5).cpu() == present.cpu().bool()
        self.correct += int(hit.sum())
        self.decisions += hit.numel()
        self.exact += int(hit.all(dim=1).sum())
        self.images += hit.shape[0]

    def value(self) -> float:
        return 100.0 * self.correct / self.decisions if self.decisions else float("nan")

    def exact_match(self) -> float:
        return 100.0 * self.exact / self.images if self.images else float("nan")


class Accuracy:
    """Top-1 classification accuracy, percent."""

    def __init__(self) -> None:
        self.correct = 0
        self.total = 0

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.correct += int((logits.argmax(dim=1).cpu() == labels.cpu()).sum())
        self.total += int(labels.numel())

    def value(self) -> float:
        return float(100.0 * self.correct / self.total) if self.total else float("nan")
