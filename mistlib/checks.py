"""Input validation for the public entry points: one error message style for the whole library.

Every check raises ``ValueError`` naming the argument, what was received and what was expected, so a user
who passes ``(80, 80)`` where ``(B, C, H, W)`` is expected reads exactly that. Inner functions trust their
inputs; only public functions call these.

The tensor checks (shape, dtype, finiteness: the NaN test reads the device) can be switched off for code
that has already validated its inputs, as kornia's ``KORNIA_CHECKS`` does: ``with checks(False): ...``
(the lifting trainer wraps its stages in it after checking each batch once), or ``MIST_CHECKS=0`` in the
environment for a whole process. Checks of plain Python arguments (K, sizes, names) always run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

_enabled = os.environ.get("MIST_CHECKS", "1") != "0"


def checks_enabled() -> bool:
    """Whether the tensor checks run (see the module docstring).

    Example:
        >>> with checks(False):
        ...     checks_enabled()
        False
    """
    return _enabled


@contextmanager
def checks(enabled: bool) -> Iterator[None]:
    """Switch the tensor checks on or off inside a ``with`` block, restoring the previous state after it.

    Example:
        >>> with checks(False):
        ...     check_finite("scores", torch.tensor([float("nan")]))  # not checked: no error
    """
    global _enabled
    previous, _enabled = _enabled, enabled
    try:
        yield
    finally:
        _enabled = previous


def check_tensor(name: str, value: object) -> torch.Tensor:
    """Raise unless ``value`` is a tensor (any shape); return it.

    Example:
        >>> check_tensor("images", torch.zeros(2, 3)).shape
        torch.Size([2, 3])
        >>> check_tensor("images", [[0.0]])
        Traceback (most recent call last):
        ...
        ValueError: images must be a torch.Tensor, got list
    """
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def check_rank(name: str, tensor: torch.Tensor, rank: int, layout: str) -> None:
    """Raise unless ``tensor`` has ``rank`` dimensions; ``layout`` spells them, e.g. ``"(B, C, H, W)"``.

    Example:
        >>> check_rank("images", torch.zeros(2, 1, 8, 8), 4, "(B, C, H, W)")
        >>> check_rank("images", torch.zeros(80, 80), 4, "(B, C, H, W)")
        Traceback (most recent call last):
        ...
        ValueError: images must have shape (B, C, H, W), got shape (80, 80)
    """
    if not _enabled:
        return
    check_tensor(name, tensor)
    if tensor.dim() != rank:
        raise ValueError(f"{name} must have shape {layout}, got shape {tuple(tensor.shape)}")


def check_float(name: str, tensor: torch.Tensor) -> None:
    """Raise unless ``tensor`` (any shape) is floating point.

    Example:
        >>> check_float("images", torch.zeros(1, 1, 2, 2))
        >>> check_float("images", torch.zeros(1, 1, 2, 2, dtype=torch.uint8))
        Traceback (most recent call last):
        ...
        ValueError: images must be a floating-point tensor, got dtype torch.uint8
    """
    if not _enabled:
        return
    if not tensor.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {tensor.dtype}")


def check_finite(name: str, tensor: torch.Tensor) -> None:
    """Raise if ``tensor`` (any shape) holds NaN or infinity (one device sync; entry points only).

    Example:
        >>> check_finite("scores", torch.tensor([0.0, 1.0]))
        >>> check_finite("scores", torch.tensor([0.0, float("nan"), float("inf")]))
        Traceback (most recent call last):
        ...
        ValueError: scores contains 2 NaN or infinite value(s)
    """
    if not _enabled:
        return
    if not bool(torch.isfinite(tensor).all()):
        bad = int((~torch.isfinite(tensor)).sum())
        raise ValueError(f"{name} contains {bad} NaN or infinite value(s)")


def check_images(name: str, images: torch.Tensor, channels: int | None = None) -> None:
    """Raise unless ``images`` is a finite float (B, C, H, W) tensor, with ``channels`` channels if given.

    Example:
        >>> check_images("images", torch.rand(2, 1, 8, 8), channels=1)
        >>> check_images("images", torch.rand(2, 3, 8, 8), channels=1)
        Traceback (most recent call last):
        ...
        ValueError: images must have 1 channel(s) (shape (B, 1, H, W)), got shape (2, 3, 8, 8)
    """
    if not _enabled:
        return
    check_rank(name, images, 4, "(B, C, H, W)")
    check_float(name, images)
    if images.shape[0] == 0:
        raise ValueError(
            f"{name} is an empty batch (B = 0), shape {tuple(images.shape)}: pass at least one image"
        )
    if channels is not None and images.shape[1] != channels:
        raise ValueError(
            f"{name} must have {channels} channel(s) (shape (B, {channels}, H, W)), "
            f"got shape {tuple(images.shape)}"
        )
    check_finite(name, images)


def check_unit_range(name: str, images: torch.Tensor, slack: float = 1e-3) -> None:
    """Raise unless every value of ``images`` lies in [0, 1] (within ``slack``): what MIST expects.

    Example:
        >>> check_unit_range("images", torch.tensor([0.0, 1.0]))
        >>> check_unit_range("images", torch.tensor([0.0, 255.0]))
        Traceback (most recent call last):
        ...
        ValueError: images must hold values in [0, 1], got values up to 255 (8-bit images: divide by 255)
    """
    if not _enabled or images.numel() == 0:
        return
    low, high = float(images.min()), float(images.max())
    if low < -slack or high > 1 + slack:
        hint = " (8-bit images: divide by 255)" if 1 + slack < high <= 255 + slack and low >= -slack else ""
        value = f"down to {low:.4g}" if low < -slack else f"up to {high:.4g}"
        raise ValueError(f"{name} must hold values in [0, 1], got values {value}{hint}")


def check_keypoints(name: str, keypoints: torch.Tensor, batch: int | None = None) -> None:
    """Raise unless ``keypoints`` is a finite float ``(B, K, 3)`` tensor of ``(x, y, s)`` with ``s > 0``.

    ``batch``, when given, is the batch size ``B`` the keypoints must have (that of the images).

    Example:
        >>> check_keypoints("keypoints", torch.tensor([[[4.0, 5.0, 8.0]]]), batch=1)
        >>> check_keypoints("keypoints", torch.tensor([[[4.0, 5.0, 0.0]]]))
        Traceback (most recent call last):
        ...
        ValueError: keypoints must have positive patch sides s (keypoints[..., 2] > 0)
    """
    if not _enabled:
        return
    check_rank(name, keypoints, 3, "(B, K, 3) as (x, y, s)")
    if keypoints.shape[-1] != 3:
        raise ValueError(f"{name} must have shape (B, K, 3) as (x, y, s), got shape {tuple(keypoints.shape)}")
    check_float(name, keypoints)
    if batch is not None and keypoints.shape[0] != batch:
        raise ValueError(f"{name} has batch size {keypoints.shape[0]}, expected {batch} to match the images")
    check_finite(name, keypoints)
    if keypoints.numel() and bool((keypoints[..., 2] <= 0).any()):
        raise ValueError(f"{name} must have positive patch sides s (keypoints[..., 2] > 0)")


def check_scales(name: str, scales: torch.Tensor) -> None:
    """Raise unless ``scales`` is an ``(S,)``, positive, strictly increasing float tensor of side lengths.

    Example:
        >>> check_scales("scales", torch.tensor([16.0, 20.0, 25.0]))
        >>> check_scales("scales", torch.tensor([20.0, 16.0]))
        Traceback (most recent call last):
        ...
        ValueError: scales must be strictly increasing, got [20.0, 16.0]
    """
    if not _enabled:
        return
    check_rank(name, scales, 1, "(S,)")
    check_float(name, scales)
    if scales.numel() == 0:
        raise ValueError(f"{name} must hold at least one scale, got an empty tensor")
    check_finite(name, scales)
    if bool((scales <= 0).any()):
        raise ValueError(f"{name} must be positive side lengths, got {scales.tolist()}")
    if scales.numel() > 1 and bool((scales[1:] <= scales[:-1]).any()):
        raise ValueError(f"{name} must be strictly increasing, got {scales.tolist()}")


def check_positive_int(name: str, value: object, minimum: int = 1) -> int:
    """Raise unless ``value`` is an int ``>= minimum`` (``bool`` is refused); return it.

    Example:
        >>> check_positive_int("k", 9)
        9
        >>> check_positive_int("k", 0)
        Traceback (most recent call last):
        ...
        ValueError: k must be >= 1, got 0
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value
