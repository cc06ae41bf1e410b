"""Procedural Gabor noise (§7.1; Lagae et al. 2009): a sparse Poisson impulse process convolved with Gabor
kernels.

An image is ``I = clip(background + contrast * sum_k w_k g(r - p_k; omega_k), 0, 1)`` with the kernel

    g(r; omega) = exp(-pi a^2 |r|^2) cos(2 pi F0 (x cos omega + y sin omega)),   r = (x, y) in pixels,

of fixed bandwidth ``a`` and frequency ``F0``. A Poisson process conditioned on its number of points places
them i.i.d. uniformly, so each image draws its count (fixed, or Poisson-distributed) and then uniform impulse
positions ``p_k``, orientations ``omega_k`` and weights ``w_k``. The affine map to [0, 1] is the same for
every image (not a per-image normalisation), so before clipping an image is exactly ``background`` plus a
linear sum of kernels (up to the 16-bit quantisation of the stored images, steps of 1/65534). Ground truth
per impulse: its position, orientation, weight, and a square box whose side is the diameter at which the
envelope ``exp(-pi a^2 r^2)`` has fallen to ``envelope_level``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mistlib.checks import check_positive_int
from mistlib.data.base import UINT16_SCALE, InstanceDataset, check_number, check_range

CHUNK = 256  # images rendered per batched matrix product


@dataclass(frozen=True)
class GaborConfig:
    """Parameters of the Gabor-noise generator; images are ``image_size`` x ``image_size``, one channel.

    Example:
        >>> config = GaborConfig(num_impulses=10)
        >>> config.num_impulses, round(config.box_size, 2)
        (10, 16.28)
        >>> GaborConfig(frequency=0.7)
        Traceback (most recent call last):
        ...
        ValueError: frequency must be in [0.0, 0.5], got 0.7
    """

    image_size: int = 80  # side of the square image (pixels)
    num_impulses: int = 25  # impulses per image (count="fixed") or their expected number (count="poisson")
    count: str = "fixed"  # "fixed": exactly num_impulses; "poisson": a Poisson(num_impulses) count per image
    frequency: float = 0.15  # F0, the kernel's frequency (cycles per pixel): a period of about 6.7 pixels
    bandwidth: float = 0.12  # a, the envelope's bandwidth (1/pixel): exp(-pi a^2 r^2)
    orientation_range: tuple[float, float] = (0.0, math.pi)  # omega uniform in this interval (radians)
    orientations: tuple[float, ...] = ()  # if not empty, omega is drawn uniformly from this set instead
    weight_range: tuple[float, float] = (0.5, 1.0)  # w uniform in this interval (negative w flips a kernel)
    background: float = 0.5  # image value where no kernel contributes (the fixed affine map's offset)
    contrast: float = 0.3  # the fixed map's gain: a lone kernel of weight w spans background -/+ contrast*w
    envelope_level: float = 0.05  # a box's side is the diameter where the envelope falls to this fraction
    margin: float = 0.0  # impulses are uniform over the image shrunk by this many pixels on every side

    def __post_init__(self) -> None:
        check_positive_int("image_size", self.image_size, minimum=8)
        check_positive_int("num_impulses", self.num_impulses)
        if self.count not in ("fixed", "poisson"):
            raise ValueError(f"count must be 'fixed' or 'poisson', got {self.count!r}")
        check_number("frequency", self.frequency, 0.0, 0.5)  # 0.5 cycles/pixel is the Nyquist limit
        check_number("bandwidth", self.bandwidth, 0.0, open_low=True)
        check_range("orientation_range", self.orientation_range)
        for omega in self.orientations:
            check_number("orientations", omega, -math.inf)
        check_range("weight_range", self.weight_range)
        check_number("background", self.background, 0.0, 1.0)
        check_number("contrast", self.contrast, 0.0, open_low=True)
        check_number("envelope_level", self.envelope_level, 0.0, 1.0, open_low=True)
        if self.envelope_level == 1.0:
            raise ValueError("envelope_level must be < 1 (a level of 1 gives a box of side 0)")
        check_number("margin", self.margin, 0.0, (self.image_size - 1) / 2)

    @property
    def box_size(self) -> float:
        """Side of an instance's box (pixels): ``2 sqrt(ln(1/level) / pi) / a``.

        Example:
            >>> round(GaborConfig(bandwidth=0.12, envelope_level=0.05).box_size, 2)
            16.28
        """
        return 2 * math.sqrt(math.log(1 / self.envelope_level) / math.pi) / self.bandwidth


def gabor_layers(
    config: GaborConfig, positions: torch.Tensor, orientations: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Sum of weighted Gabor kernels, ``sum_k w_k g(r - p_k; omega_k)``, on the pixel grid (no offset/gain).

    The kernel is separable in rank 2: with ``u = 2 pi F0 cos(omega) dx`` and ``v = 2 pi F0 sin(omega) dy``,
    ``cos(u + v) = cos u cos v - sin u sin v``, so the sum over impulses is one matrix product per image.

    Args:
        positions: ``(N, K, 2)`` as (x, y) pixels; orientations, weights: ``(N, K)`` (weight 0 = no impulse).

    Returns: float64 ``(N, H, W)``.

    Example:
        >>> positions = torch.tensor([[[5.0, 7.0]]])  # (N, K, 2): one impulse at x = 5, y = 7
        >>> orientations, weights = torch.zeros(1, 1), torch.full((1, 1), 0.8)  # (N, K) each
        >>> layers = gabor_layers(GaborConfig(image_size=16), positions, orientations, weights)
        >>> layers.shape, round(layers[0, 7, 5].item(), 6)  # at its impulse, a kernel is worth its weight
        (torch.Size([1, 16, 16]), 0.8)
    """
    grid = torch.arange(config.image_size, dtype=torch.float64)  # pixel centres, x = j and y = i
    a2, f = math.pi * config.bandwidth**2, 2 * math.pi * config.frequency
    dx = grid - positions[..., 0:1].double()  # (N, K, W)
    dy = grid - positions[..., 1:2].double()  # (N, K, H)
    omega = orientations.double()[..., None]  # (N, K, 1)
    ex = weights.double()[..., None] * torch.exp(-a2 * dx**2)  # (N, K, W)
    ey = torch.exp(-a2 * dy**2)  # (N, K, H)
    u, v = f * torch.cos(omega) * dx, f * torch.sin(omega) * dy
    left = torch.cat([ey * torch.cos(v), -ey * torch.sin(v)], dim=1)  # (N, 2K, H)
    right = torch.cat([ex * torch.cos(u), ex * torch.sin(u)], dim=1)  # (N, 2K, W)
    return left.transpose(1, 2) @ right  # (N, H, W)


class GaborNoise(InstanceDataset):
    """Gabor-noise textures (§7.1) with their impulse process as ground truth.

    Extra attributes (and item fields): ``orientations`` float32 ``(size, L)`` radians, ``weights`` float32
    ``(size, L)``; ``centers`` are the impulse positions. Labels are all -1 (the kernels have no class).
    Images are ``(size, 1, H, W)`` float32 in [0, 1].

    Example:
        >>> noise = GaborNoise("test", size=2, config=GaborConfig(image_size=32, num_impulses=3), cache=False)
        >>> item = noise[0]
        >>> item["image"].shape, item["boxes"].shape, item["labels"].tolist(), item["orientations"].shape
        (torch.Size([1, 32, 32]), torch.Size([3, 4]), [-1, -1, -1], torch.Size([3]))
        >>> noise.instance_images(0).shape  # (L, H, W): each kernel alone
        torch.Size([3, 32, 32])
    """

    name = "gabor"
    config_class = GaborConfig
    instance_fields = ("boxes", "labels", "centers", "orientations", "weights")
    item_fields = instance_fields

    def __init__(
        self, split: str = "train", size: int = 1000, seed: int = 0, config: Any = None, cache: bool = True
    ) -> None:
        super().__init__(split, size, seed, config, cache)
        self.orientations = self.data["orientations"]  # (size, L) radians
        self.weights = self.data["weights"]  # (size, L)

    def generate(self, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        cfg, n = self.config, self.size
        if cfg.count == "fixed":
            counts = np.full(n, cfg.num_impulses)
        else:
            counts = rng.poisson(cfg.num_impulses, size=n)
        width = max(int(counts.max()), 1)
        low, high = cfg.margin - 0.5, cfg.image_size - 0.5 - cfg.margin
        positions = rng.uniform(low, high, size=(n, width, 2))  # (N, L, 2) as (x, y)
        if cfg.orientations:
            omega = np.asarray(cfg.orientations)[rng.integers(0, len(cfg.orientations), size=(n, width))]
        else:
            omega = rng.uniform(*cfg.orientation_range, size=(n, width))
        weights = rng.uniform(*cfg.weight_range, size=(n, width))
        present = np.arange(width)[None, :] < counts[:, None]  # (N, L)
        positions, omega, weights = positions * present[..., None], omega * present, weights * present
        positions, omega, weights = (torch.from_numpy(a).float() for a in (positions, omega, weights))
        images = torch.empty(n, 1, cfg.image_size, cfg.image_size, dtype=torch.uint16)
        for start in range(0, n, CHUNK):
            part = slice(start, start + CHUNK)
            layers = gabor_layers(cfg, positions[part], omega[part], weights[part])  # (n', H, W)
            values = (cfg.background + cfg.contrast * layers).clamp(0, 1)
            images[part, 0] = (values * UINT16_SCALE).round().to(torch.int32).to(torch.uint16)
        half = cfg.box_size / 2
        boxes = torch.cat([positions - half, positions + half], dim=-1) * torch.from_numpy(present)[..., None]
        return {
            "images": images,  # (N, 1, H, W) uint16: k means k / UINT16_SCALE (half the size of float32)
            "boxes": boxes,  # (N, L, 4)
            "labels": torch.full((n, width), -1, dtype=torch.int64),
            "centers": positions,  # (N, L, 2)
            "num_instances": torch.from_numpy(counts.astype(np.int64)),
            "orientations": omega,
            "weights": weights,
        }

    def instance_images(self, index: int) -> torch.Tensor:
        """Each kernel of image ``index`` alone, ``contrast * w_k g_k`` (no background, no clip).

        Returns: float32 ``(L_n, H, W)``.
        """
        count = int(self.num_instances[index])
        positions = self.centers[index, :count, None]  # (L, 1, 2): one image per kernel
        layers = gabor_layers(
            self.config, positions, self.orientations[index, :count, None], self.weights[index, :count, None]
        )
        return (self.config.contrast * layers).float()  # (L, H, W)
