"""The multiscale heatmap network ``H_eta`` of §4 and its local spatial softmax (LF-Net [24]).

``HeatmapNet`` runs one fully convolutional trunk, with the same weights, on the image resized to every
scale of a sparse scale space, upsamples each score map back to ``H x W`` and sharpens it with
:func:`local_spatial_softmax`, a soft local non-maximum suppression. Its output ``h`` of shape
``(B, S, H, W)`` is what the top-K extractor of :mod:`mistlib.extract` reads (eq. 2-4).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mistlib.checks import check_finite, check_float, check_images, check_positive_int, check_rank

SOFTMAX_EPS = 1e-6  # added to the window sum of the local softmax, as in LF-Net and the authors' code


def _check_kernel(kernel_size: object) -> int:
    """Raise unless ``kernel_size`` is an odd integer ``>= 1`` (a window centred on its pixel); return it."""
    check_positive_int("kernel_size", kernel_size)
    if kernel_size % 2 == 0:  # type: ignore[operator]
        raise ValueError(f"kernel_size must be odd (a window centred on its pixel), got {kernel_size}")
    return kernel_size  # type: ignore[return-value]


def _replicate_pad(x: torch.Tensor, r: int) -> torch.Tensor:
    """``F.pad(x, (r, r, r, r), mode="replicate")``: (..., H, W) -> (..., H + 2r, W + 2r).

    Under ``torch.compile`` it is built from concatenated edge slices instead: inductor's
    ``replication_pad2d_backward`` mis-strides channels-last gradients (seen with torch 2.13 on the CPU),
    which fails the compiled backward. The values are the same.
    """
    if r == 0 or not torch.compiler.is_compiling():
        return F.pad(x, (r, r, r, r), mode="replicate")
    x = torch.cat([x[..., :1].expand(*x.shape[:-1], r), x, x[..., -1:].expand(*x.shape[:-1], r)], dim=-1)
    edge = (*x.shape[:-2], r, x.shape[-1])
    return torch.cat([x[..., :1, :].expand(edge), x, x[..., -1:, :].expand(edge)], dim=-2)


def _sliding(x: torch.Tensor, k: int, dim: int, combine) -> torch.Tensor:
    """``combine`` (max or add) over every run of ``k`` consecutive entries along ``dim``: n -> n - k + 1.

    By doubling: ``power`` holds the runs of length 1, 2, 4, ... (each from two of the previous), and the
    runs of length k are assembled from the powers of two in k's binary expansion (15 = 8 + 4 + 2 + 1):
    about ``2 log2(k)`` whole-tensor operations instead of a pooling kernel's ``k`` reads per entry.
    """
    out = x.shape[dim] - k + 1
    result, offset, power, span = None, 0, x, 1
    while True:
        if k & span:  # this power of two is part of k: take the run of length span starting at offset
            piece = power.narrow(dim, offset, out)
            result = piece if result is None else combine(result, piece)
            offset += span
        if 2 * span > k:
            return result
        length = power.shape[dim] - span
        power = combine(power.narrow(dim, 0, length), power.narrow(dim, span, length))  # runs of 2 * span
        span *= 2


def window_max(x: torch.Tensor, kernel_size: int, padding: int = 0) -> torch.Tensor:
    """Maximum over each ``kernel_size`` x ``kernel_size`` window, stride 1: a row pass, then a column pass.

    The same values as ``F.max_pool2d(x, kernel_size, 1, padding)`` (a maximum is separable, and each pass
    is assembled by doubling, :func:`_sliding`): about 8 elementwise maxima per pass for the 15 x 15
    window of the local softmax, where ``max_pool2d`` reads 225 values per pixel. When a gradient is needed,
    the two passes are 1 x k and k x 1 ``max_pool2d`` calls instead (same values; their backward, a scatter
    to the recorded argmax, is about 2 x cheaper than that of a chain of maxima). ``padding`` pads with
    -inf, as max_pool2d does. x: (B, C, H, W) -> (B, C, H', W').

    Example:
        >>> x = torch.rand(2, 3, 9, 11)
        >>> torch.equal(window_max(x, 5, 2), F.max_pool2d(x, 5, 1, 2))
        True
    """
    if torch.is_grad_enabled() and x.requires_grad:  # the pooling kernels' backward is the cheaper one
        rows = F.max_pool2d(x, (1, kernel_size), stride=1, padding=(0, padding))
        return F.max_pool2d(rows, (kernel_size, 1), stride=1, padding=(padding, 0))
    if padding:
        x = F.pad(x, (padding,) * 4, value=float("-inf"))
    return _sliding(_sliding(x, kernel_size, -1, torch.maximum), kernel_size, -2, torch.maximum)


def window_sum(x: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Sum over each ``kernel_size`` x ``kernel_size`` window, stride 1, no padding: (B, C, H, W) ->
    (B, C, H - k + 1, W - k + 1). ``F.avg_pool2d(x, k, 1) * k**2`` up to the order of float additions.

    Example:
        >>> x = torch.rand(1, 2, 10, 12)
        >>> torch.allclose(window_sum(x, 5), F.avg_pool2d(x, 5, 1) * 25, atol=1e-5)
        True
    """
    return _sliding(_sliding(x, kernel_size, -1, torch.add), kernel_size, -2, torch.add)


def local_spatial_softmax(
    scores: torch.Tensor, kernel_size: int = 15, strength: float = 10.0
) -> torch.Tensor:
    """LF-Net's local spatial softmax: a soft, differentiable local non-maximum suppression (§4).

    For every pixel ``p``, with ``M(p)`` the maximum of ``scores`` over the ``kernel_size x kernel_size``
    window centred at ``p``::

        e(p)   = exp(strength * (v(p) - M(p)))
        out(p) = e(p) / (sum of e(q) over the window centred at p  +  1e-6)

    A local maximum has ``e = 1``; an isolated peak (all else much lower) comes out as ``~1``, while every
    pixel within the window of a stronger peak is suppressed towards 0. Each scale channel is processed
    on its own. Computed with pooling (max-pool and box sum), no loops.

    Border handling: windows that stick out of the image are completed by *replicating* the edge values
    (``F.pad(mode="replicate")`` before both the max and the sum). With zero padding the window sum at the
    border would count fewer terms, so border pixels would get systematically larger values and every
    top-K pick would land there (the "border bias" seen in an early prototype). With replication a constant
    map gives the same value ``1 / (kernel_size**2 + 1e-6)`` everywhere, border included.

    Args:
        scores: (B, S, H, W) raw scores, finite floats.
        kernel_size: side of the square window; odd, ``>= 1`` (§4: 15).
        strength: sharpness multiplying the score differences (authors' code: 10; LF-Net: 3).

    Returns:
        (B, S, H, W) values in [0, 1] (strictly positive unless ``exp`` underflows).

    Example:
        >>> v = torch.zeros(1, 1, 5, 5); v[0, 0, 2, 2] = 5.0
        >>> out = local_spatial_softmax(v, kernel_size=3, strength=10.0)
        >>> round(out[0, 0, 2, 2].item(), 4), out[0, 0, 2, 1].item() < 1e-20
        (1.0, True)
    """
    check_rank("scores", scores, 4, "(B, S, H, W)")
    check_float("scores", scores)
    kernel_size = _check_kernel(kernel_size)
    if isinstance(strength, bool) or not isinstance(strength, int | float) or not strength > 0:
        raise ValueError(f"strength must be a positive number, got {strength!r}")
    check_finite("scores", scores)
    r = kernel_size // 2
    padded = _replicate_pad(scores, r)  # (B, S, H + 2r, W + 2r): edge values repeated
    local_max = window_max(padded, kernel_size)  # M(p): (B, S, H, W)
    e = torch.exp(strength * (scores - local_max))  # e(p) in (0, 1], exactly 1 at every local maximum
    window = window_sum(_replicate_pad(e, r), kernel_size)  # (B, S, H, W): the box sum of e
    return e / (window + SOFTMAX_EPS)


@dataclass(frozen=True)
class HeatmapConfig:
    """Hyper-parameters of :class:`HeatmapNet`. The defaults follow §4 and fit 80x80 MNIST hard.

    Override what differs with ``dataclasses.replace(HeatmapConfig(), scales=(20.0,))``.

    Example:
        >>> HeatmapConfig(scales=(12.0, 24.0)).reference_size
        20.0
    """

    in_channels: int = 1  # C, image channels
    channels: int = 32  # width of the trunk (§4: 32)
    num_blocks: int = 4  # ResNet blocks of two 3x3 convs each (§4: 4)
    scales: tuple[float, ...] = (16.0, 20.0, 25.0)  # patch sides of the scale space, in pixels, sorted
    reference_size: float = 20.0  # object side (px) the trunk is tuned to: the scale run at resize factor 1
    softmax_kernel: int = 15  # window of the local spatial softmax (§4: 15x15)
    softmax_strength: float = 10.0  # sharpness of the local spatial softmax (authors' code: 10)

    def __post_init__(self) -> None:
        check_positive_int("in_channels", self.in_channels)
        check_positive_int("channels", self.channels)
        check_positive_int("num_blocks", self.num_blocks, minimum=0)
        _check_kernel(self.softmax_kernel)
        scales = list(self.scales)
        if not scales or min(scales) <= 0 or any(b <= a for a, b in zip(scales, scales[1:], strict=False)):
            raise ValueError(f"scales must be non-empty, positive and strictly increasing, got {self.scales}")
        if not self.reference_size > 0:
            raise ValueError(f"reference_size must be positive, got {self.reference_size}")
        if not self.softmax_strength > 0:
            raise ValueError(f"softmax_strength must be positive, got {self.softmax_strength}")


class ResBlock(nn.Module):
    """``relu(x + conv(relu(conv(x))))``, two 3x3 convolutions, stride 1: (B, F, H, W) -> (B, F, H, W).

    Example:
        >>> ResBlock(32)(torch.rand(1, 32, 9, 11)).shape
        torch.Size([1, 32, 9, 11])
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3)  # padded by _replicate_pad in forward
        self.conv2 = nn.Conv2d(channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv1(_replicate_pad(x, 1)))  # (B, C, H, W): edge-replicating padding
        return F.relu(x + self.conv2(_replicate_pad(h, 1)))


class HeatmapNet(nn.Module):
    """The multiscale heatmap network ``H_eta`` of §4: ``I (B, C, H, W) -> h (B, S, H, W)``.

    One trunk (3x3 conv ``C -> channels``, ``num_blocks`` ResNet blocks, ReLU, no downsampling) and a 1x1
    ``head`` to one score channel. All 3x3 convolutions pad by replicating the edge
    (:func:`_replicate_pad`, as ``padding_mode="replicate"`` would), so a constant image gives constant
    scores: no border bias before the local softmax either.

    Scale -> resize factor: the trunk is tuned to objects of side ``reference_size`` pixels. For a scale of
    side ``s`` the image is resized (bilinear, antialiased) by the factor ``reference_size / s``, to
    ``round(H * reference_size / s) x round(W * reference_size / s)``: a larger ``s`` shrinks the image so
    that an object of side ``s`` appears at ``reference_size`` pixels. The score map is upsampled back to
    ``H x W`` (bilinear, ``align_corners=False``). The same weights run at every scale, so the network cannot
    favour one (§4). Each scale's map then goes through :func:`local_spatial_softmax`.

    Attributes:
        scales: (S,) float buffer of the scale space (moves with ``.to(device)``; not saved in state dicts,
            the config is the source of truth).

    Example:
        >>> net = HeatmapNet(HeatmapConfig(scales=(16.0, 20.0, 25.0)))
        >>> net(torch.rand(2, 1, 37, 53)).shape
        torch.Size([2, 3, 37, 53])
    """

    def __init__(self, config: HeatmapConfig | None = None) -> None:
        super().__init__()
        self.config = config or HeatmapConfig()
        cfg = self.config
        self.stem = nn.Conv2d(cfg.in_channels, cfg.channels, 3)  # padded by _replicate_pad in trunk
        self.blocks = nn.Sequential(*(ResBlock(cfg.channels) for _ in range(cfg.num_blocks)))
        self.head = nn.Conv2d(cfg.channels, 1, kernel_size=1)
        self.register_buffer("scales", torch.tensor(cfg.scales, dtype=torch.float32), persistent=False)

    def resize_factors(self) -> list[float]:
        """``reference_size / s`` for every scale ``s``: the factor the image is resized by (length S).

        Example:
            >>> HeatmapNet(HeatmapConfig(scales=(10.0, 20.0, 40.0))).resize_factors()
            [2.0, 1.0, 0.5]
        """
        return [self.config.reference_size / s for s in self.config.scales]

    def trunk(self, images: torch.Tensor) -> torch.Tensor:
        """The shared fully convolutional network at one resolution: (B, C, h, w) -> (B, 1, h, w).

        Example:
            >>> HeatmapNet().trunk(torch.rand(2, 1, 30, 20)).shape
            torch.Size([2, 1, 30, 20])
        """
        x = F.relu(self.stem(_replicate_pad(images, 1)))  # (B, channels, h, w)
        return self.head(self.blocks(x))  # (B, 1, h, w)

    def scores(self, images: torch.Tensor) -> torch.Tensor:
        """Raw per-scale scores ``H_eta(I_s)`` upsampled to ``H x W``, before the local softmax.

        Args:
            images: (B, C, H, W) finite floats, ``C = config.in_channels``.

        Returns:
            (B, S, H, W); in general (B, S * O, H, W) for a head with O output channels.

        Example:
            >>> HeatmapNet().scores(torch.rand(1, 1, 40, 40)).shape
            torch.Size([1, 3, 40, 40])
        """
        check_images("images", images, channels=self.config.in_channels)
        height, width = images.shape[-2:]
        maps = []
        for size in self.scale_sizes(height, width):
            resized = images
            if size != (height, width):
                resized = F.interpolate(
                    images, size=size, mode="bilinear", align_corners=False, antialias=True
                )
            score = self.trunk(resized).float()  # (B, O, h_s, w_s); float32 under bf16 autocast too
            if size != (height, width):
                score = F.interpolate(score, size=(height, width), mode="bilinear", align_corners=False)
            maps.append(score)  # (B, O, H, W)
        return torch.cat(maps, dim=1)  # (B, S * O, H, W)

    def scale_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        """The ``(h_s, w_s)`` the image is resized to for each scale (S entries), as :meth:`scores` does.

        Example:
            >>> HeatmapNet().scale_sizes(80, 80)  # scales 16, 20, 25 px at reference size 20 px
            [(100, 100), (80, 80), (64, 64)]
        """
        return [(max(1, round(height * f)), max(1, round(width * f))) for f in self.resize_factors()]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The heatmap ``h``: per-scale scores sharpened by the local spatial softmax.

        Args:
            images: (B, C, H, W) finite floats, ``C = config.in_channels``.

        Returns:
            (B, S, H, W) values in [0, 1].

        Example:
            >>> HeatmapNet()(torch.rand(2, 1, 80, 80)).shape
            torch.Size([2, 3, 80, 80])
        """
        cfg = self.config
        return local_spatial_softmax(self.scores(images), cfg.softmax_kernel, cfg.softmax_strength)
