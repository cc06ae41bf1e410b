"""Stage 2 of Algorithm 1 (eq. 13): refine the keypoints ``x`` on ``L_task`` with the task network frozen.

Three update rules, each moving a keypoint by about ``step`` pixels an iteration:

* ``"scaled"``: a gradient step divided by the batch's root-mean-square gradient (:func:`scaled_step`);
* ``"adam"``: Adam restarted for every batch, whose first steps are ``step * sign(gradient)``;
* ``"search"``: no gradient. Each keypoint tries a few moves (``step`` px left, right, up, down, its
  scale ``step`` px up or down) with the other keypoints where they are, and takes the one that lowers
  ``L_task`` most, or stays (:func:`candidate_losses`). The bilinear gradient of a task network that
  reproduces whatever window it is shown is mostly texture noise a few pixels from a digit's centre;
  the loss itself still rises away from the centre, and a search reads the loss. Given
  ``alternatives`` (the runner-up picks of ``E_K``, the same for every keypoint of an image), a keypoint
  may also *jump* to one of them in the first iteration: a window left on a digit that another window
  already covers, or on background, can move to an instance that no window covers, which no local move
  reaches; the later iterations refine where it landed. For reconstruction, :func:`residual_jumps` adds
  alternatives where the reconstruction leaves the most ink out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mistlib.extract import topk_extract
from mistlib.model import MIST
from mistlib.sampler import sample_patches

REFINE_RULES = ("scaled", "adam", "search")  # stage-2 update rules (refine_keypoints)
RESIDUAL_BLUR = 17  # px: the box that residual_jumps averages the missing ink over (about a digit)
# the moves of the "search" rule, in units of ``step``: stay, x -/+, y -/+, s -/+
SEARCH_MOVES = ((0, 0, 0), (-1, 0, 0), (1, 0, 0), (0, -1, 0), (0, 1, 0), (0, 0, -1), (0, 0, 1))


def clamp_keypoints(keypoints: torch.Tensor, scales: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Keep (x, y) inside the image and s inside [scales[0], scales[-1]].

    Args: keypoints (B, K, 3) as (x, y, s); scales (S,); size (H, W). Returns: (B, K, 3).

    Example:
        >>> clamp_keypoints(torch.tensor([[[-2.0, 85.0, 30.0]]]), torch.tensor([16.0, 25.0]), (80, 80))
        tensor([[[ 0., 79., 25.]]])
    """
    height, width = size
    x = keypoints[..., 0].clamp(0, width - 1)
    y = keypoints[..., 1].clamp(0, height - 1)
    s = keypoints[..., 2].clamp(float(scales[0]), float(scales[-1]))
    return torch.stack([x, y, s], dim=-1)


def scaled_step(grad: torch.Tensor, step: float) -> torch.Tensor:
    """Stage-2 update of the "scaled" rule: ``step * grad / rms(grad)``, each entry capped at ``2 * step``.

    The root mean square is taken over the whole tensor (all images, keypoints and coordinates), so a
    coordinate with a typical gradient moves ``step`` pixels and one with a tiny gradient barely moves.

    Example:
        >>> scaled_step(torch.tensor([[3.0, 4.0, 0.0]]), step=1.0)
        tensor([[1.0392, 1.3856, 0.0000]])
    """
    rms = grad.square().mean().sqrt().clamp_min(1e-12)
    return (step * grad / rms).clamp(-2 * step, 2 * step)


def refine_keypoints(
    model: MIST,
    images: torch.Tensor,
    keypoints: torch.Tensor,
    labels: torch.Tensor | None,
    iterations: int,
    step: float,
    optimizer: str = "scaled",
    alternatives: torch.Tensor | None = None,
) -> torch.Tensor:
    """Stage 2 of Algorithm 1: move the keypoints downhill on ``L_task`` with the task network frozen.

    Args:
        images: (B, C, H, W); keypoints: (B, K, 3) the starting (x, y, s); labels: (B, L) or None.
        iterations: N; step: pixels per iteration; optimizer: one of :data:`REFINE_RULES` (module doc).
        alternatives: (B, J, 3) positions any keypoint of the image may jump to ("search" only).

    Returns: (B, K, 3) the refined keypoints x*, detached, clamped to the image and the scale range.

    Example:
        >>> from mistlib.model import MISTConfig
        >>> model, images = MIST(MISTConfig()), torch.rand(1, 1, 80, 80)
        >>> start = torch.tensor([[[40.0, 40.0, 20.0]]])
        >>> refine_keypoints(model, images, start, None, iterations=2, step=0.5).shape
        torch.Size([1, 1, 3])
    """
    if optimizer not in REFINE_RULES:
        raise ValueError(f"optimizer must be one of {REFINE_RULES}, got {optimizer!r}")
    if optimizer == "search":
        return _search(model, images, keypoints, labels, iterations, step, alternatives)
    if alternatives is not None:
        raise ValueError(f"alternatives (jumps) need optimizer='search', got {optimizer!r}")
    size = tuple(images.shape[-2:])
    x = keypoints.detach().clone().requires_grad_(True)
    adam = torch.optim.Adam([x], lr=step) if optimizer == "adam" else None
    frozen = [p for p in model.task_net.parameters() if p.requires_grad]
    for parameter in frozen:
        parameter.requires_grad_(False)
    try:
        for _ in range(iterations):
            x.grad = None
            # sum over images: each image's keypoints only see their own loss, whatever the batch size
            model.task_loss(images, model.run_task(images, x), labels, "none").sum().backward()
            with torch.no_grad():
                if adam is not None:
                    adam.step()
                else:
                    x.sub_(scaled_step(x.grad, step))
                x.copy_(clamp_keypoints(x, model.scales, size))
    finally:
        for parameter in frozen:
            parameter.requires_grad_(True)
    return x.detach()


def candidate_losses(
    model: MIST,
    images: torch.Tensor,
    keypoints: torch.Tensor,
    labels: torch.Tensor | None,
    moves: torch.Tensor,
    alternatives: torch.Tensor | None = None,
) -> torch.Tensor:
    """``L_task`` of each image when keypoint k alone is moved by ``moves[m]``, the others kept in place.

    One task-network pass over the K x M own moves and the J alternatives (a window shown once, whichever
    keypoint jumps to it). Reconstruction: the candidate canvas of keypoint k is composed with the other
    K - 1 canvases (their sum, or for the max composite their pixelwise maximum, taken from the two largest
    at each pixel), which is exactly eq. (6) with only k moved; only the pixels around keypoint k are
    recomputed. Classification: eq. (7) with row k of the logits replaced by the candidate's.

    Args:
        images: (B, C, H, W); keypoints: (B, K, 3); labels: (B, L) or None (reconstruction);
        moves: (M, 3) offsets in pixels, ``moves[0] = 0`` (the current position).
        alternatives: (B, J, 3) absolute positions tried for every keypoint after the moves, or None.

    Returns: (B, K, M + J) per-image losses; ``[:, :, 0]`` is the current loss (the same for every k).

    Example:
        >>> from mistlib.model import MISTConfig
        >>> model = MIST(MISTConfig(heatmap_channels=4, heatmap_blocks=1, task_width=2, composite="max"))
        >>> images, keypoints = torch.rand(2, 1, 80, 80), torch.tensor([[[30.0, 40, 20], [50, 40, 20]]] * 2)
        >>> moves = torch.tensor([[0.0, 0, 0], [2, 0, 0]])
        >>> losses = candidate_losses(model, images, keypoints, None, moves)
        >>> base = model.task_loss(images, model.run_task(images, keypoints), reduction="none")
        >>> losses.shape, torch.allclose(losses[:, :, 0], base[:, None].expand(2, 2), atol=1e-6)
        (torch.Size([2, 2, 2]), True)
    """
    batch, k, m = *keypoints.shape[:2], moves.shape[0]
    candidates = search_candidates(keypoints, moves, alternatives, model.scales, tuple(images.shape[-2:]))
    # each alternative is one window whatever keypoint jumps to it: the network sees it once per image
    windows = torch.cat([candidates[:, :, :m].reshape(batch, k * m, 3), candidates[:, 0, m:]], 1)
    output = model.task(sample_patches(images, windows, model.config.patch_size))  # (B, K*M + J, ...)
    own, jumps = output[:, : k * m].unflatten(1, (k, m)), output[:, k * m :]  # (B, K, M, ...), (B, J, ...)
    output = torch.cat([own, jumps[:, None].expand(-1, k, *jumps.shape[1:])], dim=2)  # (B, K, M + J, ...)
    return model.task.candidate_losses(images, keypoints, output, candidates, labels)


def search_candidates(
    keypoints: torch.Tensor,
    moves: torch.Tensor,
    alternatives: torch.Tensor | None,
    scales: torch.Tensor,
    size: tuple[int, int],
) -> torch.Tensor:
    """Where the search rule tries each keypoint: its moves, then the image's alternatives, clamped.

    Args: keypoints (B, K, 3); moves (M, 3) offsets; alternatives (B, J, 3) or None; scales (S,); size (H, W).

    Returns: (B, K, M + J, 3) absolute (x, y, s).

    Example:
        >>> x, moves = torch.tensor([[[10.0, 10.0, 20.0]]]), torch.tensor([[0.0, 0, 0], [1, 0, 0]])
        >>> jumps = torch.tensor([[[50.0, 60.0, 16.0]]])
        >>> search_candidates(x, moves, jumps, torch.tensor([16.0, 25.0]), (80, 80))[0, 0].tolist()
        [[10.0, 10.0, 20.0], [11.0, 10.0, 20.0], [50.0, 60.0, 16.0]]
    """
    candidates = keypoints[:, :, None] + moves  # (B, K, M, 3)
    if alternatives is not None:
        jumps = alternatives[:, None].expand(-1, keypoints.shape[1], -1, -1)  # (B, K, J, 3)
        candidates = torch.cat([candidates, jumps], dim=2)
    return clamp_keypoints(candidates, scales, size)


def search_moves(step: float, device: torch.device | None = None) -> torch.Tensor:
    """:data:`SEARCH_MOVES` scaled by ``step`` pixels: (M, 3).

    Example:
        >>> search_moves(1.5)[[0, 2, 6]].tolist()
        [[0.0, 0.0, 0.0], [1.5, 0.0, 0.0], [0.0, 0.0, 1.5]]
    """
    return torch.tensor(SEARCH_MOVES, dtype=torch.float32, device=device) * step


def best_jumps(losses: torch.Tensor, count: int) -> torch.Tensor:
    """The search rule's choice when jumps compete: (B, K, M + J) losses -> (B, K) candidate indices.

    The first ``count`` = M candidates are a keypoint's own moves, the last J the image's alternatives.
    Each keypoint takes its best move, unless a jump lowers the loss further; an alternative goes to at
    most one keypoint, the one it helps most, so two windows never jump onto the same place.

    Example:
        >>> losses = torch.tensor([[[0.5, 0.4, 0.1], [0.5, 0.45, 0.2], [0.5, 0.3, 0.6]]])  # M = 2, J = 1
        >>> best_jumps(losses, 2).tolist()  # keypoint 0 gains most from the jump; the others move
        [[2, 1, 1]]
    """
    local, arg = losses[..., :count].min(-1)  # (B, K): the best own move
    if losses.shape[-1] == count:  # no alternatives
        return arg
    gain = local[..., None] - losses[..., count:]  # (B, K, J): how much each jump beats it
    winner = gain.argmax(1, keepdim=True)  # (B, 1, J): the keypoint each alternative helps most
    won = torch.zeros_like(gain, dtype=torch.bool).scatter_(1, winner, True) & (gain > 0)
    gain = gain.masked_fill(~won, float("-inf"))
    top, jump = gain.max(-1)  # (B, K)
    return torch.where(top > float("-inf"), count + jump, arg)


@torch.no_grad()
def residual_jumps(
    model: MIST, images: torch.Tensor, keypoints: torch.Tensor, count: int, blur: int = RESIDUAL_BLUR
) -> torch.Tensor:
    """Jump targets where the reconstruction at ``keypoints`` leaves the most ink out: (B, count, 3).

    The missing ink ``relu(I - I_hat)``, averaged over ``blur`` x ``blur`` px boxes, is ranked by
    :func:`~mistlib.extract.topk_extract` as a one-scale heatmap with the model's suppression window, so
    each target is a local maximum of it; targets take the model's middle scale.

    Args: images (B, C, H, W); keypoints (B, K, 3), the windows the reconstruction is made from.

    Example:
        >>> from mistlib.model import MISTConfig
        >>> model = MIST(MISTConfig(heatmap_channels=4, heatmap_blocks=1, task_width=4))
        >>> images = torch.zeros(1, 1, 80, 80)
        >>> images[0, 0, 50:60, 10:20] = 1.0  # ink no window covers
        >>> far = torch.tensor([[[70.0, 10.0, 20.0]]]).expand(1, 9, 3)  # every window far from it
        >>> x, y, s = residual_jumps(model, images, far, 1)[0, 0].tolist()
        >>> 10 <= x < 20 and 50 <= y < 60, round(s, 3)  # on the uncovered ink, at the middle scale
        (True, 20.0)
    """
    if model.config.task != "reconstruct":
        raise ValueError(f"residual jumps need the reconstruction task, got {model.config.task!r}")
    reconstruction = model.run_task(images, keypoints).reconstruction.float()  # (B, C, H, W)
    missing = (images.float() - reconstruction).clamp_min(0).mean(1, keepdim=True)  # (B, 1, H, W)
    missing = F.avg_pool2d(missing, blur, 1, blur // 2)  # zero padding: edges score less
    middle = model.scales[len(model.scales) // 2 :][:1]  # (1,)
    return topk_extract(missing, count, middle, model.config.nms)


@torch.no_grad()
def _search(
    model: MIST,
    images: torch.Tensor,
    keypoints: torch.Tensor,
    labels: torch.Tensor | None,
    iterations: int,
    step: float,
    alternatives: torch.Tensor | None = None,
) -> torch.Tensor:
    """The "search" rule: each iteration every keypoint takes its best candidate of
    :func:`search_candidates`: a move of :func:`search_moves`, or in the first iteration a jump to one of
    the ``alternatives``."""
    moves = search_moves(step, images.device)
    size = tuple(images.shape[-2:])
    x = keypoints.detach().clone()
    for iteration in range(iterations):
        jumps = alternatives if iteration == 0 else None  # jump first, then refine where it landed
        losses = candidate_losses(model, images, x, labels, moves, jumps)  # (B, K, M + J)
        best = losses.argmin(-1) if jumps is None else best_jumps(losses, moves.shape[0])  # (B, K)
        candidates = search_candidates(x, moves, jumps, model.scales, size)  # (B, K, M + J, 3)
        x = candidates.gather(2, best[:, :, None, None].expand(-1, -1, 1, 3)).squeeze(2)
    return x
