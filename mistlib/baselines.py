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

    Returns: (K, 3) as (x, y, s), rows first (x varies fastest).
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
    """The "grid" baseline: K fixed windows tiling the image; only the task network learns."""

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
    of a spatial softmax over that channel; every patch has the fixed side ``reference_size``. All of it is
    differentiable, so the method trains end to end through the sampler.
    """

    def __init__(self, config: MISTConfig | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        self.heatmap_net = HeatmapNet(dataclasses.replace(cfg.heatmap_config(), scales=(cfg.reference_size,)))
        self.heatmap_net.head = nn.Conv2d(cfg.heatmap_channels, cfg.k, kernel_size=1)
        self.temperature = 1.0  # softmax over raw scores; the network learns their scale

    def extract(self, images: torch.Tensor, k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if k is not None and k != self.config.k:
            raise ValueError(f"the channel-wise model has exactly k={self.config.k} channels, got k={k}")
        scores = self.heatmap_net.scores(images)  # (B, K, H, W): one channel per keypoint
        batch, channels, height, width = scores.shape
        weights = torch.softmax(scores.flatten(2) / self.temperature, dim=-1).view_as(scores)
        ys = torch.arange(height, device=images.device, dtype=images.dtype)
        xs = torch.arange(width, device=images.device, dtype=images.dtype)
        x = (weights.sum(2) * xs).sum(-1)  # (B, K) expected column
        y = (weights.sum(3) * ys).sum(-1)  # (B, K) expected row
        s = torch.full_like(x, self.config.reference_size)
        return weights, torch.stack([x, y, s], dim=-1)  # (B, K, H, W), (B, K, 3)


@dataclass
class EndToEndConfig(TrainConfig):
    """Plain back-propagation through the whole pipeline (grid, channel-wise, naive top-K)."""

    lr_task: float = 1e-3  # Adam learning rate of the task network
    lr_heatmap: float = 1e-4  # Adam learning rate of the heatmap network (if the model has one)


class EndToEndTrainer(Trainer):
    """Minimise ``L_task`` of eq. (1) by back-propagation alone: one Adam step per batch on all weights.

    For a plain :class:`~mistlib.model.MIST` this is the naive top-K training that §6 argues against: the
    selection passes no gradient, so the heatmap network learns only through the scale weights (eq. 4)
    at the K pixels it already picked, and never from the locations it did not pick.
    """

    kind = "end-to-end"

    def __init__(self, model: MIST, task: str, config: EndToEndConfig | None = None) -> None:
        super().__init__()
        if task != model.config.task:
            raise ValueError(f"task {task!r} does not match the model's task {model.config.task!r}")
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
