"""The patch sampler ``S`` of §4 (eq. 5), a spatial transformer, and its inverse ``S^{-1}`` of §5.1 (eq. 6).

``sample_patches`` resamples the square window ``(x, y, s)`` of an image to a ``P x P`` patch by bilinear
interpolation; ``place_patches`` puts a patch back into an otherwise-zero canvas at its window (and, with
a composite, combines the K of them into one image). Each is one ``torch.nn.functional.grid_sample`` call
(for the inverse, onto the few pixels around each window, then scattered into the image), differentiable
w.r.t. the pixels and the keypoints.

Coordinates (see :mod:`mistlib`): pixel ``(i, j)`` has its centre at ``x = j, y = i`` and the image
covers ``[-0.5, W - 0.5] x [-0.5, H - 0.5]``. That is exactly ``grid_sample``'s ``align_corners=False``
frame, in which the normalised coordinate -1 is the *outer edge* of the first pixel and +1 the outer edge
of the last, so a pixel coordinate ``u`` in an image of width ``W`` maps to ``(2 u + 1) / W - 1``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from mistlib.checks import (
    check_float,
    check_images,
    check_keypoints,
    check_positive_int,
    check_rank,
)

COMPOSITES = ("sum", "max")  # how placed patches combine into one image (place_patches)


def _normalise(u: torch.Tensor, length: int) -> torch.Tensor:
    """Pixel coordinate ``u`` (centres at integers) -> ``grid_sample`` coordinate, ``align_corners=False``."""
    return (2 * u + 1) / length - 1


def _bilinear(source: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """``grid_sample`` as used by both directions: bilinear, zeros outside, ``align_corners=False``."""
    return F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def sample_patches(images: torch.Tensor, keypoints: torch.Tensor, size: int = 32) -> torch.Tensor:
    """``S(I, x)``, eq. (5): the window ``(x, y, s)`` of each keypoint resampled to ``size x size``.

    Patch pixel ``(i, j)`` (row ``i``, column ``j``) samples the image at the centre of the ``i, j``-th cell
    of the window split into ``size x size`` cells::

        u_j = x - s/2 + (j + 1/2) * s / size        v_i = y - s/2 + (i + 1/2) * s / size

    by bilinear interpolation, with zeros outside the image (``grid_sample``, ``mode="bilinear"``,
    ``padding_mode="zeros"``, ``align_corners=False`` with the conversion of the module docstring; the
    image is extended by zero pixels, so samples in the outer half pixel fade towards 0). With
    ``s == size`` and a window aligned to the pixel grid (``x - (s-1)/2`` and ``y - (s-1)/2`` integers) the
    sample points are pixel centres and the patch is the plain crop ``images[..., y0:y0+s, x0:x0+s]``.
    Differentiable w.r.t. ``images`` and ``keypoints`` (x, y and s); all K patches in one call.

    Args:
        images: (B, C, H, W) finite floats.
        keypoints: (B, K, 3) as (x, y, s) in pixels, ``s > 0``; cast to the dtype of ``images``.
        size: P, side of the output patches in pixels.

    Returns:
        (B, K, C, P, P) patches.

    Example:
        >>> images = torch.arange(36.0).view(1, 1, 6, 6)
        >>> sample_patches(images, torch.tensor([[[2.5, 1.5, 2.0]]]), size=2)[0, 0, 0]
        tensor([[ 8.,  9.],
                [14., 15.]])
    """
    check_images("images", images)
    check_keypoints("keypoints", keypoints, batch=images.shape[0])
    size = check_positive_int("size", size)
    batch, channels, height, width = images.shape
    k = keypoints.shape[1]
    keypoints = keypoints.to(images)
    x, y, s = keypoints.unbind(-1)  # (B, K) each
    steps = (torch.arange(size, device=images.device, dtype=images.dtype) + 0.5) / size  # (P,) in (0, 1)
    offsets = (steps - 0.5)[None, None] * s[..., None]  # (B, K, P): (i + 1/2) s / P - s/2
    u = _normalise(x[..., None] + offsets, width)  # (B, K, P) columns
    v = _normalise(y[..., None] + offsets, height)  # (B, K, P) rows
    grid = torch.stack(torch.broadcast_tensors(u[:, :, None, :], v[:, :, :, None]), dim=-1)  # (B, K, P, P, 2)
    grid = grid.reshape(batch, k * size, size, 2)  # (B, K * P, P, 2): the K patches stacked along rows
    out = _bilinear(images, grid)  # (B, C, K * P, P), eq. (5)
    return out.view(batch, channels, k, size, size).permute(0, 2, 1, 3, 4)  # (B, K, C, P, P)


def place_patches(
    patches: torch.Tensor,
    keypoints: torch.Tensor,
    image_size: Sequence[int],
    composite: str | None = None,
) -> torch.Tensor:
    """``S^{-1}(P, x)`` of §5.1: each patch resampled back into an otherwise-zero canvas at its window.

    Inverse warp: canvas pixel ``(r, c)`` reads the patch at its continuous patch-frame coordinate
    ``((c - x + s/2) * P / s - 1/2, (r - y + s/2) * P / s - 1/2)`` (patch pixel centres at integers), by
    bilinear interpolation with zeros outside the patch. In ``grid_sample``'s normalised frame
    (``align_corners=False``) this is simply ``(2 (c - x) / s, 2 (r - y) / s)``. It inverts
    :func:`sample_patches`: ``place_patches(sample_patches(I, x), x).sum(1)`` equals ``I`` inside
    non-overlapping windows, exactly for windows aligned to the pixel grid with ``s == P``, and up to the
    blur of two bilinear interpolations otherwise (exact for images that are affine in x and y); pixels
    within half a patch pixel of a window's edge fade towards 0. Differentiable w.r.t. ``patches`` and
    ``keypoints``; all K patches in one call.

    A patch can only land on the ``L x L`` pixels around its window (``L`` a little over the largest ``s``),
    so each is resampled onto such a local canvas and then written into the image (see
    :func:`local_canvases`): the same numbers as resampling onto the whole image, without the ``H x W``
    canvas per patch.

    Args:
        patches: (B, K, C, P, P) floats. Not checked for NaN: they are usually a task network's output, and a
            diverging network should surface as a non-finite loss in the trainer, not as an input error.
        keypoints: (B, K, 3) as (x, y, s) in pixels, ``s > 0``; cast to the dtype of ``patches``.
        image_size: (H, W) of the canvas.
        composite: None for one canvas per patch; "sum" (eq. 6) or "max" (their pixelwise maximum, floored
            at the zero background) to combine the K canvases into one image.

    Returns:
        (B, K, C, H, W) one canvas per patch, or (B, C, H, W) with a ``composite``.

    Example:
        >>> patch = torch.tensor([[[[[1.0, 2.0], [3.0, 4.0]]]]])  # (1, 1, 1, 2, 2)
        >>> place_patches(patch, torch.tensor([[[1.5, 0.5, 2.0]]]), (3, 4))[0, 0, 0]
        tensor([[0., 1., 2., 0.],
                [0., 3., 4., 0.],
                [0., 0., 0., 0.]])
    """
    check_rank("patches", patches, 5, "(B, K, C, P, P)")
    check_float("patches", patches)
    if patches.shape[-1] != patches.shape[-2]:
        raise ValueError(f"patches must be square, shape (B, K, C, P, P), got shape {tuple(patches.shape)}")
    check_keypoints("keypoints", keypoints, batch=patches.shape[0])
    if keypoints.shape[1] != patches.shape[1]:
        raise ValueError(
            f"keypoints has K = {keypoints.shape[1]} keypoints, expected K = {patches.shape[1]} to match "
            f"patches of shape {tuple(patches.shape)}"
        )
    if not isinstance(image_size, Sequence) or len(image_size) != 2:
        raise ValueError(f"image_size must be (H, W), two positive integers, got {image_size!r}")
    height = check_positive_int("image_size[0] (H)", image_size[0])
    width = check_positive_int("image_size[1] (W)", image_size[1])
    if composite not in (None, *COMPOSITES):
        raise ValueError(f"composite must be None or one of {COMPOSITES}, got {composite!r}")
    canvases, corner = local_canvases(patches, keypoints.to(patches))  # (B, K, C, L, L), (B, K, 2)
    return _write_canvases(canvases, corner, (height, width), composite)


def local_canvases(
    patches: torch.Tensor, keypoints: torch.Tensor, frame: tuple[torch.Tensor, int] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each patch resampled onto the ``L x L`` pixels around its window, and where those pixels are.

    Canvas pixel ``(r, c)`` can read patch ``k`` only if ``|c - x| < s/2 + s/(2P)`` (the window plus the
    half patch pixel over which bilinear interpolation fades to zero), and likewise for ``r``. So the
    ``L = ceil(s_max (1 + 1/P)) + 2`` pixels from ``floor(x - s_max (1 + 1/P) / 2)`` on hold every pixel
    the patch reaches, ``s_max`` being the largest ``s`` of the batch (one read of it from the device).

    Args: patches (B, K, C, P, P); keypoints (B, K, 3) as (x, y, s), same dtype; frame: optionally the
    corners (B, K, 2) and side ``L`` of canvases chosen by the caller (they must hold each window).

    Returns: canvases (B, K, C, L, L) and corners (B, K, 2) int64: (row, column) of each canvas' top-left
    pixel in the image (it may lie outside the image).

    Example:
        >>> canvas, corner = local_canvases(torch.ones(1, 1, 1, 2, 2), torch.tensor([[[1.5, 0.5, 2.0]]]))
        >>> canvas.shape, corner.tolist()
        (torch.Size([1, 1, 1, 5, 5]), [[[-1, 0]]])
    """
    batch, k, channels, size, _ = patches.shape
    x, y, s = keypoints.unbind(-1)  # (B, K) each
    if frame is None:
        half = float(s.detach().max()) * (1 + 1 / size) / 2
        side = math.ceil(2 * half) + 2  # L
        corner = torch.stack([(y - half).floor(), (x - half).floor()], -1).detach()  # (B, K, 2) (row, col)
    else:
        corner, side = frame[0].to(patches.dtype), frame[1]
    pixels = torch.arange(side, device=patches.device, dtype=patches.dtype)  # (L,)
    u = 2 * (corner[..., 1:] + pixels - x[..., None]) / s[..., None]  # (B, K, L) columns, normalised
    v = 2 * (corner[..., :1] + pixels - y[..., None]) / s[..., None]  # (B, K, L) rows
    grid = torch.stack(torch.broadcast_tensors(u[:, :, None, :], v[:, :, :, None]), dim=-1)  # (B, K, L, L, 2)
    flat = patches.reshape(batch * k, channels, size, size)  # (B * K, C, P, P)
    out = _bilinear(flat, grid.reshape(batch * k, side, side, 2))  # (B * K, C, L, L): S^{-1} of eq. (6)
    return out.view(batch, k, channels, side, side), corner.long()


def read_frames(images: torch.Tensor, corner: torch.Tensor, side: int) -> torch.Tensor:
    """The ``side x side`` pixels of ``images`` from each top-left ``corner``, zero outside the image.

    Args: images (B, C, H, W) or (B, K, C, H, W) (one image per frame); corner (B, K, 2) int64 (row, col).

    Returns: (B, K, C, side, side); :func:`local_canvases` and :func:`place_patches` write such frames.

    Example:
        >>> read_frames(torch.arange(9.0).view(1, 1, 3, 3), torch.tensor([[[-1, 1]]]), 2)[0, 0, 0]
        tensor([[0., 0.],
                [1., 2.]])
    """
    height, width = images.shape[-2:]
    batch, k = corner.shape[:2]
    padded = F.pad(images, (side, side, side, side))  # zeros around the image
    padded_w = width + 2 * side
    row = corner[..., 0].clamp(-side, height) + side
    col = corner[..., 1].clamp(-side, width) + side
    pixels = torch.arange(side, device=images.device)
    index = (
        (row[..., None] + pixels)[..., :, None] * padded_w + (col[..., None] + pixels)[..., None, :]
    ).flatten(2)
    channels = images.shape[-3]
    if images.dim() == 4:  # (B, C, area) read at (B, 1, K * L * L)
        flat = padded.flatten(2)
        out = flat.gather(2, index.reshape(batch, 1, -1).expand(batch, channels, -1))
        return out.view(batch, channels, k, side, side).transpose(1, 2)
    flat = padded.flatten(3)  # (B, K, C, area)
    out = flat.gather(3, index[:, :, None].expand(batch, k, channels, -1))
    return out.view(batch, k, channels, side, side)


def _write_canvases(
    canvases: torch.Tensor, corner: torch.Tensor, image_size: tuple[int, int], composite: str | None
) -> torch.Tensor:
    """Local canvases (B, K, C, L, L) with top-left pixels ``corner`` (B, K, 2) written into the image.

    The image is padded by ``L`` pixels on every side, so that every local canvas (its corner clamped to
    the padded frame) lands inside it; the padding is cropped away at the end. A composite scatters all K
    canvases into one image (B, C, H, W) (sum, or amax over a zero image); without one, each gets its own
    image (B, K, C, H, W).
    """
    height, width = image_size
    batch, k, channels, side = canvases.shape[:4]
    padded_w = width + 2 * side
    corner = (
        torch.stack([corner[..., 0].clamp(-side, height), corner[..., 1].clamp(-side, width)], -1) + side
    )  # (B, K, 2) in the padded frame
    pixels = torch.arange(side, device=canvases.device)
    index = (corner[..., :1] + pixels)[..., :, None] * padded_w + (corner[..., 1:] + pixels)[..., None, :]
    index = index.flatten(2)  # (B, K, L * L) flat positions in the padded image
    area = (height + 2 * side) * padded_w
    if composite is None:  # one image per patch
        out = canvases.new_zeros(batch * k, channels, area)
        src = canvases.reshape(batch * k, channels, side * side)
        out = out.scatter(2, index.reshape(batch * k, 1, -1).expand_as(src), src)
        out = out.view(batch, k, channels, height + 2 * side, padded_w)
    else:
        src = canvases.transpose(1, 2).reshape(batch, channels, k * side * side)  # (B, C, K * L * L)
        index = index.reshape(batch, 1, -1).expand_as(src)
        out = canvases.new_zeros(batch, channels, area)
        if composite == "sum":
            out = out.scatter_add(2, index, src)
        else:
            out = out.scatter_reduce(2, index, src, "amax", include_self=True)
        out = out.view(batch, channels, height + 2 * side, padded_w)
    return out[..., side : side + height, side : side + width]
