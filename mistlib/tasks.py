"""Task networks ``T_tau`` of §5 in the §8 layout: the patch auto-encoder (§5.1) and classifier (§5.2).

Both networks process each extracted patch on its own, weights shared across the K patches, and accept any
leading batch dims such as ``(B, K, C, P, P)``. Their losses, eq. (6) and eq. (7), are in
:mod:`mistlib.losses`; the compact versions for the CPU in :mod:`mistlib.compact`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mistlib.checks import (
    check_finite,
    check_float,
    check_positive_int,
    check_tensor,
)


def _norm_conv(c_in: int, c_out: int, kernel: int, up: bool = False) -> nn.Sequential:
    """Layer norm -> ReLU -> conv (``up``: 2x2 stride-2 transposed conv). ``GroupNorm(1, c)`` is LayerNorm
    over (C, H, W) with a per-channel affine."""
    conv = (
        nn.ConvTranspose2d(c_in, c_out, 2, stride=2)
        if up
        else nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2)
    )
    return nn.Sequential(nn.GroupNorm(1, c_in), nn.ReLU(), conv)


class ResBlock(nn.Module):
    """Two 3x3 stride-1 convs with an identity skip, pre-activation style: ``x + conv(conv(x))``, each conv
    preceded by layer norm and ReLU. (N, c, h, w) -> (N, c, h, w).

    The second conv starts at zero, so every block starts as the identity ("zero gamma", Goyal et al. 2017):
    the 30 blocks of the auto-encoder first train like a shallow network.

    Example:
        >>> block = ResBlock(4)
        >>> x = torch.rand(2, 4, 8, 8)  # (N, c, h, w)
        >>> block(x).shape, torch.equal(block(x), x)  # the identity until trained
        (torch.Size([2, 4, 8, 8]), True)
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_norm_conv(channels, channels, 3), _norm_conv(channels, channels, 3))
        nn.init.zeros_(self.body[-1][-1].weight)
        nn.init.zeros_(self.body[-1][-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _stage(channels: int, blocks: int) -> nn.Sequential:
    return nn.Sequential(*[ResBlock(channels) for _ in range(blocks)])


class PatchEncoder(nn.Module):
    """§8 encoder: ``levels`` x [``blocks`` ResNet blocks, 2x2 max-pool], channels ``w, 2w, 4w, ...``.

    The input conv sees the raw patch *without* layer norm: normalising the patch itself would make the
    network blind to contrast (``norm(a P + b) = norm(P)``), so a window with one faint stroke would be
    encoded like a full-contrast digit. Every later conv has layer norm before it. After each pool but the
    last, a 1x1 conv doubles the channels. (N, C, P, P) -> (N, D), D = 2**(levels-1) w (P / 2**levels)**2.

    Attributes:
        latent_shape: ``(2**(levels-1) w, P / 2**levels, P / 2**levels)``, the feature map before flattening.
        latent_dim: D, the product of ``latent_shape``.

    Example:
        >>> encoder = PatchEncoder(channels=1, width=4, levels=2, blocks=1, patch_size=8)
        >>> encoder.latent_shape, encoder(torch.rand(3, 1, 8, 8)).shape  # D = 2 * 4 * (8 / 4)**2
        ((8, 2, 2), torch.Size([3, 32]))
    """

    def __init__(self, channels: int, width: int, levels: int, blocks: int, patch_size: int) -> None:
        super().__init__()
        widths = [width * 2**level for level in range(levels)]
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1)]  # (N, w, P, P)
        for level, c in enumerate(widths):
            layers += [_stage(c, blocks), nn.MaxPool2d(2)]  # (N, c, P / 2**(level+1), ...)
            if level + 1 < levels:
                layers.append(_norm_conv(c, 2 * c, 1))  # channels double after the pool
        self.layers = nn.Sequential(*layers)
        side = patch_size // 2**levels
        self.latent_shape = (widths[-1], side, side)  # (16w, 1, 1) at the §8 defaults
        self.latent_dim = math.prod(self.latent_shape)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return self.layers(patches).flatten(1)  # (N, D)


class PatchDecoder(nn.Module):
    """§8 decoder, the encoder's mirror: ``levels`` x [2x2 stride-2 transposed conv, ``blocks`` ResNet
    blocks], channels halving on the way up, then layer norm -> 3x3 conv to C channels -> sigmoid.
    latent (N, D) -> (N, C, P, P) in (0, 1), with D as in :class:`PatchEncoder` of the same arguments.

    Example:
        >>> decoder = PatchDecoder(channels=1, width=4, levels=2, blocks=1, patch_size=8)
        >>> patches = decoder(torch.rand(3, 32))  # latent (N, D) -> (N, C, P, P)
        >>> patches.shape, bool(((patches > 0) & (patches < 1)).all())
        (torch.Size([3, 1, 8, 8]), True)
    """

    def __init__(self, channels: int, width: int, levels: int, blocks: int, patch_size: int) -> None:
        super().__init__()
        widths = [width * 2**level for level in range(levels)]
        side = patch_size // 2**levels
        self.latent_shape = (widths[-1], side, side)
        layers: list[nn.Module] = []
        for level in reversed(range(levels)):
            c_in = widths[min(level + 1, levels - 1)]
            layers += [_norm_conv(c_in, widths[level], 2, up=True), _stage(widths[level], blocks)]  # side x 2
        layers += [_norm_conv(width, channels, 3), nn.Sigmoid()]  # (N, C, P, P)
        self.layers = nn.Sequential(*layers)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.layers(latent.view(-1, *self.latent_shape))  # (N, C, P, P)


def check_layout(channels: int, width: int, levels: int, patch_size: int) -> None:
    """Constructor checks of a patch network that halves a ``patch_size`` patch ``levels`` times.

    Example:
        >>> check_layout(channels=1, width=8, levels=5, patch_size=32)  # 32 / 2**5 = 1: fine
        >>> check_layout(channels=1, width=8, levels=5, patch_size=24)
        Traceback (most recent call last):
        ...
        ValueError: patch_size must be divisible by 2**levels = 32, got 24
    """
    for name, value in [("channels", channels), ("base_width", width), ("levels", levels)]:
        check_positive_int(name, value)
    check_positive_int("patch_size", patch_size)
    if patch_size % 2**levels:
        raise ValueError(f"patch_size must be divisible by 2**levels = {2**levels}, got {patch_size}")


class PatchNet(nn.Module):
    """What every task network shares: an ``encoder`` (N, C, P, P) -> (N, D), input checks, batch folding.

    Subclasses add a ``decoder`` (N, D) -> (N, C, P, P) (auto-encoders) or a ``head`` (N, D) -> (N, classes)
    (classifiers); ``encoder.latent_dim`` is D.

    Example:
        >>> encoder = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
        >>> PatchNet(channels=1, patch_size=4, encoder=encoder).encode(torch.rand(2, 5, 1, 4, 4)).shape
        torch.Size([2, 5, 3])
    """

    def __init__(self, channels: int, patch_size: int, encoder: nn.Module) -> None:
        super().__init__()
        self.channels, self.patch_size, self.encoder = channels, patch_size, encoder

    def encode(self, patches: torch.Tensor) -> torch.Tensor:
        """patches (..., C, P, P) finite floats in [0, 1], >= 1 leading dim -> latent (..., D)."""
        check_tensor("patches", patches)
        shape = (self.channels, self.patch_size, self.patch_size)
        if patches.dim() < 4 or tuple(patches.shape[-3:]) != shape:
            raise ValueError(
                f"patches must have shape (..., {', '.join(map(str, shape))}) with at least one batch dim, "
                f"got shape {tuple(patches.shape)}"
            )
        check_float("patches", patches)
        check_finite("patches", patches)
        lead = patches.shape[:-3]
        return self.encoder(patches.reshape(-1, *shape)).view(*lead, -1)  # (..., D)


class PatchAutoencoder(PatchNet):
    """The shared patch auto-encoder ``T_tau`` of §5.1, laid out as in §8.

    5 down levels (3 ResNet blocks, 2x2 max-pool; channels 8, 16, 32, 64, 128 at ``base_width=8``) take a
    32x32 patch to a 128 x 1 x 1 bottleneck; 5 up levels (2x2 stride-2 transposed conv, 3 ResNet blocks)
    and a sigmoid conv bring it back. Layer norm (``GroupNorm(1, c)``) precedes every conv but the input one
    (see :class:`PatchEncoder`). There are deliberately *no* encoder -> decoder (U-Net) skips: with them the
    network could copy any window to its output, every window would reconstruct equally well, and L_task
    would give the heatmap no reason to look for digits. Through a 128-number bottleneck only patches that
    look like the recurring instances (centred digits) come back well.

    Size at ``channels=1, base_width=8``: 2,487,489 parameters (encoder 1,194,400; decoder 1,293,089), an
    fp16 checkpoint of 4.74 MiB, under the 8 MiB budget (3 channels: 2,487,779). ``base_width=16`` would
    need 9.93 M parameters (18.9 MiB), so 8 it is, which also matches the authors' classifier (8..128).

    Shapes: patches (..., C, P, P) floats in [0, 1] -> (..., C, P, P) in (0, 1); :meth:`encode` gives the
    latent (..., D), D = 128 at the defaults, and :meth:`decode` maps it back.

    ``parts=(encoder, decoder)`` swaps the §8 layout for any pair of modules with the same contract
    (:func:`mistlib.compact.compact_autoencoder`); the layout arguments are then unused.

    Example:
        >>> net = PatchAutoencoder()
        >>> net(torch.rand(2, 9, 1, 32, 32)).shape
        torch.Size([2, 9, 1, 32, 32])
        >>> net.encode(torch.rand(5, 1, 32, 32)).shape
        torch.Size([5, 128])
    """

    def __init__(
        self,
        channels: int = 1,
        base_width: int = 8,
        levels: int = 5,
        blocks_per_level: int = 3,
        patch_size: int = 32,
        parts: tuple[nn.Module, nn.Module] | None = None,
    ) -> None:
        if parts is None:  # the §8 layout
            check_layout(channels, base_width, levels, patch_size)
            check_positive_int("blocks_per_level", blocks_per_level, minimum=0)
            layout = (channels, base_width, levels, blocks_per_level, patch_size)
            parts = (PatchEncoder(*layout), PatchDecoder(*layout))
        super().__init__(channels, patch_size, parts[0])
        self.decoder = parts[1]

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """latent (..., D), >= 1 leading dim -> patches (..., C, P, P) in (0, 1)."""
        check_tensor("latent", latent)
        if latent.dim() < 2 or latent.shape[-1] != self.encoder.latent_dim:
            raise ValueError(
                f"latent must have shape (..., {self.encoder.latent_dim}) with at least one batch dim, "
                f"got shape {tuple(latent.shape)}"
            )
        check_float("latent", latent)
        out = self.decoder(latent.reshape(-1, latent.shape[-1]))  # (N, C, P, P)
        return out.view(*latent.shape[:-1], *out.shape[1:])  # (..., C, P, P)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """patches (..., C, P, P) -> decoded patches (..., C, P, P); the latent is the only link."""
        return self.decode(self.encode(patches))


class PatchClassifier(PatchNet):
    """The shared patch classifier of §5.2: the auto-encoder's encoder plus one dense layer (§8).

    Size at ``channels=1, num_classes=10, base_width=8``: 1,195,690 parameters (encoder 1,194,400; dense
    1,290), an fp16 checkpoint of 2.28 MiB.

    Shapes: patches (..., C, P, P) floats in [0, 1] -> logits (..., num_classes), not softmaxed.

    ``encoder=`` swaps the §8 encoder for any module (N, C, P, P) -> (N, D) with a ``latent_dim`` attribute
    (:func:`mistlib.compact.compact_classifier`); the layout arguments are then unused.

    Example:
        >>> PatchClassifier()(torch.rand(2, 9, 1, 32, 32)).shape
        torch.Size([2, 9, 10])
    """

    def __init__(
        self,
        channels: int = 1,
        num_classes: int = 10,
        base_width: int = 8,
        levels: int = 5,
        blocks_per_level: int = 3,
        patch_size: int = 32,
        encoder: nn.Module | None = None,
    ) -> None:
        if encoder is None:  # the §8 layout
            check_layout(channels, base_width, levels, patch_size)
            check_positive_int("blocks_per_level", blocks_per_level, minimum=0)
            encoder = PatchEncoder(channels, base_width, levels, blocks_per_level, patch_size)
        super().__init__(channels, patch_size, encoder)
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.head = nn.Linear(self.encoder.latent_dim, num_classes)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """patches (..., C, P, P) -> logits (..., num_classes)."""
        return self.head(self.encode(patches))
