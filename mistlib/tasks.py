"""Task networks ``T_tau`` and task losses of §5: patch auto-encoder (eq. 6), classifier (eq. 7); §8 layout.

Both networks process each extracted patch on its own, weights shared across the K patches, and accept any
leading batch dims such as ``(B, K, C, P, P)``. :func:`reconstruction_loss` puts the decoded patches back
with the inverse sampler ``S^-1`` (§5.1, eq. 6); :func:`multi_instance_loss` compares the histogram of
predicted classes with that of the true ones (§5.2, eq. 7).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from mistlib.checks import (
    check_finite,
    check_float,
    check_images,
    check_positive_int,
    check_rank,
    check_tensor,
)
from mistlib.sampler import COMPOSITES, place_patches

Reduction = Literal["mean", "none"]


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
    the 30 blocks of the auto-encoder first train like a shallow network. Overfitting 8 blob patches with
    Adam 1e-3, it halved the MSE after 300 steps (0.021 vs 0.042); at lr 5e-4 the two ended level.

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
