"""Fully connected CRF refinement of localization heatmaps (Krähenbühl & Koltun, NIPS 2011).

Mean-field inference with a Potts compatibility and two Gaussian kernels: a smoothness
kernel in position only (an exact separable blur) and an appearance kernel in position and
RGB colour (a 5-D bilateral filter computed on a bilateral grid: splat, blur, slice; Paris &
Durand 2006, Chen et al. 2007). Everything is plain torch on the tensors' device, batched over
images and labels, with cost linear in the number of pixels.

Each kernel excludes the pixel itself and is normalised by its response to a constant image
(row normalisation), so a message is a weighted mean of the neighbours' Q in [0, 1] and the
Potts weights are dimensionless, whatever the kernel widths or image size.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from wsol.errors import InputError

_EPS = 1e-6  # clamp of the input probabilities before the log of the unary
_DEN_EPS = 1e-4  # a pixel whose neighbours weigh ~nothing gets a ~zero message, not 0/0 noise
# Grid cells are one standard deviation wide. Linear splatting and slicing each blur by a tent
# of variance 1/6 cell^2, so the grid blur supplies the rest of the unit variance.
_GRID_BLUR_VAR = 1.0 - 2.0 / 6.0
_GRID_BLUR_RADIUS = 2  # the next tap would weigh exp(-6.75) ~ 0.1 % of the centre
_SMOOTH_TRUNCATE = 4.0  # smoothness taps up to 4 std, as scipy.ndimage's default
# Grid cells (8 MiB of float32) one band or blur block touches: the fastest of 2^16..2^30
# at 512^2-2048^2 on a 2-core EPYC (1 MiB L2 per core, 32 MiB L3).
_BLOCK_CELLS = 1 << 21


@dataclass(frozen=True)
class DenseCRFParams:
    """Parameters of :func:`dense_crf`, named after pydensecrf's.

    Weights have a similar scale to pydensecrf's symmetric normalisation, not the same values:
    here every message is a plain weighted mean of the neighbours' marginals.
    """

    iterations: int = 5
    smooth_sxy: float = 3.0  # smoothness kernel spatial std, pixels
    smooth_weight: float = 3.0  # its Potts weight (pydensecrf "compat")
    appearance_sxy: float = 60.0  # appearance (bilateral) kernel spatial std, pixels
    appearance_srgb: float = 10.0  # its colour std, in 0..255 units
    appearance_weight: float = 5.0
    confidence: float = 1.0  # unary = -confidence * log(p), p clamped to [eps, 1 - eps]

    def __post_init__(self) -> None:
        if self.iterations < 0:
            raise InputError(f"iterations must be >= 0, got {self.iterations}")
        for name in ("smooth_sxy", "appearance_sxy", "appearance_srgb", "confidence"):
            if not getattr(self, name) > 0:
                raise InputError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("smooth_weight", "appearance_weight"):
            if not getattr(self, name) >= 0:
                raise InputError(f"{name} must be >= 0, got {getattr(self, name)}")


def bilateral_grid_shape(
    height: int,
    width: int,
    sxy: float,
    srgb: float,
    colour_extent: tuple[float, float, float] = (255.0, 255.0, 255.0),
) -> tuple[int, int, int, int, int]:
    """Nodes of the bilateral grid along y, x, r, g, b for one image.

    Cells are ``sxy`` pixels and ``srgb`` colour units wide; ``colour_extent`` is the image's
    max - min per channel (the grid spans only the colours present). The grid holds this many
    cells per image and filtered channel, i.e. about ``H W / sxy^2`` times a colour factor
    bounded by ``(255 / srgb + 2)^3`` whatever the image size.
    """
    spans = ((height - 1) / sxy, (width - 1) / sxy, *(e / srgb for e in colour_extent))
    # +2: the top coordinate splats onto floor(span) and the node after it.
    return tuple(math.floor(s) + 2 for s in spans)  # type: ignore[return-value]


def _blur(x: Tensor, dim: int, taps: list[float]) -> Tensor:
    """Zero-padded 1-D convolution of ``x`` along ``dim`` with symmetric ``taps``.

    Shifted in-place adds on views: no padding copy and no im2col buffer, which makes
    conv2d's CPU path superlinear on large images.
    """
    r = len(taps) // 2
    out = x * taps[r]
    n = x.shape[dim]
    for t in range(1, min(r, n - 1) + 1):
        out.narrow(dim, t, n - t).add_(x.narrow(dim, 0, n - t), alpha=taps[r + t])
        out.narrow(dim, 0, n - t).add_(x.narrow(dim, t, n - t), alpha=taps[r + t])
    return out


def _gaussian_taps(sigma: float, radius: int) -> list[float]:
    return [math.exp(-0.5 * (t / sigma) ** 2) for t in range(-radius, radius + 1)]


class _Smooth:
    """Unnormalised Gaussian kernel in position, zero-padded; its centre weight is 1."""

    def __init__(self, sigma: float) -> None:
        self.taps = _gaussian_taps(sigma, math.ceil(_SMOOTH_TRUNCATE * sigma))
        self.self_weight: Tensor | float = 1.0

    def __call__(self, values: Tensor) -> Tensor:
        return _blur(_blur(values, 2, self.taps), 3, self.taps)


class _Bilateral:
    """Unnormalised 5-D Gaussian in (y, x)/sxy and rgb/srgb on a dense per-image bilateral grid.

    Splat and slice are multilinear (32 corners). They depend on the image only, so the lower
    corner's flat index and the per-axis weights are computed once; corner ``bits`` then lies at
    a constant offset from it, reached by shifting the flat grid rather than the index.
    On CPU the work goes in blocks of about ``block_cells`` grid cells (row bands of pixels),
    which keeps the time per pixel flat as tiles grow.
    """

    def __init__(
        self, images: Tensor, sxy: float, srgb: float, block_cells: int | None = None
    ) -> None:
        b, _, h, w = images.shape
        # Blocking is for CPU caches; on a GPU it would only multiply the kernel launches.
        cpu = images.device.type == "cpu"
        self.block_cells = block_cells or (_BLOCK_CELLS if cpu else 1 << 62)
        lo = images.amin(dim=(2, 3), keepdim=True)
        extent = (images.amax(dim=(2, 3), keepdim=True) - lo).flatten(1).amax(0)
        self.shape = bilateral_grid_shape(h, w, sxy, srgb, tuple(extent.tolist()))
        self.cells = math.prod(self.shape)
        dev = images.device
        ys = (torch.arange(h, device=dev, dtype=torch.float32) / sxy).view(1, h, 1)
        xs = (torch.arange(w, device=dev, dtype=torch.float32) / sxy).view(1, 1, w)
        coords = [ys.expand(b, h, w), xs.expand(b, h, w), *((images - lo) / srgb).unbind(1)]
        strides = [math.prod(self.shape[d + 1 :]) for d in range(5)]
        self.taps = _gaussian_taps(math.sqrt(_GRID_BLUR_VAR), _GRID_BLUR_RADIUS)
        g1 = self.taps[_GRID_BLUR_RADIUS + 1]  # the centre tap is 1
        base = torch.arange(b, device=dev).repeat_interleave(h * w) * self.cells
        self.self_weight = torch.ones(b, 1, h, w, device=dev)
        fracs = []
        for coord, n, stride in zip(coords, self.shape, strides, strict=True):
            i0 = coord.floor().clamp(0, n - 2)
            f = (coord - i0).clamp(0, 1)
            base += i0.long().reshape(-1) * stride
            fracs.append(f.reshape(-1))
            # Weight of the pixel on itself through splat -> blur -> slice, axis by axis.
            self.self_weight *= ((1 - f) ** 2 + f**2 + 2 * f * (1 - f) * g1).unsqueeze(1)
        # (y, x) and (r, g, b) corners apart: 4 + 8 weight vectors in memory, not 32.
        self.spatial = self._corners(fracs[:2], strides[:2])
        self.colour = self._corners(fracs[2:], strides[2:])
        self.bands = self._bands(base, b, h, w, ys.view(-1), strides[0])

    def _bands(
        self, base: Tensor, b: int, h: int, w: int, ys: Tensor, stride: int
    ) -> list[tuple[slice, slice, Tensor]]:
        """Row bands whose pixels splat onto a few grid rows: ``(pixels, cells, local index)``.

        All 32 corners of a band are splatted (and sliced) before the next band, so the grid
        rows they touch stay in cache; with whole-image passes the grid of a large tile (tens
        of MB) is streamed from memory 32 times and the time grows faster than the pixels.
        """
        rows = ys.floor().clamp(0, self.shape[0] - 2).long()
        per_band = max(1, self.block_cells // stride - 1)
        starts = torch.searchsorted(rows, torch.arange(0, self.shape[0] - 1, per_band)).tolist()
        bands = []
        for i in range(b):
            for r0, r1 in zip(starts, [*starts[1:], h], strict=True):
                if r1 == r0:
                    continue
                g0 = int(rows[r0]) * stride + i * self.cells
                g1 = (int(rows[r1 - 1]) + 2) * stride + i * self.cells
                px = slice((i * h + r0) * w, (i * h + r1) * w)
                bands.append((px, slice(g0, g1), base[px] - g0))
        return bands

    @staticmethod
    def _corners(fracs: list[Tensor], strides: list[int]) -> list[tuple[int, Tensor]]:
        out = []
        for bits in itertools.product((0, 1), repeat=len(fracs)):
            weight = math.prod(f if bit else 1 - f for bit, f in zip(bits, fracs, strict=True))
            out.append((sum(bit * s for bit, s in zip(bits, strides, strict=True)), weight))
        return out

    def __call__(self, values: Tensor) -> Tensor:
        b, c, h, w = values.shape
        # Channels first: on CPU, index_add_/index_select along dim 1 of a [C, cells] grid ran
        # several times faster than along dim 0 of a channels-last one.
        v = values.transpose(0, 1).reshape(c, b * h * w)
        total = b * self.cells
        grid = v.new_zeros(c, total)
        for px, cells, index in self.bands:
            slab, vb = grid[:, cells], v[:, px]
            for s_off, s_w in self.spatial:
                vs = vb * s_w[px]
                for c_off, c_w in self.colour:
                    slab[:, s_off + c_off :].index_add_(1, index, vs * c_w[px])
        grid = _blur(grid.view(c, b, *self.shape), 2, self.taps)
        # The other four axes a few y rows at a time, for the same reason as the bands.
        rows = max(1, self.block_cells // (c * b * math.prod(self.shape[1:])))
        if rows >= self.shape[0]:
            for dim in range(3, 7):
                grid = _blur(grid, dim, self.taps)
        else:
            for y in range(0, self.shape[0], rows):
                block = grid.narrow(2, y, min(rows, self.shape[0] - y))
                blurred = block
                for dim in range(3, 7):
                    blurred = _blur(blurred, dim, self.taps)
                block.copy_(blurred)
        grid = grid.reshape(c, total)
        out = torch.empty_like(v)
        for px, cells, index in self.bands:
            slab, ob = grid[:, cells], out[:, px]
            ob.zero_()
            for s_off, s_w in self.spatial:
                acc = torch.zeros_like(ob)
                for c_off, c_w in self.colour:
                    acc.addcmul_(slab[:, s_off + c_off :].index_select(1, index), c_w[px])
                ob.addcmul_(acc, s_w[px])
        return out.view(c, b, h, w).transpose(0, 1)


def _normalised(kernel: _Smooth | _Bilateral, values: Tensor, exclude_self: bool) -> Tensor:
    num = kernel(values)
    den = kernel(values.new_ones(values.shape[0], 1, *values.shape[2:]))
    if exclude_self:
        num = num - kernel.self_weight * values
        den = den - kernel.self_weight
    return num.clamp_min(0) / (den.clamp_min(0) + _DEN_EPS)


def _check_images(images: Tensor, shape: torch.Size, device: torch.device) -> Tensor:
    """Images ``[B, 3, H, W]`` (uint8 0..255 or float 0..1) as float32 0..255 on ``device``."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise InputError(f"images must be [B, 3, H, W], got {tuple(images.shape)}")
    if images.shape[0] != shape[0] or images.shape[2:] != shape[-2:]:
        raise InputError(
            f"images {tuple(images.shape)} do not match maps {tuple(shape)} in B, H or W"
        )
    if images.dtype == torch.uint8:
        return images.to(device=device, dtype=torch.float32)
    if not images.is_floating_point():
        raise InputError(f"images must be uint8 or floating point, got {images.dtype}")
    images = images.to(device=device, dtype=torch.float32)
    if not torch.isfinite(images).all() or images.min() < 0 or images.max() > 1 + 1e-4:
        raise InputError("float images must be finite and in [0, 1]")
    return images.clamp(0, 1) * 255


def gaussian_filter(values: Tensor, sigma: float, exclude_self: bool = False) -> Tensor:
    """Normalised Gaussian blur of ``values [B, C, H, W]`` (the CRF's smoothness kernel).

    Taps reach 4 std; near the border the missing (zero-padded) taps are renormalised away.
    """
    return _normalised(_Smooth(sigma), values.float(), exclude_self)


def bilateral_filter(
    values: Tensor, images: Tensor, sxy: float, srgb: float, exclude_self: bool = False
) -> Tensor:
    """Normalised bilateral filter of ``values [B, C, H, W]`` guided by ``images [B, 3, H, W]``.

    Weights ``exp(-|p_i - p_j|^2 / 2 sxy^2 - |c_i - c_j|^2 / 2 srgb^2)``, colours in 0..255,
    approximated on a bilateral grid (the CRF's appearance kernel).
    """
    if values.dim() != 4:
        raise InputError(f"values must be [B, C, H, W], got {tuple(values.shape)}")
    rgb = _check_images(images, values.shape, values.device)
    return _normalised(_Bilateral(rgb, sxy, srgb), values.float(), exclude_self)


def dense_crf(maps: Tensor, images: Tensor, params: DenseCRFParams | None = None) -> Tensor:
    """Refine heatmaps with a fully connected CRF guided by the RGB images.

    Parameters
    ----------
    maps
        ``[B, H, W]`` foreground scores in [0, 1], or ``[B, L, H, W]`` class probabilities
        (L >= 2).
    images
        ``[B, 3, H, W]`` RGB, uint8 in 0..255 or float in [0, 1]; moved to the maps' device.
    params
        CRF parameters; defaults to :class:`DenseCRFParams()`.

    Returns
    -------
    Tensor
        float32 on the maps' device: the foreground marginal ``[B, H, W]`` for binary maps,
        else the marginals ``[B, L, H, W]`` (summing to 1 over L). With ``iterations=0`` this
        is the unary's softmax, i.e. the input renormalised when ``confidence=1``.
    """
    p = params or DenseCRFParams()
    binary = maps.dim() == 3
    if maps.dim() not in (3, 4) or (not binary and maps.shape[1] < 2):
        shape = tuple(maps.shape)
        raise InputError(f"maps must be [B, H, W] or [B, L, H, W] with L >= 2, got {shape}")
    probs = maps.float()
    if not torch.isfinite(probs).all() or probs.min() < 0 or probs.max() > 1 + 1e-4:
        raise InputError("maps must be finite and in [0, 1]")
    if binary:
        probs = torch.stack([1 - probs, probs], 1)
    rgb = _check_images(images, probs.shape, probs.device)
    unary = p.confidence * probs.clamp(_EPS, 1 - _EPS).log()  # minus the unary energy
    q = torch.softmax(unary, 1)
    kernels: list[tuple[float, _Smooth | _Bilateral, Tensor]] = []
    for weight, make in (
        (p.smooth_weight, lambda: _Smooth(p.smooth_sxy)),
        (p.appearance_weight, lambda: _Bilateral(rgb, p.appearance_sxy, p.appearance_srgb)),
    ):
        if weight > 0 and p.iterations > 0:
            k = make()
            den = (k(torch.ones_like(q[:, :1])) - k.self_weight).clamp_min(0)
            kernels.append((weight, k, den))
    for _ in range(p.iterations):
        logits = unary.clone()
        for weight, k, den in kernels:
            # Potts: -w * sum_j k_ij (1 - Q_j(l)) = w * mean_j Q_j(l) - w, the constant dropped.
            # Only L - 1 channels are filtered; the last follows from sum_l Q = 1 and linearity.
            head = q[:, :-1]
            part = (k(head) - k.self_weight * head).clamp_min(0)
            last = (den - part.sum(1, keepdim=True)).clamp_min(0)
            logits += weight * torch.cat([part, last], 1) / (den + _DEN_EPS)
        q = torch.softmax(logits, 1)
    return q[:, 1] if binary else q
