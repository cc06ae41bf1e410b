"""Compact task networks for the CPU: a strided-convolution auto-encoder and classifier (§5, not §8).

The §8 auto-encoder spends 73 MFLOPs on every 32 x 32 patch (3 ResNet blocks at each of 5 levels), so a
lifting step of K = 9 patches per image, which runs the task network forward and backward several times,
is dominated by it on a CPU. These replace the ResNet stages by one stride-2 convolution per level and the
bottleneck by a small dense code (64 numbers by default): 3.7 MFLOPs a patch for the auto-encoder
(``FlopCounterMode``). They keep the contract of :class:`~mistlib.tasks.PatchAutoencoder` and
:class:`~mistlib.tasks.PatchClassifier` (they *are* those classes, built from these parts), so the model,
the trainer and the losses do not change.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mistlib.tasks import PatchAutoencoder, PatchClassifier, check_layout


class CompactEncoder(nn.Module):
    """``levels`` x [3x3 stride-2 conv, ReLU], channels ``w, 2w, 4w, ...``, then a dense layer to the code.

    (N, C, P, P) -> (N, D), D = ``code``. The first conv sees the raw patch, as in
    :class:`~mistlib.tasks.PatchEncoder` (no normalisation that would hide contrast). ``depth`` adds that
    many [3x3 stride-1 conv, ReLU] after each stride-2 one: a deeper encoder at the same resolutions
    (research/README.md §17: at depth 1 the classifier names more digits, and trains in about twice the time).
    ``norm`` puts a GroupNorm (groups of up to 8 channels' worth: ``gcd(8, channels)`` groups) between each
    conv and its ReLU; it normalises features, never the raw patch (research §20: with it the classifier
    leaves eq. (7)'s chance plateau within 100 steps at any width).

    Example:
        >>> CompactEncoder(channels=1, width=4, levels=2, code=8, patch_size=8)(torch.rand(3, 1, 8, 8)).shape
        torch.Size([3, 8])
        >>> deeper = CompactEncoder(channels=1, width=4, levels=2, code=8, patch_size=8, depth=1)
        >>> sum(isinstance(layer, nn.Conv2d) for layer in deeper.layers), deeper(torch.rand(3, 1, 8, 8)).shape
        (4, torch.Size([3, 8]))
        >>> normed = CompactEncoder(channels=1, width=4, levels=2, code=8, patch_size=8, depth=1, norm=True)
        >>> [layer.num_groups for layer in normed.layers if isinstance(layer, nn.GroupNorm)]
        [4, 4, 8, 8]
    """

    def __init__(
        self,
        channels: int,
        width: int,
        levels: int,
        code: int,
        patch_size: int,
        depth: int = 0,
        norm: bool = False,
    ) -> None:
        super().__init__()
        widths = [channels] + [width * 2**level for level in range(levels)]
        layers: list[nn.Module] = []
        for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
            layers += _conv_relu(c_in, c_out, stride=2, norm=norm)  # side / 2
            layers += _same_size_convs(c_out, depth, norm)
        side = patch_size // 2**levels
        self.layers = nn.Sequential(*layers, nn.Flatten(), nn.Linear(widths[-1] * side * side, code))
        self.latent_dim = code

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return self.layers(patches)  # (N, D)


class CompactDecoder(nn.Module):
    """The encoder's mirror: dense layer, ``levels`` x [4x4 stride-2 transposed conv], sigmoid.

    (N, D) -> (N, C, P, P) in (0, 1). ``depth`` adds that many [3x3 stride-1 conv, ReLU] after each
    transposed conv but the last, as in :class:`CompactEncoder`.

    Example:
        >>> out = CompactDecoder(channels=1, width=4, levels=2, code=8, patch_size=8)(torch.rand(3, 8))
        >>> out.shape, bool(((out > 0) & (out < 1)).all())
        (torch.Size([3, 1, 8, 8]), True)
    """

    def __init__(
        self, channels: int, width: int, levels: int, code: int, patch_size: int, depth: int = 0
    ) -> None:
        super().__init__()
        widths = [width * 2**level for level in reversed(range(levels))] + [channels]
        side = patch_size // 2**levels
        self.latent_shape = (widths[0], side, side)
        layers: list[nn.Module] = [nn.Linear(code, widths[0] * side * side), nn.ReLU()]
        layers.append(nn.Unflatten(1, self.latent_shape))
        for index, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            layers.append(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1))  # side x 2
            if index < levels - 1:
                layers += [nn.ReLU(), *_same_size_convs(c_out, depth)]
            else:
                layers.append(nn.Sigmoid())
        self.layers = nn.Sequential(*layers)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.layers(latent)  # (N, C, P, P)


def _conv_relu(c_in: int, c_out: int, stride: int, norm: bool = False) -> list[nn.Module]:
    """A 3x3 conv (padding 1), then a GroupNorm of ``gcd(8, c_out)`` groups if ``norm``, then a ReLU."""
    conv = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1)
    return [conv, nn.GroupNorm(math.gcd(8, c_out), c_out), nn.ReLU()] if norm else [conv, nn.ReLU()]


def _same_size_convs(channels: int, depth: int, norm: bool = False) -> list[nn.Module]:
    """``depth`` x [3x3 stride-1 conv, (GroupNorm,) ReLU] at ``channels`` channels (the nets' ``depth``)."""
    return [layer for _ in range(depth) for layer in _conv_relu(channels, channels, stride=1, norm=norm)]


def compact_autoencoder(
    channels: int = 1,
    width: int = 16,
    levels: int = 3,
    code: int = 64,
    patch_size: int = 32,
    depth: int = 0,
    norm: bool = False,
) -> PatchAutoencoder:
    """A :class:`~mistlib.tasks.PatchAutoencoder` built from :class:`CompactEncoder` and
    :class:`CompactDecoder`: patches (..., C, P, P) -> (..., C, P, P) through a ``code``-number latent.
    ``norm`` normalises the encoder's features (:class:`CompactEncoder`), not the decoder's.

    Size at the defaults: 196,721 parameters (the §8 auto-encoder: 2,487,489).

    Example:
        >>> net = compact_autoencoder()
        >>> net(torch.rand(2, 9, 1, 32, 32)).shape, net.encode(torch.rand(5, 1, 32, 32)).shape
        (torch.Size([2, 9, 1, 32, 32]), torch.Size([5, 64]))
    """
    check_layout(channels, width, levels, patch_size)
    layout = (channels, width, levels, code, patch_size, depth)
    return PatchAutoencoder(
        channels, patch_size=patch_size, parts=(CompactEncoder(*layout, norm=norm), CompactDecoder(*layout))
    )


def compact_classifier(
    channels: int = 1,
    num_classes: int = 10,
    width: int = 16,
    levels: int = 3,
    code: int = 64,
    patch_size: int = 32,
    depth: int = 0,
    norm: bool = False,
) -> PatchClassifier:
    """A :class:`~mistlib.tasks.PatchClassifier` on a :class:`CompactEncoder`: (..., C, P, P) -> logits.

    Example:
        >>> compact_classifier()(torch.rand(2, 9, 1, 32, 32)).shape
        torch.Size([2, 9, 10])
    """
    check_layout(channels, width, levels, patch_size)
    encoder = CompactEncoder(channels, width, levels, code, patch_size, depth, norm)
    return PatchClassifier(channels, num_classes, patch_size=patch_size, encoder=encoder)
