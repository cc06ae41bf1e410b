"""The MIST architecture of §3, eq. (1): ``T_tau(S(E_K(H_eta(I))))`` wired together in one module.

``MIST`` owns the two trainable parts, the heatmap network ``H_eta`` (§4) and the task (§5: its network
``T_tau`` and its loss, :mod:`mistlib.objective`), and runs the non-trainable glue between them: the top-K
extractor ``E_K`` and the patch sampler ``S``. Both parts can be passed in; by default they are built from
a :class:`MISTConfig`. Training it is the job of :mod:`mistlib.lifting` (Algorithm 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from mistlib.checks import check_images, check_keypoints, check_positive_int, check_unit_range
from mistlib.compact import compact_autoencoder, compact_classifier
from mistlib.extract import check_nms, topk_extract
from mistlib.heatmap import HeatmapConfig, HeatmapNet
from mistlib.objective import Classification, Reconstruction, Task
from mistlib.sampler import COMPOSITES, sample_patches
from mistlib.tasks import PatchAutoencoder, PatchClassifier

TaskName = Literal["reconstruct", "classify"]
TASK_NETWORKS = ("paper", "compact")  # MISTConfig.task_network


@dataclass(frozen=True)
class MISTConfig:
    """Everything that defines a MIST model. The defaults fit MNIST hard (§7.1).

    Override what differs with ``dataclasses.replace(MISTConfig(), k=25)``. Images fed to the model are
    ``(B, in_channels, image_size, image_size)``; it extracts ``k`` patches ``(x, y, s)`` per image.

    Example:
        >>> from dataclasses import replace
        >>> config = replace(MISTConfig(), k=25)
        >>> config.k, config.heatmap_config().scales
        (25, (16.0, 20.0, 25.0))
        >>> MISTConfig(task="detect")
        Traceback (most recent call last):
        ...
        ValueError: task must be 'reconstruct' or 'classify', got 'detect'
    """

    task: TaskName = "reconstruct"  # "reconstruct" (§5.1, auto-encoder) or "classify" (§5.2, classifier)
    image_size: int = 80  # H = W of the input images, in pixels
    in_channels: int = 1  # C, image channels
    k: int = 9  # K, patches extracted per image: the only supervision of the reconstruction task
    patch_size: int = 32  # P, side of each resampled patch fed to the task network (§8: 32)
    scales: tuple[float, ...] = (16.0, 20.0, 25.0)  # patch sides of the scale space, in pixels, sorted
    reference_size: float = 20.0  # object side (px) the heatmap network sees at resize factor 1
    heatmap_channels: int = 32  # width of the heatmap network (§4: 32)
    heatmap_blocks: int = 4  # ResNet blocks of the heatmap network (§4: 4)
    softmax_kernel: int = 15  # window of the local spatial softmax (§4: 15x15)
    softmax_strength: float = 10.0  # sharpness of the local spatial softmax (authors' code: 10)
    task_network: str = "paper"  # "paper": the §8 networks; "compact": mistlib.compact (CPU preset)
    task_width: int = 8  # base width of the task network (channels 8, 16, ..., 128; §8)
    task_code: int = 64  # latent size of the compact task networks (the §8 ones: 16 * task_width)
    task_depth: int = 0  # stride-1 convolutions added per level of the compact task networks
    task_norm: bool = False  # GroupNorm between each conv and ReLU of the compact encoder (research §20)
    num_classes: int = 10  # classes of the classification task (digits)
    background: float = 0.0  # image value where no instance is; eq. (6) places patches on this canvas
    # how placed patches combine: "max" (pixelwise, as our scenes are drawn; needs background 0) or "sum"
    # (eq. 6, e.g. Gabor noise on a grey background); research/README.md §6
    composite: str = "max"
    nms: int = 5  # window of E_K's non-maximum suppression before top-K (authors' code: 5); 1 for none

    def __post_init__(self) -> None:
        if self.task not in ("reconstruct", "classify"):
            raise ValueError(f"task must be 'reconstruct' or 'classify', got {self.task!r}")
        for name in ("image_size", "in_channels", "k", "patch_size", "heatmap_channels", "heatmap_blocks"):
            check_positive_int(name, getattr(self, name))
        for name in ("task_width", "task_code", "num_classes", "softmax_kernel"):
            check_positive_int(name, getattr(self, name))
        if isinstance(self.task_depth, bool) or not isinstance(self.task_depth, int) or self.task_depth < 0:
            raise ValueError(f"task_depth must be a non-negative integer, got {self.task_depth!r}")
        if not isinstance(self.task_norm, bool):
            raise ValueError(f"task_norm must be True or False, got {self.task_norm!r}")
        for name in ("reference_size", "softmax_strength", "background"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if self.reference_size <= 0 or self.softmax_strength <= 0:
            raise ValueError("reference_size and softmax_strength must be positive")
        if not all(isinstance(s, (int, float)) and math.isfinite(s) for s in self.scales):
            raise ValueError(f"scales must be finite numbers, got {self.scales!r}")
        if self.k > self.image_size**2:
            raise ValueError(f"k must be in [1, image_size**2 = {self.image_size**2}], got {self.k}")
        if self.task_network not in TASK_NETWORKS:
            raise ValueError(f"task_network must be one of {TASK_NETWORKS}, got {self.task_network!r}")
        if self.composite not in COMPOSITES:
            raise ValueError(f"composite must be one of {COMPOSITES}, got {self.composite!r}")
        if self.composite == "max" and self.background != 0:
            raise ValueError(f"composite='max' needs background 0 (bright instances), got {self.background}")
        check_nms(self.nms)
        if not self.scales or list(self.scales) != sorted(set(self.scales)) or min(self.scales) <= 0:
            raise ValueError(f"scales must be positive and strictly increasing, got {self.scales}")

    def heatmap_config(self) -> HeatmapConfig:
        """The :class:`~mistlib.heatmap.HeatmapConfig` this model builds its ``H_eta`` from."""
        return HeatmapConfig(
            in_channels=self.in_channels,
            channels=self.heatmap_channels,
            num_blocks=self.heatmap_blocks,
            scales=tuple(self.scales),
            reference_size=self.reference_size,
            softmax_kernel=self.softmax_kernel,
            softmax_strength=self.softmax_strength,
        )


@dataclass
class MISTOutput:
    """What one forward pass produces (B batch, S scales, K patches, C channels, P patch side).

    ``heatmap``: (B, S, H, W); ``keypoints``: (B, K, 3) as (x, y, s) in pixels; ``patches``:
    (B, K, C, P, P); ``task_output``: (B, K, C, P, P) decoded patches or (B, K, classes) logits;
    ``reconstruction``: (B, C, H, W) for the reconstruction task, else None; ``logits``:
    (B, K, classes) for the classification task, else None.

    Example:
        >>> config = MISTConfig(image_size=32, k=2, scales=(8.0, 12.0), reference_size=8.0,
        ...                     heatmap_channels=4, heatmap_blocks=1, task_width=2)  # a tiny model
        >>> out = MIST(config)(torch.rand(1, 1, 32, 32))
        >>> out.heatmap.shape, out.keypoints.shape, out.patches.shape
        (torch.Size([1, 2, 32, 32]), torch.Size([1, 2, 3]), torch.Size([1, 2, 1, 32, 32]))
        >>> out.reconstruction.shape, out.logits is None
        (torch.Size([1, 1, 32, 32]), True)
    """

    heatmap: torch.Tensor
    keypoints: torch.Tensor
    patches: torch.Tensor
    task_output: torch.Tensor
    reconstruction: torch.Tensor | None = None
    logits: torch.Tensor | None = None


def build_task_network(config: MISTConfig) -> nn.Module:
    """``T_tau`` for a config: the §8 auto-encoder or classifier, or their compact versions.

    Example:
        >>> net = build_task_network(MISTConfig(task="classify", task_network="compact"))
        >>> type(net).__name__, net.encoder.latent_dim
        ('PatchClassifier', 64)
    """
    c, width = config, config.task_width
    layout = {"code": c.task_code, "patch_size": c.patch_size, "depth": c.task_depth, "norm": c.task_norm}
    if c.task == "reconstruct" and c.task_network == "compact":
        return compact_autoencoder(c.in_channels, width, **layout)
    if c.task == "reconstruct":
        return PatchAutoencoder(channels=c.in_channels, base_width=width, patch_size=c.patch_size)
    if c.task_network == "compact":
        return compact_classifier(c.in_channels, c.num_classes, width, **layout)
    return PatchClassifier(c.in_channels, c.num_classes, base_width=width, patch_size=c.patch_size)


def build_task(config: MISTConfig, net: nn.Module | None = None) -> Task:
    """The :class:`~mistlib.objective.Task` of a config, around ``net`` or :func:`build_task_network`'s.

    Example:
        >>> task = build_task(MISTConfig(task="reconstruct", composite="max"))
        >>> type(task).__name__, task.composite, type(task.net).__name__
        ('Reconstruction', 'max', 'PatchAutoencoder')
    """
    net = build_task_network(config) if net is None else net
    if config.task == "classify":
        return Classification(net)
    return Reconstruction(net, background=config.background, composite=config.composite)


def default_device() -> torch.device:
    """CUDA when it is available, else the CPU.

    Example:
        >>> default_device().type in ("cuda", "cpu")
        True
    """
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class MIST(nn.Module):
    """Multiple Instance Spatial Transformer: heatmap network, top-K extractor, sampler, task.

    Args:
        config: what to build; the defaults fit MNIST hard.
        heatmap_net: ``H_eta``, images (B, C, H, W) -> heatmap (B, S, H, W); built from ``config`` if None.
        task: the :class:`~mistlib.objective.Task` (its network and loss); built from ``config`` if None.
            Its ``name`` must be ``config.task``.

    Example:
        >>> model = MIST(MISTConfig(task="reconstruct"))
        >>> out = model(torch.rand(2, 1, 80, 80))
        >>> out.keypoints.shape, out.reconstruction.shape
        (torch.Size([2, 9, 3]), torch.Size([2, 1, 80, 80]))
        >>> from mistlib.objective import Reconstruction
        >>> mine = MIST(MISTConfig(), task=Reconstruction(nn.Identity()))  # another task network
        >>> torch.equal(mine(torch.zeros(1, 1, 80, 80)).reconstruction, torch.zeros(1, 1, 80, 80))
        True
    """

    def __init__(
        self, config: MISTConfig | None = None, heatmap_net: nn.Module | None = None, task: Task | None = None
    ) -> None:
        super().__init__()
        self.config = config or MISTConfig()
        # `is None`, not `or`: a module with __len__ (an nn.Sequential) can be falsy
        self.heatmap_net = HeatmapNet(self.config.heatmap_config()) if heatmap_net is None else heatmap_net
        self.task = build_task(self.config) if task is None else task
        if self.task.name != self.config.task:
            raise ValueError(f"task {self.task.name!r} does not match config.task {self.config.task!r}")

    @property
    def task_net(self) -> nn.Module:
        """``T_tau``, the task's network; ``model.task_net = net`` swaps it."""
        return self.task.net

    def __setattr__(self, name: str, value: object) -> None:
        if name == "task_net":  # nn.Module would register a second module beside the task's own
            self.task.net = value
        else:
            super().__setattr__(name, value)

    @property
    def scales(self) -> torch.Tensor:
        """(S,) the scale space as a tensor on the model's device."""
        return self.heatmap_net.scales

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Check that ``images`` are (B, C, H, W) floats in [0, 1] with C channels; cast float64 to float32.

        Example:
            >>> MIST().prepare(torch.rand(1, 1, 80, 80, dtype=torch.float64)).dtype
            torch.float32
            >>> MIST().prepare(torch.zeros(0, 1, 80, 80))
            Traceback (most recent call last):
            ...
            ValueError: images is an empty batch (B = 0), shape (0, 1, 80, 80): pass at least one image
        """
        check_images("images", images, self.config.in_channels)
        check_unit_range("images", images)
        if images.dtype == torch.float64:
            images = images.float()
        return images

    def extract(self, images: torch.Tensor, k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``h = H_eta(I)`` and ``x = E_K(h)``.

        Args:
            images: (B, C, H, W) floats in [0, 1] (float64 is cast to the model's float32).
            k: number of patches; the config's ``k`` when None.

        Returns:
            heatmap (B, S, H, W) and keypoints (B, K, 3) as (x, y, s).
        """
        images = self.prepare(images)
        heatmap = self.heatmap_net(images)  # (B, S, H, W)
        keypoints = topk_extract(heatmap, self.config.k if k is None else k, self.scales, self.config.nms)
        return heatmap, keypoints

    def run_task(self, images: torch.Tensor, keypoints: torch.Tensor) -> MISTOutput:
        """``T_tau(S(I, x))`` at given keypoints; ``heatmap`` of the result is an empty tensor.

        Args:
            images: (B, C, H, W); keypoints: (B, K, 3) as (x, y, s). Differentiable w.r.t. both,
            which is what stage 2 of lifting needs.
        """
        images = self.prepare(images)
        check_keypoints("keypoints", keypoints, batch=images.shape[0])
        patches = sample_patches(images, keypoints, size=self.config.patch_size)  # (B, K, C, P, P)
        out = MISTOutput(images.new_empty(0), keypoints, patches, self.task(patches))
        self.task.predict(out, tuple(images.shape[-2:]))  # out.reconstruction or out.logits
        return out

    def forward(self, images: torch.Tensor) -> MISTOutput:
        """Eq. (1) end to end. images: (B, C, H, W) -> :class:`MISTOutput`."""
        heatmap, keypoints = self.extract(images)
        out = self.run_task(images, keypoints)
        out.heatmap = heatmap
        return out

    def task_loss(
        self,
        images: torch.Tensor,
        out: MISTOutput,
        labels: torch.Tensor | None = None,
        reduction: Literal["mean", "none"] = "mean",
    ) -> torch.Tensor:
        """``L_task`` of the configured task: eq. (6) mean squared error or eq. (7) cross-entropy.

        Args:
            images: (B, C, H, W), the images ``out`` was computed from.
            out: the result of :meth:`forward` or :meth:`run_task`.
            labels: (B, L) int64 digit labels padded with -1; required for the classification task.
            reduction: "mean" over the batch -> a scalar, or "none" -> (B,) one loss per image.
        """
        per_image = self.task.loss(images, out, labels)  # (B,)
        return per_image.mean() if reduction == "mean" else per_image
