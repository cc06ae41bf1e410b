"""The two tasks of §5 as objects: each owns its task network ``T_tau``, what it predicts, and ``L_task``.

A :class:`Task` turns the K patches ``S(I, x)`` into the task's prediction and scores it:

* :class:`Reconstruction` (§5.1): decode each patch, place the decoded patches back with ``S^-1`` and
  compare their composite with the image, eq. (6); Tables 1 report its RMSE.
* :class:`Classification` (§5.2): one logit vector per patch, scored against the image's multiset of
  labels with eq. (7); Table 2 reports the classification and localisation accuracy.

The rest of the library asks the task (``model.task``) instead of branching on its name: the loss, the
per-patch warm-up loss, the stage-2 candidate losses, whether labels are needed and which metrics apply.
Swapping the §8 auto-encoder for another network is ``Reconstruction(my_network)``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

from mistlib.losses import multi_instance_loss, reconstruct
from mistlib.sampler import COMPOSITES, local_canvases, place_patches, read_frames

if TYPE_CHECKING:
    from mistlib.model import MISTOutput


class Task(nn.Module):
    """A task of §5: the task network ``net`` (patches -> outputs) and its loss.

    Subclasses set ``name`` (the ``MISTConfig.task`` they serve), ``needs_labels`` and ``metrics`` (the
    columns of their table) and implement :meth:`predict`, :meth:`loss` and :meth:`candidate_losses`.

    Example:
        >>> task = Reconstruction(nn.Tanh())
        >>> task(torch.rand(2, 9, 1, 32, 32)).shape  # one output per patch: (B, K, C, P, P)
        torch.Size([2, 9, 1, 32, 32])
        >>> task.name, task.needs_labels, task.metrics
        ('reconstruct', False, ('rmse', 'iou50'))
    """

    name: ClassVar[str]
    needs_labels: ClassVar[bool]
    metrics: ClassVar[tuple[str, ...]]

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """``T_tau`` on each patch: (B, K, C, P, P) -> (B, K, ...), float32 also under a bf16 autocast."""
        return self.net(patches).float()

    def predict(self, out: MISTOutput, image_size: tuple[int, int]) -> None:
        """Fill the task's field of ``out`` (``reconstruction`` or ``logits``) from ``out.task_output``."""
        raise NotImplementedError

    def prediction(self, out: MISTOutput) -> torch.Tensor:
        """The task's prediction in ``out``: the reconstruction (B, C, H, W) or logits (B, K, classes)."""
        raise NotImplementedError

    def loss(self, images: torch.Tensor, out: MISTOutput, labels: torch.Tensor | None) -> torch.Tensor:
        """``L_task`` of each image, (B,)."""
        raise NotImplementedError

    def patch_loss(self, out: MISTOutput) -> torch.Tensor | None:
        """A loss on each patch alone for the warm-up, a scalar; None when the task has none."""
        return None

    def candidate_losses(
        self,
        images: torch.Tensor,
        keypoints: torch.Tensor,
        output: torch.Tensor,
        candidates: torch.Tensor,
        labels: torch.Tensor | None,
    ) -> torch.Tensor:
        """``L_task`` (B, K, M) with keypoint k alone moved to ``candidates[:, k, m]`` (stage 2, "search").

        Args:
            images: (B, C, H, W); keypoints: (B, K, 3), the current windows, ``candidates[:, :, 0]``;
            output: (B, K, M, ...) the task network's output for every candidate window;
            candidates: (B, K, M, 3); labels: (B, L) or None.
        """
        raise NotImplementedError

    def check_labels(self, labels: torch.Tensor | None) -> None:
        """Raise a one-line ``ValueError`` when labels are required and missing."""
        if self.needs_labels and labels is None:
            raise ValueError(f"labels (B, L) are required for the {self.name} task")


class Reconstruction(Task):
    """§5.1: an auto-encoder on each patch; the decoded patches placed back and compared with the image.

    Args:
        net: patches (B, K, C, P, P) -> decoded patches of the same shape.
        background: the image value where no instance is (Gabor noise: 0.5); each placed patch adds its
            difference from it, so the empty parts of a window add nothing.
        composite: "sum" (eq. 6) or "max" (the pixelwise maximum, for bright instances on a 0 background).

    Example:
        >>> task = Reconstruction(nn.Identity(), composite="max")
        >>> from mistlib.model import MISTOutput
        >>> keypoints = torch.tensor([[[3.5, 3.5, 4.0]]])
        >>> out = MISTOutput(torch.empty(0), keypoints, None, torch.ones(1, 1, 1, 4, 4))
        >>> task.predict(out, (8, 8))
        >>> out.reconstruction.sum().item(), task.loss(torch.zeros(1, 1, 8, 8), out, None).item()
        (16.0, 0.25)
    """

    name = "reconstruct"
    needs_labels = False
    metrics = ("rmse", "iou50")

    def __init__(self, net: nn.Module, background: float = 0.0, composite: str = "sum") -> None:
        super().__init__(net)
        if composite not in COMPOSITES:
            raise ValueError(f"composite must be one of {COMPOSITES}, got {composite!r}")
        self.background, self.composite = float(background), composite

    def predict(self, out: MISTOutput, image_size: tuple[int, int]) -> None:
        b = self.background  # eq. (6) with the background subtracted; b = 0 is eq. (6) as written
        out.reconstruction = reconstruct(out.task_output - b, out.keypoints, image_size, self.composite) + b

    def prediction(self, out: MISTOutput) -> torch.Tensor:
        return out.reconstruction

    def loss(self, images: torch.Tensor, out: MISTOutput, labels: torch.Tensor | None) -> torch.Tensor:
        return ((images - out.reconstruction) ** 2).flatten(1).mean(1)  # eq. (6), as a mean

    def patch_loss(self, out: MISTOutput) -> torch.Tensor:
        return ((out.task_output - out.patches) ** 2).mean()

    def candidate_losses(
        self,
        images: torch.Tensor,
        keypoints: torch.Tensor,
        output: torch.Tensor,
        candidates: torch.Tensor,
        labels: torch.Tensor | None,
    ) -> torch.Tensor:
        """Eq. (6) with one keypoint moved: the loss now, minus what keypoint k adds where it is, plus what
        it adds where it goes.

        Moving keypoint k changes the image loss only inside two ``L x L`` frames (L a little over the
        largest window): around its current window, whose canvas leaves the composite, and around the
        candidate window, whose canvas joins the composite of the other K - 1. So for any candidate, near
        or far (a jump), the change is ``removal[k] + addition[k, m]``, each summed over one frame. The
        other K - 1 canvases are the composite minus canvas k (sum), or for the max composite the largest
        or second largest canvas at each pixel (:func:`two_largest`).
        """
        batch, k, count = candidates.shape[:3]
        size, channels, b = tuple(images.shape[-2:]), images.shape[1], self.background
        target, current = images - b, output[:, :, 0] - b  # (B, C, H, W), (B, K, C, P, P)
        canvases = place_patches(current, keypoints, size)  # (B, K, C, H, W)
        if self.composite == "sum":
            recon = canvases.sum(1)  # (B, C, H, W)
        else:
            recon, second, owner = two_largest(canvases)  # (B, C, H, W) each
        now = ((target - recon) ** 2).flatten(1).mean(1)  # (B,) the current loss
        half = float(candidates[..., 2].max()) * (1 + 1 / output.shape[-1]) / 2
        side = math.ceil(2 * half) + 2

        # everything a frame reads, read in one gather: target, composite, (second, owner,) inside
        maps = [target, recon] + ([] if self.composite == "sum" else [second, owner])
        stacked = torch.cat([*maps, torch.ones_like(images[:, :1])], 1)  # (B, 2C (+2C) + 1, H, W)

        def frames_at(points: torch.Tensor, mine: torch.Tensor) -> tuple[torch.Tensor, ...]:
            """At windows ``points`` (B, N, 3) of keypoints ``mine`` (N,): the frame corners (B, N, 2), and
            the target, the composite, the composite without keypoint ``mine`` (B, N, C, L, L) and the
            pixels inside the image (B, N, 1, L, L)."""
            corner = torch.stack([points[..., 1] - half, points[..., 0] - half], -1).floor().long()
            read = read_frames(stacked, corner, side).split([channels] * len(maps) + [1], dim=2)
            if self.composite == "sum":
                own = local_canvases(current[:, mine], keypoints[:, mine], (corner, side))[0]
                others = read[1] - own
            else:
                others = torch.where(read[3] == mine.view(1, -1, 1, 1, 1), read[2], read[1])
            return corner, read[0], read[1], others, read[-1]

        def frame_sum(change: torch.Tensor) -> torch.Tensor:
            return change.flatten(2).sum(-1)  # (B, N)

        every = torch.arange(k, device=images.device)
        _, t, r, others, inside = frames_at(keypoints, every)  # keypoint k's own frame: it leaves
        removal = frame_sum(((t - others) ** 2 - (t - r) ** 2) * inside)  # (B, K)
        points = candidates.flatten(1, 2)  # (B, K * M, 3)
        corner, t, _, others, inside = frames_at(points, every.repeat_interleave(count))  # it arrives
        placed = local_canvases((output - b).flatten(1, 2), points, (corner, side))[0]  # (B, K * M, C, L, L)
        composed = others + placed if self.composite == "sum" else torch.maximum(others, placed)
        addition = frame_sum(((t - composed) ** 2 - (t - others) ** 2) * inside).view(batch, k, count)
        return now[:, None, None] + (removal[:, :, None] + addition) / (channels * size[0] * size[1])


class Classification(Task):
    """§5.2: a classifier on each patch, scored on the image's multiset of labels with eq. (7).

    Args:
        net: patches (B, K, C, P, P) -> logits (B, K, classes).

    Example:
        >>> task = Classification(nn.Identity())
        >>> from mistlib.model import MISTOutput
        >>> out = MISTOutput(torch.empty(0), None, None, torch.eye(4)[None, :2] * 20)  # patches say 0 and 1
        >>> task.predict(out, (8, 8))
        >>> out.logits.shape, round(task.loss(None, out, torch.tensor([[0, 1]])).item(), 4)  # log 2
        (torch.Size([1, 2, 4]), 0.6931)
        >>> task.check_labels(None)
        Traceback (most recent call last):
        ...
        ValueError: labels (B, L) are required for the classify task
    """

    name = "classify"
    needs_labels = True
    metrics = ("iou50", "classification", "both")

    def predict(self, out: MISTOutput, image_size: tuple[int, int]) -> None:
        out.logits = out.task_output  # (B, K, classes)

    def prediction(self, out: MISTOutput) -> torch.Tensor:
        return out.logits

    def loss(self, images: torch.Tensor, out: MISTOutput, labels: torch.Tensor | None) -> torch.Tensor:
        self.check_labels(labels)
        return multi_instance_loss(out.logits, labels, reduction="none")  # eq. (7), (B,)

    def candidate_losses(
        self,
        images: torch.Tensor,
        keypoints: torch.Tensor,
        output: torch.Tensor,
        candidates: torch.Tensor,
        labels: torch.Tensor | None,
    ) -> torch.Tensor:
        """Eq. (7) with row k of the logits replaced by those of keypoint k's candidate m."""
        self.check_labels(labels)
        batch, k, count = output.shape[:3]
        logits = output[:, None, None, :, 0].expand(batch, k, count, k, -1).clone()  # (B, k moved, M, K, N)
        index = torch.arange(k, device=output.device)
        logits[:, index, :, index] = output.transpose(0, 1)  # row k <- candidate m of keypoint k
        repeated = labels.repeat_interleave(k * count, dim=0)  # (B*K*M, L)
        losses = multi_instance_loss(logits.flatten(0, 2), repeated, reduction="none")
        return losses.view(batch, k, count)


def two_largest(canvases: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The max composite of K canvases, the second largest value at each pixel, and which k holds the
    largest: the max composite without canvas k is the second where k holds the largest, else the first.

    Both values are floored at the zero background.

    Args: canvases (B, K, C, H, W). Returns: first, second (B, C, H, W) and owner (B, C, H, W) as floats.

    Example:
        >>> first, second, owner = two_largest(torch.tensor([[[[[3.0]]], [[[1.0]]], [[[-2.0]]]]]))
        >>> first.item(), second.item(), owner.item()
        (3.0, 1.0, 0.0)
    """
    top = canvases.topk(min(2, canvases.shape[1]), dim=1)
    first = top.values[:, 0].clamp_min(0)
    second = top.values[:, 1].clamp_min(0) if canvases.shape[1] > 1 else torch.zeros_like(first)
    return first, second, top.indices[:, 0].to(first.dtype)
