"""The two MNIST scenes of §7.1: "MNIST easy" (sorted digits on a jittered 3x3 grid) and "MNIST hard".

Both paste 28x28 MNIST digits, each resized to a square *frame* of ``s`` pixels, onto a black 80x80 canvas at
whole-pixel positions, and composite overlapping digits with a pixelwise maximum (ink is bright on black, so
the max keeps each stroke visible instead of summing overlaps past white). Before pasting, each digit is
shifted so its ink's bounding box is centred in its frame (:func:`mistlib.data.mnist.center_ink`), which puts
all of its ink in the central 20x20 of the 28x28 frame. A digit's box is the central 20/28 of its frame,
rounded to whole pixels: a frame of side ``s`` gets a box of ``b = box_side(s) = s - 2 round(s / 7)``
pixels (``20 s / 28`` to within a pixel, with equal margins so it is centred), and only that central 20x20
is resized, to ``b x b``, so every ink pixel lies in the box. A frame whose top-left pixel is ``(r0, c0)``
has centre ``(c0 + (s-1)/2, r0 + (s-1)/2)``. Images are quantised to 8 bits, like MNIST itself.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mistlib.checks import check_positive_int
from mistlib.data.base import InstanceDataset, check_number, check_range
from mistlib.data.mnist import _digits, center_ink, mnist_fingerprint, mnist_source

INK = slice(4, 24)  # MNIST fits each digit's ink in the central 20x20 of its 28x28 frame
SNAP = math.sqrt(2)  # pasting at whole pixels moves two centres together by at most sqrt(2) px


@dataclass(frozen=True)
class MNISTEasyConfig:
    """MNIST easy (§7.1): a digit of class k in cell k (row-major) of a grid, jittered about the centre.

    Example:
        >>> MNISTEasyConfig().grid ** 2  # digits (and classes) per image
        9
        >>> MNISTEasyConfig(grid=4)
        Traceback (most recent call last):
        ...
        ValueError: grid must be <= 3 (one class 0..9 per cell), got 4
    """

    image_size: int = 80  # side of the square image (pixels)
    grid: int = 3  # the grid has grid x grid cells, holding classes 0 .. grid^2 - 1 in order (so grid <= 3)
    frame_size: int = 28  # side of the frame each digit is pasted in (pixels; 28 = MNIST's own size)
    jitter: float = 1 / 8  # std of the Gaussian offset of a digit's centre, per axis, in units of cell side

    def __post_init__(self) -> None:
        check_positive_int("image_size", self.image_size, minimum=8)
        check_positive_int("grid", self.grid)
        if self.grid > 3:
            raise ValueError(f"grid must be <= 3 (one class 0..9 per cell), got {self.grid}")
        check_positive_int("frame_size", self.frame_size, minimum=4)
        if self.frame_size > self.image_size:
            raise ValueError(f"frame_size must be <= image_size={self.image_size}, got {self.frame_size}")
        check_number("jitter", self.jitter, 0.0, 1.0)


@dataclass(frozen=True)
class MNISTHardConfig:
    """MNIST hard (§7.1): digits of random identity (repeats allowed) and size at Poisson-disk positions.

    Example:
        >>> config = MNISTHardConfig(num_digits=5)
        >>> config.num_digits, tuple(round(v, 2) for v in config.domain())
        (5, (12.0, 55.0))
    """

    image_size: int = 80  # side of the square image (pixels)
    num_digits: int = 9  # digits per image; each is drawn uniformly from the split's digits
    min_distance: float = 12.0  # least distance between two digits' centres (pixels); boxes may overlap
    frame_sizes: tuple[int, int] = (22, 34)  # frame sides drawn uniformly from this inclusive range (pixels);
    # a box is 20/28 of its frame rounded to whole pixels (box_side), so the default boxes span 16 .. 24 px
    max_tries: int = 20  # Poisson-disk draws per image before giving up (a draw may stop short of the count)

    def __post_init__(self) -> None:
        check_positive_int("image_size", self.image_size, minimum=8)
        check_positive_int("num_digits", self.num_digits)
        check_number("min_distance", self.min_distance, 0.0, open_low=True)
        check_range("frame_sizes", self.frame_sizes, 4, self.image_size)
        if any(isinstance(s, bool) or not isinstance(s, int) for s in self.frame_sizes):
            raise ValueError(f"frame_sizes must be integers (pixels), got {self.frame_sizes!r}")
        if self.domain()[1] <= 0:
            raise ValueError(
                f"frame_sizes {self.frame_sizes} leave no room for a box inside a {self.image_size} image"
            )
        check_positive_int("max_tries", self.max_tries)
        side, radius = self.domain()[1], self.min_distance + SNAP
        # Disks of radius r/2 around the centres are disjoint, lie in the domain grown by r/2, and cover at
        # most pi / (2 sqrt 3) of it (Thue's hexagonal packing bound).
        most = math.pi / (2 * math.sqrt(3)) * (side + radius) ** 2 / (math.pi * radius**2 / 4)
        if self.num_digits > most:
            raise ValueError(
                f"num_digits={self.num_digits} cannot fit at min_distance={self.min_distance} px in an "
                f"{self.image_size}-px image (at most {int(most)}); lower num_digits or min_distance"
            )

    def domain(self) -> tuple[float, float]:
        """``(low, side)``: centres are drawn in ``[low, low + side]^2``, so every box lies in the image.

        Example:
            >>> tuple(round(v, 2) for v in MNISTHardConfig(frame_sizes=(28, 28)).domain())  # boxes of 20 px
            (10.0, 59.0)
        """
        half = box_side(self.frame_sizes[1]) / 2 + 0.5  # largest half box + the snap to whole pixels
        return half - 0.5, self.image_size - 2 * half


def box_side(frame: int | np.ndarray) -> int | np.ndarray:
    """Side (pixels) of the box of a digit pasted in a frame of side ``frame``: 20/28 of it, in whole pixels.

    The margin ``round(frame / 7)`` (= 4/28 of the frame) is the same on both sides, so the box is centred.

    Example:
        >>> [box_side(s) for s in (22, 23, 28, 34)]
        [16, 17, 20, 24]
    """
    frames = np.asarray(frame, dtype=np.int64)
    sides = frames - 2 * np.rint(frames / 7).astype(np.int64)
    return int(sides) if sides.ndim == 0 else sides


@functools.lru_cache(maxsize=4)
def _centred_digits(split: str, fingerprint: str) -> tuple[np.ndarray, np.ndarray]:
    """The split's digits with their ink centred (cached per MNIST source)."""
    images, labels = _digits(split)
    return center_ink(images), labels


def resize_digits(digits: np.ndarray, size: int) -> np.ndarray:
    """Resize uint8 digits ``(M, 28, 28)`` to frames ``(M, size, size)``, as uint8.

    The central 20x20 (the ink) is resized, bilinear and antialiased, to the ``box_side(size)`` pixels at
    the centre of the frame; the rest of the frame stays black, so no ink leaves the digit's box.

    Example:
        >>> resize_digits(np.zeros((2, 28, 28), np.uint8), 14).shape
        (2, 14, 14)
    """
    if size == digits.shape[-1]:
        return digits
    side = box_side(size)
    margin = (size - side) // 2
    core = torch.from_numpy(digits[:, INK, INK]).float()[:, None]  # (M, 1, 20, 20): all of the ink
    core = F.interpolate(core, size=(side, side), mode="bilinear", antialias=True)  # (M, 1, b, b)
    out = np.zeros((len(digits), size, size), np.uint8)
    out[:, margin : margin + side, margin : margin + side] = core[:, 0].round().clamp(0, 255).to(torch.uint8)
    return out


def paste_digits(
    digits: np.ndarray, ids: np.ndarray, sizes: np.ndarray, corners: np.ndarray, image_size: int
) -> np.ndarray:
    """Composite digits onto black canvases with a pixelwise max.

    Args:
        digits: uint8 ``(D, 28, 28)`` source digits.
        ids, sizes: int ``(N, L)``: which digit, and its frame side in pixels.
        corners: int ``(N, L, 2)``: each frame's top-left pixel as (row, col); frames may stick out.
        image_size: side of the square canvases.

    Returns: uint8 ``(N, image_size, image_size)``.

    Example:
        >>> white = np.full((1, 28, 28), 255, np.uint8)  # one all-ink digit
        >>> canvas = paste_digits(white, np.array([[0]]), np.array([[4]]), np.array([[[1, 2]]]), image_size=8)
        >>> # a 4-px frame at (1, 2): only its central box_side(4) = 2 pixels get the (all-ink) core
        >>> canvas.shape, np.argwhere(canvas[0]).min(0).tolist(), np.argwhere(canvas[0]).max(0).tolist()
        ((1, 8, 8), [2, 3], [3, 4])
    """
    margin = int(sizes.max())  # paste into a padded canvas, so frames sticking out need no special case
    canvas = np.zeros((len(ids), image_size + 2 * margin, image_size + 2 * margin), np.uint8)
    low, high = -margin, image_size + margin - sizes  # clip outliers to the padded canvas
    rows = np.clip(corners[..., 0], low, high) + margin
    cols = np.clip(corners[..., 1], low, high) + margin
    for size in np.unique(sizes):
        which = np.nonzero(sizes == size)  # (n, l) pairs with this frame size
        frames = resize_digits(digits[ids[which]], int(size))  # (M, s, s)
        for frame, n, r, c in zip(frames, which[0], rows[which], cols[which], strict=True):
            view = canvas[n, r : r + size, c : c + size]
            np.maximum(view, frame, out=view)
    return canvas[:, margin : margin + image_size, margin : margin + image_size].copy()  # not a view


def frame_geometry(centers: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Snap wished frame centres to whole pixels.

    Args:
        centers: ``(N, L, 2)`` as (x, y) pixels. sizes: int ``(N, L)`` frame sides.

    Returns: ``corners`` int64 ``(N, L, 2)`` as (row, col), the snapped ``centers`` float32 ``(N, L, 2)`` and
    ``boxes`` float32 ``(N, L, 4)`` xyxy (the central ``box_side`` pixels of each frame).

    Example:
        >>> corners, centers, boxes = frame_geometry(np.array([[[30.2, 40.9]]]), np.array([[22]]))
        >>> corners.tolist(), centers.tolist()  # a 22-px frame's centre sits on a half pixel
        ([[[30, 20]]], [[[30.5, 40.5]]])
        >>> boxes[0, 0].tolist()  # xyxy, side box_side(22) = 16 px (22 * 20 / 28 = 15.7)
        [22.5, 32.5, 38.5, 48.5]
    """
    half = (sizes[..., None] - 1) / 2  # (N, L, 1)
    corner_xy = np.rint(centers - half).astype(np.int64)  # (N, L, 2) as (col, row)
    snapped = corner_xy + half
    side = box_side(sizes)[..., None] / 2
    boxes = np.concatenate([snapped - side, snapped + side], axis=-1)  # (N, L, 4)
    return corner_xy[..., ::-1].copy(), snapped.astype(np.float32), boxes.astype(np.float32)


class _MNISTScene(InstanceDataset):
    """Shared code of the MNIST scenes: digits, rendering, and the per-instance record."""

    instance_fields = ("boxes", "labels", "centers", "digit_ids", "frame_sizes", "corners")

    def __init__(
        self, split: str = "train", size: int = 1000, seed: int = 0, config: Any = None, cache: bool = True
    ) -> None:
        super().__init__(split, size, seed, config, cache)
        self.digit_ids = self.data["digit_ids"]  # (size, L) index into mnist_digits(split)
        self.frame_sizes = self.data["frame_sizes"]  # (size, L) frame side in pixels
        self.corners = self.data["corners"]  # (size, L, 2) frame top-left pixel (row, col)

    def source(self) -> str:
        return f"{mnist_source()}:{mnist_fingerprint(self.split)}"

    def digits(self) -> tuple[np.ndarray, np.ndarray]:
        """The split's ink-centred digits uint8 ``(D, 28, 28)`` and labels ``(D,)``."""
        return _centred_digits(self.split, mnist_fingerprint(self.split))

    def instance_images(self, index: int) -> torch.Tensor:
        """Each digit of image ``index`` pasted alone (before the max): float32 ``(L, H, W)`` in [0, 1]."""
        ids, sizes = self.digit_ids[index].numpy(), self.frame_sizes[index].numpy()
        corners = self.corners[index].numpy()
        layers = paste_digits(
            self.digits()[0], ids[:, None], sizes[:, None], corners[:, None], self.config.image_size
        )
        return torch.from_numpy(layers).float() / 255  # (L, H, W)

    def _render(self, ids: np.ndarray, sizes: np.ndarray, centers: np.ndarray) -> dict[str, torch.Tensor]:
        digits, labels = self.digits()
        corners, snapped, boxes = frame_geometry(centers, sizes)
        images = paste_digits(digits, ids, sizes, corners, self.config.image_size)  # (N, H, W)
        return {
            "images": torch.from_numpy(images)[:, None],  # (N, 1, H, W) uint8
            "boxes": torch.from_numpy(boxes),
            "labels": torch.from_numpy(labels[ids]),
            "centers": torch.from_numpy(snapped),
            "num_instances": torch.full((len(ids),), ids.shape[1], dtype=torch.int64),
            "digit_ids": torch.from_numpy(ids.astype(np.int64)),
            "frame_sizes": torch.from_numpy(sizes.astype(np.int64)),
            "corners": torch.from_numpy(corners),
        }


class MNISTEasy(_MNISTScene):
    """MNIST easy (§7.1): classes 0..8 in row-major order on a 3x3 grid, each jittered by N(0, (cell/8)^2).

    Centres are not clipped (the jitter is exactly Gaussian), so a digit near the border may be cut by it;
    its box is then kept whole (a square that sticks out of the image).

    Images are ``(size, 1, 80, 80)`` float32 in [0, 1]; besides the fields of :class:`InstanceDataset`,
    ``digit_ids``, ``frame_sizes`` ``(size, L)`` and ``corners`` ``(size, L, 2)`` record how each was made.

    Example:
        >>> easy = MNISTEasy("test", size=2, cache=False)
        >>> easy.images.shape, easy.labels[0].tolist()
        (torch.Size([2, 1, 80, 80]), [0, 1, 2, 3, 4, 5, 6, 7, 8])
        >>> easy[0]["boxes"].shape, easy.instance_images(0).shape  # (L, 4) and (L, H, W)
        (torch.Size([9, 4]), torch.Size([9, 80, 80]))
    """

    name = "mnist-easy"
    config_class = MNISTEasyConfig

    def generate(self, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        cfg, n, k = self.config, self.size, self.config.grid**2
        _, labels = self.digits()
        ids = np.empty((n, k), np.int64)
        for cls in range(k):  # a random digit of class `cls` for cell `cls` of every image
            pool = np.flatnonzero(labels == cls)
            ids[:, cls] = pool[rng.integers(0, len(pool), size=n)]
        cell = cfg.image_size / cfg.grid
        grid = (np.arange(cfg.grid) + 0.5) * cell - 0.5  # cell centres along one axis (pixels)
        cell_centers = np.stack(np.meshgrid(grid, grid, indexing="xy"), -1).reshape(k, 2)  # (k, 2) row-major
        centers = cell_centers + rng.normal(0.0, cfg.jitter * cell, size=(n, k, 2))  # (N, k, 2)
        return self._render(ids, np.full((n, k), cfg.frame_size), centers)


class MNISTHard(_MNISTScene):
    """MNIST hard (§7.1): ``num_digits`` digits of random class and size at Poisson-disk positions.

    Centres come from Bridson's Poisson-disk sampler (``scipy.stats.qmc.PoissonDisk``) run with radius
    ``min_distance + sqrt(2)`` inside a square that keeps the largest box inside the image; snapping frames to
    whole pixels moves two centres together by at most ``sqrt(2)``, so ``min_distance`` holds between the
    final centres. The sampler grows its points from a uniform first one and returns the first ``num_digits``;
    at the default density they fill the square. If it stops short of ``num_digits`` points (no room left
    around them) it is rerun on the same random stream, up to ``max_tries`` times.

    Images are ``(size, 1, 80, 80)`` float32 in [0, 1]; the extra fields are those of :class:`MNISTEasy`.

    Example:
        >>> hard = MNISTHard("test", size=2, config=MNISTHardConfig(num_digits=3), cache=False)
        >>> hard.images.shape, hard[1]["boxes"].shape, hard[1]["labels"].shape
        (torch.Size([2, 1, 80, 80]), torch.Size([3, 4]), torch.Size([3]))
        >>> bool(torch.pdist(hard.centers[0]).min() >= 12.0)  # min_distance holds between centres (x, y)
        True
    """

    name = "mnist-hard"
    config_class = MNISTHardConfig

    def generate(self, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        cfg, n, k = self.config, self.size, self.config.num_digits
        ids = rng.integers(0, len(self.digits()[1]), size=(n, k))
        sizes = rng.integers(cfg.frame_sizes[0], cfg.frame_sizes[1] + 1, size=(n, k))
        low, side = cfg.domain()
        centers = low + side * np.stack(
            [poisson_disk(k, (cfg.min_distance + SNAP) / side, cfg, rng) for _ in range(n)]
        )
        return self._render(ids, sizes, centers)


def poisson_disk(count: int, radius: float, config: MNISTHardConfig, rng: np.random.Generator) -> np.ndarray:
    """``count`` points in the unit square, pairwise at least ``radius`` apart: ``(count, 2)``.

    Raises ``ValueError`` (naming ``num_digits`` and ``min_distance``) after ``config.max_tries`` short draws.

    Example:
        >>> points = poisson_disk(5, 0.2, MNISTHardConfig(), np.random.default_rng(0))
        >>> points.shape, bool(torch.pdist(torch.from_numpy(points)).min() >= 0.2)
        ((5, 2), True)
    """
    from scipy.stats import qmc  # imported here: scipy.stats takes most of a second to import

    for _ in range(config.max_tries):
        try:
            engine = qmc.PoissonDisk(2, radius=radius, rng=rng)
        except TypeError:  # scipy < 1.15 calls the generator `seed`
            engine = qmc.PoissonDisk(2, radius=radius, seed=rng)
        points = engine.random(count)
        if len(points) == count:
            return points
    raise ValueError(
        f"could not place num_digits={config.num_digits} digits at min_distance={config.min_distance} px in "
        f"{config.max_tries} tries (max_tries); lower num_digits or min_distance"
    )
