"""The top-K extractor ``E_K`` of §4 (eq. 2-4) and its inverse ``E_K^{-1}``, the target heatmap of §6.

``topk_extract`` turns a scale-space heatmap ``h`` of shape ``(B, S, H, W)`` into K patches ``(x, y, s)``;
``target_heatmap`` builds the heatmap that ``topk_extract`` maps back to given patches, the lifting target
``h_bar`` of Algorithm 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from mistlib.checks import (
    check_finite,
    check_float,
    check_keypoints,
    check_positive_int,
    check_rank,
    check_scales,
)
from mistlib.heatmap import window_max

MOMENT_EPS = 1e-6  # epsilon of eq. (2), "to prevent divisions by zero"


def _check_scales_for(scales: torch.Tensor, num_scales: int, what: str) -> None:
    """Raise unless ``scales`` is a valid scale space with exactly ``num_scales`` entries."""
    check_scales("scales", scales)
    if scales.numel() != num_scales:
        raise ValueError(f"scales must have S = {num_scales} entries to match {what}, got {scales.numel()}")


def topk_extract(heatmap: torch.Tensor, k: int, scales: torch.Tensor, nms: int = 1) -> torch.Tensor:
    """``E_K``: the K strongest pixels of a scale-space heatmap and their scales (eq. 2-4).

    Locations, eq. (3): the top-K pixels of ``max_s h_s``, the per-pixel maximum over scales of the *raw*
    heatmap, as K distinct pixels in decreasing score order (``x`` = column, ``y`` = row).

    Non-maximum suppression: §3 connects the heatmap to top-K "through non-maximum suppression", and §4
    argues that the local spatial softmax already does it. It does not once a trained peak is broad: the
    pixels next to the strongest peak then outscore every other peak, and all K picks land on one object.
    With ``nms > 1`` only the pixels that are the maximum of their ``nms x nms`` neighbourhood compete
    (the authors' public code uses a 5 x 5 window); if there are fewer than K of them, the best other
    pixels fill the remaining places. ``nms = 1`` (the default) takes the top-K pixels as they are.

    Scale, eq. (2) + (4): the scale-normalised first moment at the selected pixel,
    ``s = sum_s h_s * scale_s / (sum_s h_s + 1e-6)``.

    Why not normalise first, as eq. (2) is written? After eq. (2) every pixel's values sum to (about) 1
    over scales, so ``max_s`` of the normalised map is ``>= 1/S`` everywhere, background included: a pixel
    where all scales respond ``1e-9`` scores as high as the strongest peak. The normalisation would erase
    *where* the peaks are. It is only needed to make eq. (4) a weighted mean, so we apply it there, at the
    K selected pixels only; the result for ``s`` is identical to eq. (2) followed by eq. (4).

    Gradients: ``s`` is differentiable w.r.t. the heatmap values at the selected pixels (what a naive
    baseline back-propagates through); ``x`` and ``y`` are integer-valued and carry no gradient.

    A pixel where the heatmap is zero at every scale (the local softmax underflows on a sharply trained
    heatmap, and E_K's runner-up picks can land there) would get ``s = 0 / (0 + 1e-6) = 0``, outside the
    scales and a division by zero for the sampler's inverse; ``s`` is therefore clamped into
    ``[scales[0], scales[-1]]``, where eq. (4), a weighted mean of the scales, keeps it anyway.

    Args:
        heatmap: (B, S, H, W) non-negative finite floats, e.g. the output of ``HeatmapNet``.
        k: K, number of patches, ``1 <= k <= H * W``.
        scales: (S,) positive, strictly increasing side lengths in pixels.
        nms: odd window side of the non-maximum suppression; 1 for none.

    Returns:
        (B, K, 3) as (x, y, s) in pixels, x right, y down; same dtype and device as ``heatmap``.

    Example:
        >>> h = torch.zeros(1, 2, 4, 5); h[0, 0, 1, 3] = 0.9; h[0, 1, 1, 3] = 0.3; h[0, 1, 2, 0] = 0.5
        >>> topk_extract(h, 2, torch.tensor([10.0, 20.0]))
        tensor([[[ 3.0000,  1.0000, 12.5000],
                 [ 0.0000,  2.0000, 20.0000]]])
        >>> broad = torch.tensor([[[[0.0, 0.2, 0.9, 0.8, 0.0, 0.5]]]])  # (1, 1, 1, 6): two peaks, one broad
        >>> topk_extract(broad, 2, torch.tensor([20.0]))[0, :, 0].tolist()  # both picks on the broad one
        [2.0, 3.0]
        >>> topk_extract(broad, 2, torch.tensor([20.0]), nms=3)[0, :, 0].tolist()
        [2.0, 5.0]
    """
    check_rank("heatmap", heatmap, 4, "(B, S, H, W)")
    if heatmap.shape[0] == 0 or heatmap.shape[1] == 0:
        raise ValueError(
            f"heatmap must have at least one image and one scale, got shape {tuple(heatmap.shape)}"
        )
    check_float("heatmap", heatmap)
    check_finite("heatmap", heatmap)
    batch, num_scales, height, width = heatmap.shape
    _check_scales_for(scales, num_scales, f"heatmap of shape {tuple(heatmap.shape)}")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= height * width:
        raise ValueError(f"k must be an integer in [1, H * W = {height * width}], got k = {k!r}")
    check_nms(nms)
    scales = scales.to(heatmap)
    peak = heatmap.amax(dim=1)  # (B, H, W), eq. (3) on the raw h
    if nms > 1:
        local_max = window_max(peak[:, None], nms, nms // 2)[:, 0]  # (B, H, W)
        # every local maximum ranks above every other pixel: the others are shifted below the lowest score,
        # and keep their order among themselves; the maxima keep their exact scores, so two maxima that
        # differ by less than the shift's float rounding (say 1e-16 and 0) are still ranked apart
        drop = (peak.amax() - peak.amin() + 1).detach()
        peak = torch.where(peak == local_max, peak, peak - drop)
    index = peak.flatten(1).topk(k, dim=1, sorted=True).indices  # (B, K)
    y = torch.div(index, width, rounding_mode="floor")  # (B, K) rows
    x = index - y * width  # (B, K) columns
    gather = index.unsqueeze(1).expand(batch, num_scales, k)  # (B, S, K)
    weights = heatmap.flatten(2).gather(2, gather)  # (B, S, K) responses h_s(x_k, y_k)
    s = (weights * scales[:, None]).sum(1) / (weights.sum(1) + MOMENT_EPS)  # (B, K), eq. (2) + eq. (4)
    s = torch.minimum(torch.maximum(s, scales[0]), scales[-1])  # a zero heatmap pixel: scales[0], not 0
    return torch.stack([x.to(heatmap.dtype), y.to(heatmap.dtype), s], dim=-1)  # (B, K, 3)


def check_nms(nms: object) -> int:
    """Raise unless ``nms`` is an odd positive integer (a window side); return it.

    Example:
        >>> check_nms(5)
        5
        >>> check_nms(4)
        Traceback (most recent call last):
        ...
        ValueError: nms must be an odd positive integer (1 for no suppression), got 4
    """
    if isinstance(nms, bool) or not isinstance(nms, int) or nms < 1 or nms % 2 == 0:
        raise ValueError(f"nms must be an odd positive integer (1 for no suppression), got {nms!r}")
    return nms


def _check_size(size: object) -> tuple[int, int]:
    """Raise unless ``size`` is ``(H, W)``, two positive integers; return it as a tuple."""
    if not isinstance(size, Sequence) or len(size) != 2:
        raise ValueError(f"size must be (H, W), two positive integers, got {size!r}")
    height = check_positive_int("size[0] (H)", size[0])
    width = check_positive_int("size[1] (W)", size[1])
    return height, width


def target_heatmap(
    keypoints: torch.Tensor, scales: torch.Tensor, size: Sequence[int], mass: torch.Tensor | None = None
) -> torch.Tensor:
    """``E_K^{-1}``: the target heatmap ``h_bar`` whose top-K extraction gives back ``keypoints`` (§6).

    Zeros everywhere except at the pixel of each keypoint: ``x`` and ``y`` are rounded to the nearest pixel
    (``floor(v + 0.5)``, ties go up) and clamped into the image. There a unit mass is split between the two
    scales that bracket ``s`` (``s`` first clamped into ``[scales[0], scales[-1]]``), linearly, so that the
    scale moment of eq. (4) is exactly ``s``: for ``scales[i] <= s <= scales[i+1]`` the weights are
    ``(scales[i+1] - s) / d`` at ``scales[i]`` and ``(s - scales[i]) / d`` at ``scales[i+1]``, with
    ``d = scales[i+1] - scales[i]``. With a single scale all the mass goes to it. Keypoints that round to
    the same pixel add up (that pixel then holds mass 2, 3, ...; its moment is the mean of their scales).

    Invariant: for keypoints that round to distinct pixels,
    ``topk_extract(target_heatmap(x, scales, (H, W)), K, scales)`` returns the rounded locations and ``s``
    (up to the ``1e-6`` of eq. 2), the order among equal peaks aside.

    Args:
        keypoints: (B, K, 3) as (x, y, s) in pixels, ``s > 0``.
        scales: (S,) positive, strictly increasing side lengths in pixels.
        size: (H, W) of the heatmap.
        mass: (B, K) each keypoint's mass instead of 1 (0 leaves a keypoint out), or None.

    Returns:
        (B, S, H, W) with the dtype and device of ``keypoints``.

    Example:
        >>> h = target_heatmap(torch.tensor([[[2.4, 0.6, 15.0]]]), torch.tensor([10.0, 20.0]), (3, 4))
        >>> h[0, :, 1, 2].tolist(), float(h.sum())
        ([0.5, 0.5], 1.0)
    """
    check_keypoints("keypoints", keypoints)
    check_scales("scales", scales)
    height, width = _check_size(size)
    batch, k, _ = keypoints.shape
    scales = scales.to(keypoints)
    num_scales = scales.numel()
    col = torch.floor(keypoints[..., 0] + 0.5).clamp(0, width - 1).long()  # (B, K)
    row = torch.floor(keypoints[..., 1] + 0.5).clamp(0, height - 1).long()  # (B, K)
    s = torch.minimum(torch.maximum(keypoints[..., 2], scales[0]), scales[-1])  # (B, K), clamped
    if num_scales == 1:
        low = torch.zeros_like(col)  # (B, K)
        w_high = torch.zeros_like(s)  # all mass on the single scale
    else:
        low = (torch.searchsorted(scales, s.contiguous(), right=True) - 1).clamp(0, num_scales - 2)  # (B, K)
        w_high = (s - scales[low]) / (scales[low + 1] - scales[low])  # (B, K), fraction for scales[low + 1]
    pixel = row * width + col  # (B, K)
    mass = torch.ones_like(s) if mass is None else mass.to(s)  # (B, K)
    flat = keypoints.new_zeros(batch, num_scales * height * width)  # (B, S * H * W)
    flat = flat.scatter_add(1, low * height * width + pixel, mass * (1 - w_high))
    if num_scales > 1:
        flat = flat.scatter_add(1, (low + 1) * height * width + pixel, mass * w_high)
    return flat.view(batch, num_scales, height, width)  # (B, S, H, W)


def lift_target(
    keypoints: torch.Tensor, scales: torch.Tensor, size: tuple[int, int], sigma: float, nms: int = 1
) -> torch.Tensor:
    """``h_bar = E_K^{-1}(x*)``: single points (sigma = 0) or Gaussian blobs with peak 1.

    With ``nms > 1`` a keypoint inside the ``nms x nms`` window of an earlier one (earlier in E_K's
    order, so stronger) is left out (:func:`suppressed`): the target then holds only keypoints that
    E_K with the same suppression could pick together.

    Args: keypoints (B, K, 3); scales (S,); size (H, W); sigma in pixels. Returns: (B, S, H, W).

    Example:
        >>> scales = torch.tensor([16.0, 24.0])
        >>> target = lift_target(torch.tensor([[[5.0, 6.0, 20.0]]]), scales, (10, 10), sigma=0.0)
        >>> target[0, :, 6, 5].tolist(), target.sum().item()
        ([0.5, 0.5], 1.0)
    """
    mass = None if nms == 1 else (~suppressed(keypoints, nms)).to(keypoints.dtype)  # (B, K)
    return _blur_target(target_heatmap(keypoints, scales, size, mass), sigma)  # (B, S, H, W)


def suppressed(keypoints: torch.Tensor, nms: int) -> torch.Tensor:
    """(B, K) bool: which keypoints (B, K, 3) round to a pixel within the ``nms x nms`` window of an
    earlier keypoint that is not itself suppressed (greedy, in the order given: E_K's score order).

    Example:
        >>> keypoints = torch.tensor([[[10.0, 10.0, 20.0], [14.0, 12.0, 20.0], [30.0, 10.0, 20.0]]])
        >>> suppressed(keypoints, 13).tolist(), suppressed(keypoints, 5).tolist()
        ([[False, True, False]], [[False, False, False]])
    """
    check_nms(nms)
    pixels = torch.floor(keypoints[..., :2] + 0.5)  # (B, K, 2), rounded as target_heatmap does
    near = (pixels[:, :, None] - pixels[:, None]).abs().amax(-1) <= nms // 2  # (B, K, K), Chebyshev
    dropped = torch.zeros(near.shape[:2], dtype=torch.bool, device=keypoints.device)  # (B, K)
    for k in range(1, keypoints.shape[1]):
        dropped[:, k] = (near[:, k, :k] & ~dropped[:, :k]).any(-1)
    return dropped


def _blur_target(target: torch.Tensor, sigma: float) -> torch.Tensor:
    """Each point of ``target`` (B, S, H, W) spread into a separable Gaussian of peak 1 (sigma > 0)."""
    if sigma <= 0:
        return target
    radius = max(1, int(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, device=target.device, dtype=target.dtype)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))  # (2r+1,), peak 1
    channels = target.shape[1]
    rows = kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    cols = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    blurred = F.conv2d(F.pad(target, (0, 0, radius, radius)), rows, groups=channels)
    return F.conv2d(F.pad(blurred, (radius, radius, 0, 0)), cols, groups=channels)
