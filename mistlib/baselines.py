"""The comparison methods of Tables 1–2 (§7.1) and the naive ablation of §6.

* :class:`GridMIST` — K windows on a fixed regular grid, the same task network (Table 1, "Grid").
* :class:`ChannelwiseMIST` — the heatmap network ending in K channels, one keypoint per channel by a
  channel-wise soft argmax, trained end to end through the sampler (Tables 1–2, "channel-wise").
* Naive top-K — a plain :class:`~mistlib.model.MIST` trained by back-propagating through the selected
  top-K (only the scale weights of eq. 4 at the K chosen pixels receive a gradient): the argument of §6
  made measurable. It needs no new model, only :class:`EndToEndTrainer`.

Each model returns a :class:`~mistlib.model.MISTOutput` and has ``task_loss``, so evaluation treats every
method alike.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from mistlib.heatmap import HeatmapNet
from mistlib.model import MIST, MISTConfig, MISTOutput
from mistlib.training import TrainConfig, Trainer, resolve_device


def grid_keypoints(k: int, image_size: int) -> torch.Tensor:
    """K = g*g windows tiling a square image: centres of a g x g grid, side image_size / g.

    Returns: (K, 3) as (x, y, s) in pixels, rows first (x varies fastest).

    Example:
        >>> grid_keypoints(4, 80)[:2].tolist()
        [[19.5, 19.5, 40.0], [59.5, 19.5, 40.0]]
    """
    side = math.isqrt(k)
    if side * side != k:
        raise ValueError(f"k must be a square number for a grid, got {k}")
    cell = image_size / side
    centres = (torch.arange(side, dtype=torch.float32) + 0.5) * cell - 0.5  # pixel-centre convention
    y, x = torch.meshgrid(centres, centres, indexing="ij")
    s = torch.full_like(x, cell)
    return torch.stack([x, y, s], dim=-1).reshape(k, 3)  # (K, 3)


class GridMIST(MIST):
    """The "grid" baseline: K fixed windows tiling the image; only the task network learns.

    ``k`` must be a square number g*g; the windows are :func:`grid_keypoints` of ``image_size``, the same for
    every image. images (B, C, H, W) -> :class:`~mistlib.model.MISTOutput` with keypoints (B, K, 3) and an
    empty ``heatmap`` (there is no heatmap network).

    Example:
        >>> config = MISTConfig(image_size=32, k=4, task_width=2)
        >>> out = GridMIST(config)(torch.rand(2, 1, 32, 32))
        >>> out.keypoints.shape, out.keypoints[1, :2].tolist(), out.heatmap.numel()
        (torch.Size([2, 4, 3]), [[7.5, 7.5, 16.0], [23.5, 7.5, 16.0]], 0)
    """

    def __init__(self, config: MISTConfig | None = None) -> None:
        super().__init__(config)
        del self.heatmap_net  # no heatmap: the windows never move
        self.register_buffer("grid", grid_keypoints(self.config.k, self.config.image_size), persistent=False)
        self.register_buffer("scale_space", torch.tensor(self.config.scales), persistent=False)

    @property
    def scales(self) -> torch.Tensor:
        return self.scale_space

    def extract(self, images: torch.Tensor, k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if k is not None and k != self.config.k:
            raise ValueError(f"a grid has exactly k={self.config.k} windows, got k={k}")
        keypoints = self.grid.expand(images.shape[0], -1, -1)  # (B, K, 3)
        return images.new_empty(0), keypoints


class ChannelwiseMIST(MIST):
    """The "channel-wise" baseline: one heatmap channel per keypoint, located by a soft argmax.

    The trunk is the heatmap network of §4 run at one scale (factor 1), with a last 1x1 convolution to
    K channels instead of 1 (as in Zhang et al.). Channel k gives keypoint k at the expected position
    of a spatial softmax over that channel; every patch has the fixed side :attr:`window`, the middle scale
    of the scale space (the typical object size: 20 px on MNIST; independent of the heatmap's resolution,
    which ``reference_size`` sets). All of it is
    differentiable, so the method trains end to end through the sampler.

    images (B, C, H, W) -> :class:`~mistlib.model.MISTOutput` whose ``heatmap`` holds the K softmax maps
    (B, K, H, W) and whose keypoints (B, K, 3) all have ``s = window``.

    Example:
        >>> config = MISTConfig(image_size=32, k=4, scales=(8.0, 12.0), reference_size=8.0,
        ...                     heatmap_channels=4, heatmap_blocks=1, task_width=2)  # a tiny model
        >>> out = ChannelwiseMIST(config)(torch.rand(2, 1, 32, 32))
        >>> out.heatmap.shape, out.keypoints.shape, out.keypoints[..., 2].unique().tolist()
        (torch.Size([2, 4, 32, 32]), torch.Size([2, 4, 3]), [8.0])
    """

    def __init__(self, config: MISTConfig | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        self.heatmap_net = HeatmapNet(dataclasses.replace(cfg.heatmap_config(), scales=(cfg.reference_size,)))
        self.heatmap_net.head = nn.Conv2d(cfg.heatmap_channels, cfg.k, kernel_size=1)

    @property
    def window(self) -> float:
        """The side of every window in pixels: the middle of the sorted scales (the lower of two middles)."""
        scales = sorted(self.config.scales)
        return float(scales[(len(scales) - 1) // 2])

    def extract(self, images: torch.Tensor, k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if k is not None and k != self.config.k:
            raise ValueError(f"the channel-wise model has exactly k={self.config.k} channels, got k={k}")
        scores = self.heatmap_net.scores(images)  # (B, K, H, W): one channel per keypoint
        batch, channels, height, width = scores.shape
        weights = torch.softmax(scores.flatten(2), dim=-1).view_as(scores)  # the network learns the scale
        ys = torch.arange(height, device=images.device, dtype=images.dtype)
        xs = torch.arange(width, device=images.device, dtype=images.dtype)
        x = (weights.sum(2) * xs).sum(-1)  # (B, K) expected column
        y = (weights.sum(3) * ys).sum(-1)  # (B, K) expected row
        s = torch.full_like(x, self.window)
        return weights, torch.stack([x, y, s], dim=-1)  # (B, K, H, W), (B, K, 3)


@dataclass
class EndToEndConfig(TrainConfig):
    """Plain back-propagation through the whole pipeline (grid, channel-wise, naive top-K).

    Adds two learning rates to the fields of :class:`~mistlib.training.TrainConfig`.

    Example:
        >>> config = EndToEndConfig(steps=100)
        >>> config.steps, config.lr_task, config.lr_heatmap
        (100, 0.001, 0.0001)
    """

    lr_task: float = 1e-3  # Adam learning rate of the task network
    lr_heatmap: float = 1e-4  # Adam learning rate of the heatmap network (if the model has one)


class EndToEndTrainer(Trainer):
    """Minimise ``L_task`` of eq. (1) by back-propagation alone: one Adam step per batch on all weights.

    For a plain :class:`~mistlib.model.MIST` this is the naive top-K training that §6 argues against: the
    selection passes no gradient, so the heatmap network learns only through the scale weights (eq. 4)
    at the K pixels it already picked, and never from the locations it did not pick.

    :meth:`train_step` takes images (B, C, H, W) and labels (B, L) (classification) or None; the loss it
    logs is ``"task"``. ``fit`` (from :class:`~mistlib.training.Trainer`) takes the training set (N, C, H, W).

    Example:
        >>> model = GridMIST(MISTConfig(image_size=32, k=4, task_width=2))
        >>> config = EndToEndConfig(steps=2, batch_size=2, log_every=1, device="cpu")
        >>> trainer = EndToEndTrainer(model, "reconstruct", config)
        >>> history = trainer.fit(torch.rand(4, 1, 32, 32))
        >>> trainer.step, [sorted(entry) for entry in history]
        (2, [['step', 'task'], ['step', 'task']])
    """

    kind = "end-to-end"

    def __init__(self, model: MIST, task: str, config: EndToEndConfig | None = None) -> None:
        super().__init__()
        if task != model.task.name:
            raise ValueError(f"task {task!r} does not match the model's task {model.task.name!r}")
        self.config = config or EndToEndConfig()
        self.model = model.to(resolve_device(self.config.device))
        groups = [{"params": list(model.task_net.parameters()), "lr": self.config.lr_task}]
        if hasattr(model, "heatmap_net"):
            groups.append({"params": list(model.heatmap_net.parameters()), "lr": self.config.lr_heatmap})
        self.optimizers = {"all": torch.optim.Adam(groups)}

    def train_step(self, images: torch.Tensor, labels: torch.Tensor | None) -> dict[str, float]:
        optimiser = self.optimizers["all"]
        optimiser.zero_grad(set_to_none=True)
        out: MISTOutput = self.model(images)
        loss = self.model.task_loss(images, out, labels)
        loss.backward()
        optimiser.step()
        return {"task": loss.item()}
