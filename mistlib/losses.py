"""Task losses of §5: eq. (6), the reconstruction error of the placed patches, and eq. (7), the
multi-instance classification loss; with the authors' squared-histogram variant of eq. (7).

:func:`reconstruct` puts the decoded patches back with the inverse sampler ``S^-1`` (§5.1) and combines
them; :func:`multi_instance_loss` compares the histogram of predicted classes with that of the true ones
(§5.2).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from mistlib.checks import (
    check_float,
    check_images,
    check_rank,
    check_tensor,
)
from mistlib.sampler import COMPOSITES, place_patches

Reduction = Literal["mean", "none"]


def reconstruct(
    patches_out: torch.Tensor, keypoints: torch.Tensor, image_size: Sequence[int], composite: str = "sum"
) -> torch.Tensor:
    """``sum_k S^-1(P_k, x_k)`` of eq. (6): each patch placed in its own zero canvas, then all summed.

    ``composite="max"`` takes the pixelwise maximum of the canvases instead of their sum. It is our variant,
    not the paper's: two windows on the same digit then draw it once rather than twice, as our MNIST scenes
    are themselves composited (:mod:`mistlib.data.scenes`); research/README.md §6 measures why that matters
    for lifting. It suits bright instances on a zero background.

    Args:
        patches_out: (B, K, C, P, P) decoded patches (checked by :func:`mistlib.sampler.place_patches`).
        keypoints: (B, K, 3) as (x, y, s) in pixels, x right, y down.
        image_size: (H, W) of the canvas.
        composite: "sum" (eq. 6) or "max".

    Returns:
        (B, C, H, W).

    Example:
        >>> kp = torch.tensor([[[15.5, 15.5, 32.0], [15.5, 15.5, 32.0]]])  # the same window twice
        >>> reconstruct(torch.ones(1, 2, 1, 32, 32), kp, (40, 40))[0, 0, 15, 15].item()
        2.0
        >>> reconstruct(torch.ones(1, 2, 1, 32, 32), kp, (40, 40), composite="max")[0, 0, 15, 15].item()
        1.0
    """
    if composite not in COMPOSITES:
        raise ValueError(f"composite must be one of {COMPOSITES}, got {composite!r}")
    return place_patches(patches_out, keypoints, image_size, composite)  # (B, C, H, W)


def reconstruction_loss(
    images: torch.Tensor,
    patches_out: torch.Tensor,
    keypoints: torch.Tensor,
    reduction: Reduction = "mean",
    composite: str = "sum",
) -> torch.Tensor:
    """Eq. (6), ``|| I - sum_k S^-1(P_k, x_k) ||^2``, as a mean squared error.

    The paper writes the squared l2 norm; we return its mean over pixels and batch, i.e. the norm divided by
    B * C * H * W. The constant only rescales the learning rate, and makes losses comparable across sizes.

    Args:
        images: (B, C, H, W) floats in [0, 1].
        patches_out: (B, K, C, P, P) decoded patches.
        keypoints: (B, K, 3) as (x, y, s) in pixels.
        reduction: "mean" -> scalar; "none" -> (B,), each image's mean over (C, H, W).
        composite: how the placed patches combine, "sum" (eq. 6) or "max" (see :func:`reconstruct`).

    Example:
        >>> kp = torch.tensor([[[15.5, 15.5, 32.0]]])
        >>> reconstruction_loss(torch.ones(1, 1, 32, 32), torch.zeros(1, 1, 1, 32, 32), kp)
        tensor(1.)
    """
    check_images("images", images)
    check_tensor("patches_out", patches_out)
    if patches_out.dim() == 5 and patches_out.shape[2] != images.shape[1]:
        raise ValueError(f"patches_out has C = {patches_out.shape[2]}, images has C = {images.shape[1]}")
    residual = images - reconstruct(patches_out, keypoints, tuple(images.shape[-2:]), composite)
    return _reduce(residual.pow(2).flatten(1).mean(1), reduction)  # eq. (6) / (C H W), (B,) before reducing


def _reduce(per_image: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    if reduction == "mean":
        return per_image.mean()
    if reduction == "none":
        return per_image
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def _label_histogram(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Check (B, K, N) logits, (B, L) labels padded with -1; return q (B, N), the mean one-hot label."""
    check_rank("logits", logits, 3, "(B, K, num_classes)")
    check_float("logits", logits)  # finiteness is not checked: a diverged network's NaN reaches the trainer
    check_tensor("labels", labels)
    if labels.dim() != 2 or labels.shape[0] != logits.shape[0]:
        raise ValueError(f"labels must have shape (B={logits.shape[0]}, L), got shape {tuple(labels.shape)}")
    if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"labels must be an integer tensor (int64, -1 = padding), got dtype {labels.dtype}")
    n = logits.shape[-1]
    if labels.numel() and bool(((labels < -1) | (labels >= n)).any()):
        raise ValueError(f"labels must be in [0, {n}) or -1 (padding), got values {labels.unique().tolist()}")
    valid = labels >= 0  # (B, L)
    count = valid.sum(1, keepdim=True)  # (B, 1)
    if bool((count == 0).any()):
        raise ValueError("labels must hold at least one valid (non -1) label per image")
    one_hot = F.one_hot(labels.clamp(min=0).long(), n) * valid.unsqueeze(-1)  # (B, L, N)
    return one_hot.sum(1).to(logits.dtype) / count  # (B, N)


def multi_instance_loss(
    logits: torch.Tensor, labels: torch.Tensor, reduction: Reduction = "mean"
) -> torch.Tensor:
    """Eq. (7): cross-entropy ``H(q, p)`` between the label histogram and the mean patch prediction.

    ``q_b = (1/L_b) sum_l onehot(y_l)`` over the valid labels of image b and ``p_b = (1/K) sum_k
    softmax(logits_bk)``; ``H(q, p) = -sum_c q_c log p_c``, with ``log p`` computed stably as
    ``logsumexp_k log_softmax(logits) - log K``. Its minimum over p is the entropy of q (at p = q), which is
    zero only when all labels of the image agree.

    Args:
        logits: (B, K, N) class scores of the K patches, N classes.
        labels: (B, L) int64 class ids padded with -1 (L_b may differ; each image needs >= 1 valid label).
        reduction: "mean" -> scalar batch mean; "none" -> (B,).

    Example:
        >>> multi_instance_loss(torch.zeros(1, 2, 4), torch.tensor([[0, 3, -1]]))  # p uniform: log 4
        tensor(1.3863)
    """
    q = _label_histogram(logits, labels)  # (B, N)
    log_p = torch.logsumexp(F.log_softmax(logits, dim=-1), dim=1) - math.log(logits.shape[1])  # (B, N)
    return _reduce(-(q * log_p).sum(-1), reduction)  # eq. (7)


def histogram_loss_sq(
    logits: torch.Tensor, labels: torch.Tensor, reduction: Reduction = "mean"
) -> torch.Tensor:
    """Ablation of eq. (7) from the authors' public code: ``(1/2) sum_c (p_c - q_c)^2`` replaces ``H(q, p)``.

    Same histograms as :func:`multi_instance_loss` (q from the labels, p the mean patch softmax), compared
    by half the squared error summed over classes; zero at p = q. Shapes and arguments as there.

    Example:
        >>> histogram_loss_sq(torch.zeros(1, 2, 4), torch.tensor([[0, -1]]))  # (9/16 + 3/16) / 2
        tensor(0.3750)
    """
    q = _label_histogram(logits, labels)  # (B, N)
    p = logits.softmax(dim=-1).mean(1)  # (B, N)
    return _reduce(0.5 * (p - q).pow(2).sum(-1), reduction)
