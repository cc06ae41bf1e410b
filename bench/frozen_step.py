"""A FROZEN copy of the old lifting step (commit 50e03da, the old ``--budget cpu`` recipe): it exists only to
measure speed-ups against (``python -m bench.run``). Do not edit it, and never import from it in mistlib.

What is frozen. ``LiftingTrainer.train_step`` of commit 50e03da, its plain fp32 eager branch (``fast=False``)
after the warm-up: the three stages of Algorithm 1 (§6) and every function they ran through, as they were
then: the multiscale heatmap network's forward (the trunk's convolutions with ``padding_mode="replicate"``,
the local spatial softmax by ``max_pool2d`` and ``avg_pool2d``), the top-K extractor ``E_K`` (its NMS by
``max_pool2d``), the patch sampler ``S``, the inverse sampler ``S^-1`` resampling every patch onto a whole
``H x W`` canvas and the canvases combined by a sum or a pixelwise max (as ``sampler.place_patches`` and
``tasks.combine`` were until that commit replaced them by local canvases: 50e03da^ = 706102d), the per-image
``L_task`` of eq. (6), stage 2's ``"scaled"`` rule with ``clamp_keypoints``, ``E_K^-1`` and ``L_lift`` with
the old weighting ``exp(-w L_task)``. The library's input checks are trimmed.

What is shared with today's mistlib: only the network *modules*, for their parameters and for forwards whose
code has not changed since 50e03da: ``HeatmapNet``'s ``stem``, ``blocks`` and ``head`` convolutions (their
weights; the replicate padding they had is applied here as it was then) and the §8 auto-encoder's
``PatchEncoder`` / ``PatchDecoder`` (``git diff 50e03da HEAD -- mistlib/tasks.py``: docstrings only).

The old recipe (``recipe("reconstruct", "mnist-hard", "mist", budget="cpu")`` at 50e03da): the §8
auto-encoder (``task_width`` 8), a slim heatmap trunk (16 channels, 2 blocks), K = 9 windows on 80 x 80
MNIST hard, scales (16, 20, 25) px at reference size 20, composite "max", 5 x 5 NMS, N = 2 stage-2
iterations of 1 px (``"scaled"``), lift weighting 5, single-point targets (sigma 0), Adam 1e-3 on the task
network and 1e-4 on the heatmap network, batch 16 (bench.run times it at its own batch, 32).

Notation: B batch, K windows, S scales, H x W image, C channels, P patch side.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mistlib.heatmap import HeatmapConfig, HeatmapNet
from mistlib.tasks import PatchAutoencoder

SOFTMAX_EPS = 1e-6  # added to the window sum of the local softmax
MOMENT_EPS = 1e-6  # epsilon of eq. (2)
OLD_RECIPE = {  # the old --budget cpu recipe of reconstruct / mnist-hard / mist, lifting steps
    "heatmap_channels": 16,
    "heatmap_blocks": 2,
    "task_width": 8,
    "k": 9,
    "patch_size": 32,
    "scales": (16.0, 20.0, 25.0),
    "reference_size": 20.0,
    "composite": "max",
    "nms": 5,
    "refine_iterations": 2,
    "refine_step": 1.0,
    "lift_weighting": 5.0,
    "target_sigma": 0.0,
    "lr_task": 1e-3,
    "lr_heatmap": 1e-4,
    "batch_size": 16,
}


# -- H_eta: the heatmap network's forward at 50e03da --------------------------------------------------------
def conv_replicate(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """A 3 x 3 conv of the trunk as ``nn.Conv2d(..., padding=1, padding_mode="replicate")`` ran it:
    (N, C_in, h, w) -> (N, C_out, h, w).

    Example:
        >>> conv = nn.Conv2d(1, 2, 3)
        >>> conv_replicate(conv, torch.rand(1, 1, 5, 6)).shape
        torch.Size([1, 2, 5, 6])
    """
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), conv.weight, conv.bias)


def trunk(net: HeatmapNet, images: torch.Tensor) -> torch.Tensor:
    """The trunk at one resolution, stem, ReLU, ResNet blocks and 1 x 1 head: (B, C, h, w) -> (B, 1, h, w).

    Example:
        >>> trunk(HeatmapNet(HeatmapConfig(channels=4, num_blocks=1)), torch.rand(2, 1, 9, 7)).shape
        torch.Size([2, 1, 9, 7])
    """
    x = F.relu(conv_replicate(net.stem, images))  # (B, F, h, w)
    for block in net.blocks:
        x = F.relu(x + conv_replicate(block.conv2, F.relu(conv_replicate(block.conv1, x))))
    return net.head(x)  # (B, 1, h, w)


def scores(net: HeatmapNet, images: torch.Tensor) -> torch.Tensor:
    """Raw per-scale scores, each scale's resized image through the trunk and upsampled back: (B, S, H, W).

    Example:
        >>> scores(HeatmapNet(HeatmapConfig(channels=4, num_blocks=1)), torch.rand(1, 1, 40, 40)).shape
        torch.Size([1, 3, 40, 40])
    """
    height, width = images.shape[-2:]
    maps = []
    for factor in net.resize_factors():
        size = (max(1, round(height * factor)), max(1, round(width * factor)))
        resized = images
        if size != (height, width):
            resized = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)
        score = trunk(net, resized)  # (B, 1, h_s, w_s)
        if size != (height, width):
            score = F.interpolate(score, size=(height, width), mode="bilinear", align_corners=False)
        maps.append(score)  # (B, 1, H, W)
    return torch.cat(maps, dim=1)  # (B, S, H, W)


def local_softmax(scores: torch.Tensor, kernel_size: int, strength: float) -> torch.Tensor:
    """The local spatial softmax by pooling: ``e / (box sum of e + eps)``, ``e = exp(strength (v - max))``
    over ``kernel_size`` windows with replicated edges: (B, S, H, W) -> (B, S, H, W).

    Example:
        >>> v = torch.zeros(1, 1, 5, 5); v[0, 0, 2, 2] = 5.0
        >>> round(local_softmax(v, 3, 10.0)[0, 0, 2, 2].item(), 4)
        1.0
    """
    r = kernel_size // 2
    area = kernel_size * kernel_size
    padded = F.pad(scores, (r, r, r, r), mode="replicate")  # (B, S, H + 2r, W + 2r)
    local_max = F.max_pool2d(padded, kernel_size, stride=1)  # (B, S, H, W)
    e = torch.exp(strength * (scores - local_max))
    padded = F.pad(e, (r, r, r, r), mode="replicate")
    window_sum = F.avg_pool2d(padded, kernel_size, stride=1) * area  # (B, S, H, W)
    return e / (window_sum + SOFTMAX_EPS)


def heatmap_forward(net: HeatmapNet, images: torch.Tensor) -> torch.Tensor:
    """``h = H_eta(I)``: the scores sharpened by the local spatial softmax, (B, C, H, W) -> (B, S, H, W).

    Example:
        >>> net = HeatmapNet(HeatmapConfig(channels=4, num_blocks=1))
        >>> heatmap_forward(net, torch.rand(2, 1, 32, 32)).shape
        torch.Size([2, 3, 32, 32])
    """
    cfg = net.config
    return local_softmax(scores(net, images), cfg.softmax_kernel, cfg.softmax_strength)


# -- E_K and E_K^-1 ------------------------------------------------------------------------------------------
def topk_extract(heatmap: torch.Tensor, k: int, scales: torch.Tensor, nms: int = 1) -> torch.Tensor:
    """``E_K`` (eq. 2-4): the K strongest pixels of ``max_s h_s`` (local maxima of ``nms`` windows first)
    and their scale moments. heatmap (B, S, H, W); scales (S,). Returns: (B, K, 3) as (x, y, s).

    Example:
        >>> h = torch.zeros(1, 2, 4, 5); h[0, 0, 1, 3] = 0.9; h[0, 1, 1, 3] = 0.3; h[0, 1, 2, 0] = 0.5
        >>> topk_extract(h, 2, torch.tensor([10.0, 20.0]))
        tensor([[[ 3.0000,  1.0000, 12.5000],
                 [ 0.0000,  2.0000, 20.0000]]])
    """
    batch, num_scales, height, width = heatmap.shape
    scales = scales.to(heatmap)
    peak = heatmap.amax(dim=1)  # (B, H, W), eq. (3)
    if nms > 1:
        local_max = F.max_pool2d(peak[:, None], nms, 1, nms // 2)[:, 0]  # (B, H, W)
        lift = (peak.amax() - peak.amin() + 1).detach()
        peak = peak + lift * (peak == local_max)
    index = peak.flatten(1).topk(k, dim=1, sorted=True).indices  # (B, K)
    y = torch.div(index, width, rounding_mode="floor")  # (B, K) rows
    x = index - y * width  # (B, K) columns
    gather = index.unsqueeze(1).expand(batch, num_scales, k)  # (B, S, K)
    weights = heatmap.flatten(2).gather(2, gather)  # (B, S, K)
    s = (weights * scales[:, None]).sum(1) / (weights.sum(1) + MOMENT_EPS)  # (B, K), eq. (2) + (4)
    return torch.stack([x.to(heatmap.dtype), y.to(heatmap.dtype), s], dim=-1)  # (B, K, 3)


def target_heatmap(keypoints: torch.Tensor, scales: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``E_K^-1``: a unit mass at each keypoint's pixel, split between the two scales around its ``s``.
    keypoints (B, K, 3); scales (S,); size (H, W). Returns: (B, S, H, W).

    Example:
        >>> h = target_heatmap(torch.tensor([[[2.4, 0.6, 15.0]]]), torch.tensor([10.0, 20.0]), (3, 4))
        >>> h[0, :, 1, 2].tolist(), float(h.sum())
        ([0.5, 0.5], 1.0)
    """
    height, width = size
    batch, k, _ = keypoints.shape
    scales = scales.to(keypoints)
    num_scales = scales.numel()
    col = torch.floor(keypoints[..., 0] + 0.5).clamp(0, width - 1).long()  # (B, K)
    row = torch.floor(keypoints[..., 1] + 0.5).clamp(0, height - 1).long()  # (B, K)
    s = torch.minimum(torch.maximum(keypoints[..., 2], scales[0]), scales[-1])  # (B, K)
    if num_scales == 1:
        low = torch.zeros_like(col)
        w_high = torch.zeros_like(s)
    else:
        low = (torch.searchsorted(scales, s.contiguous(), right=True) - 1).clamp(0, num_scales - 2)
        w_high = (s - scales[low]) / (scales[low + 1] - scales[low])  # (B, K)
    pixel = row * width + col  # (B, K)
    flat = keypoints.new_zeros(batch, num_scales * height * width)  # (B, S * H * W)
    flat = flat.scatter_add(1, low * height * width + pixel, 1 - w_high)
    if num_scales > 1:
        flat = flat.scatter_add(1, (low + 1) * height * width + pixel, w_high)
    return flat.view(batch, num_scales, height, width)  # (B, S, H, W)


def lift_target(
    keypoints: torch.Tensor, scales: torch.Tensor, size: tuple[int, int], sigma: float
) -> torch.Tensor:
    """``h_bar = E_K^-1(x*)``, single points (sigma 0) or Gaussian blobs of peak 1: (B, S, H, W).

    Example:
        >>> keypoints, scales = torch.tensor([[[5.0, 6.0, 20.0]]]), torch.tensor([16.0, 24.0])
        >>> lift_target(keypoints, scales, (10, 10), 0.0)[0, :, 6, 5].tolist()
        [0.5, 0.5]
    """
    target = target_heatmap(keypoints, scales, size)  # (B, S, H, W)
    if sigma <= 0:
        return target
    radius = max(1, int(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, device=target.device, dtype=target.dtype)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))  # (2r+1,), peak 1
    channels = target.shape[1]
    rows = kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    cols = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    blurred = F.conv2d(F.pad(target, (0, 0, radius, radius)), rows, groups=channels)
    return F.conv2d(F.pad(blurred, (radius, radius, 0, 0)), cols, groups=channels)


# -- S and S^-1 ----------------------------------------------------------------------------------------------
def _bilinear(source: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """``grid_sample``: bilinear, zeros outside, ``align_corners=False``."""
    return F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def sample_patches(images: torch.Tensor, keypoints: torch.Tensor, size: int) -> torch.Tensor:
    """``S(I, x)``, eq. (5): each window (x, y, s) resampled to P x P. images (B, C, H, W); keypoints
    (B, K, 3). Returns: (B, K, C, P, P).

    Example:
        >>> images = torch.arange(36.0).view(1, 1, 6, 6)
        >>> sample_patches(images, torch.tensor([[[2.5, 1.5, 2.0]]]), size=2)[0, 0, 0]
        tensor([[ 8.,  9.],
                [14., 15.]])
    """
    batch, channels, height, width = images.shape
    k = keypoints.shape[1]
    keypoints = keypoints.to(images)
    x, y, s = keypoints.unbind(-1)  # (B, K) each
    steps = (torch.arange(size, device=images.device, dtype=images.dtype) + 0.5) / size  # (P,)
    offsets = (steps - 0.5)[None, None] * s[..., None]  # (B, K, P)
    u = (2 * (x[..., None] + offsets) + 1) / width - 1  # (B, K, P) columns, normalised
    v = (2 * (y[..., None] + offsets) + 1) / height - 1  # (B, K, P) rows
    grid = torch.stack(torch.broadcast_tensors(u[:, :, None, :], v[:, :, :, None]), dim=-1)  # (B, K, P, P, 2)
    grid = grid.reshape(batch, k * size, size, 2)  # (B, K * P, P, 2)
    out = _bilinear(images, grid)  # (B, C, K * P, P)
    return out.view(batch, channels, k, size, size).permute(0, 2, 1, 3, 4)  # (B, K, C, P, P)


def place_patches(
    patches: torch.Tensor, keypoints: torch.Tensor, image_size: tuple[int, int]
) -> torch.Tensor:
    """``S^-1(P, x)``: every patch resampled onto a whole zero canvas at its window (the full-canvas
    ``grid_sample`` of 706102d). patches (B, K, C, P, P); keypoints (B, K, 3). Returns: (B, K, C, H, W).

    Example:
        >>> patch = torch.tensor([[[[[1.0, 2.0], [3.0, 4.0]]]]])  # (1, 1, 1, 2, 2)
        >>> place_patches(patch, torch.tensor([[[1.5, 0.5, 2.0]]]), (3, 4))[0, 0, 0]
        tensor([[0., 1., 2., 0.],
                [0., 3., 4., 0.],
                [0., 0., 0., 0.]])
    """
    height, width = image_size
    batch, k, channels, size, _ = patches.shape
    keypoints = keypoints.to(patches)
    x, y, s = (t[..., None] for t in keypoints.unbind(-1))  # (B, K, 1) each
    cols = torch.arange(width, device=patches.device, dtype=patches.dtype)  # (W,)
    rows = torch.arange(height, device=patches.device, dtype=patches.dtype)  # (H,)
    u = 2 * (cols - x) / s  # (B, K, W)
    v = 2 * (rows - y) / s  # (B, K, H)
    grid = torch.stack(torch.broadcast_tensors(u[:, :, None, :], v[:, :, :, None]), dim=-1)  # (B, K, H, W, 2)
    grid = grid.reshape(batch * k, height, width, 2)  # (B * K, H, W, 2)
    flat = patches.reshape(batch * k, channels, size, size)  # (B * K, C, P, P)
    out = _bilinear(flat, grid)  # (B * K, C, H, W)
    return out.view(batch, k, channels, height, width)  # (B, K, C, H, W)


def combine(canvases: torch.Tensor, composite: str = "sum") -> torch.Tensor:
    """Placed patches into one image by sum (eq. 6) or pixelwise max: (B, K, C, H, W) -> (B, C, H, W).

    Example:
        >>> canvases = torch.tensor([1.0, 3.0, 2.0]).view(1, 3, 1, 1, 1)
        >>> combine(canvases).item(), combine(canvases, "max").item()
        (6.0, 3.0)
    """
    return canvases.sum(1) if composite == "sum" else canvases.amax(1)


def reconstruct(
    patches_out: torch.Tensor, keypoints: torch.Tensor, image_size: tuple[int, int], composite: str = "sum"
) -> torch.Tensor:
    """``sum_k S^-1(P_k, x_k)`` of eq. (6), or its pixelwise max: (B, K, C, P, P) -> (B, C, H, W).

    Example:
        >>> kp = torch.tensor([[[15.5, 15.5, 32.0], [15.5, 15.5, 32.0]]])  # the same window twice
        >>> reconstruct(torch.ones(1, 2, 1, 32, 32), kp, (40, 40))[0, 0, 15, 15].item()
        2.0
    """
    return combine(place_patches(patches_out, keypoints, image_size), composite)  # (B, C, H, W)


def per_image_task_loss(images: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    """``L_task`` of each image, eq. (6) as a mean squared error: (B, C, H, W) twice -> (B,).

    Example:
        >>> per_image_task_loss(torch.ones(2, 1, 4, 4), torch.zeros(2, 1, 4, 4))
        tensor([1., 1.])
    """
    return ((images - reconstruction) ** 2).flatten(1).mean(1)


# -- stage 2 ------------------------------------------------------------------------------------------------
def clamp_keypoints(keypoints: torch.Tensor, scales: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(x, y) inside the image, s inside [scales[0], scales[-1]]: (B, K, 3) -> (B, K, 3).

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
    """``step * grad / rms(grad)`` over the whole tensor, each entry capped at ``2 * step``.

    Example:
        >>> scaled_step(torch.tensor([[3.0, 4.0, 0.0]]), step=1.0)
        tensor([[1.0392, 1.3856, 0.0000]])
    """
    rms = grad.square().mean().sqrt().clamp_min(1e-12)
    return (step * grad / rms).clamp(-2 * step, 2 * step)


# -- the model and the step ---------------------------------------------------------------------------------
class FrozenModel(nn.Module):
    """The two networks of the old ``--budget cpu`` model: ``heatmap_net`` (today's :class:`HeatmapNet`
    module, for its parameters) and ``task_net`` (the §8 :class:`PatchAutoencoder`), with the old forwards.

    Example:
        >>> model = FrozenModel(heatmap_channels=4, heatmap_blocks=1, task_width=2)
        >>> out = model.run_task(torch.rand(1, 1, 80, 80), torch.tensor([[[40.0, 40.0, 20.0]] * 9]))
        >>> out.shape
        torch.Size([1, 1, 80, 80])
    """

    def __init__(
        self,
        heatmap_channels: int = OLD_RECIPE["heatmap_channels"],
        heatmap_blocks: int = OLD_RECIPE["heatmap_blocks"],
        task_width: int = OLD_RECIPE["task_width"],
        k: int = OLD_RECIPE["k"],
        composite: str = OLD_RECIPE["composite"],
        nms: int = OLD_RECIPE["nms"],
    ) -> None:
        super().__init__()
        config = HeatmapConfig(
            channels=heatmap_channels,
            num_blocks=heatmap_blocks,
            scales=OLD_RECIPE["scales"],
            reference_size=OLD_RECIPE["reference_size"],
        )
        self.heatmap_net = HeatmapNet(config)
        self.task_net = PatchAutoencoder(
            channels=1, base_width=task_width, patch_size=OLD_RECIPE["patch_size"]
        )
        self.k, self.composite, self.nms = k, composite, nms

    @property
    def scales(self) -> torch.Tensor:
        """(S,) the scale space on the model's device."""
        return self.heatmap_net.scales

    def extract(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``h = H_eta(I)`` (B, S, H, W) and ``x = E_K(h)`` (B, K, 3)."""
        heatmap = heatmap_forward(self.heatmap_net, images)  # (B, S, H, W)
        return heatmap, topk_extract(heatmap, self.k, self.scales, self.nms)

    def run_task(self, images: torch.Tensor, keypoints: torch.Tensor) -> torch.Tensor:
        """The reconstruction ``combine(S^-1(T_tau(S(I, x)), x))`` (background 0): (B, C, H, W)."""
        patches = sample_patches(images, keypoints, OLD_RECIPE["patch_size"])  # (B, K, C, P, P)
        lead, shape = patches.shape[:2], patches.shape[2:]
        latent = self.task_net.encoder(patches.reshape(-1, *shape))  # (B * K, D)
        decoded = self.task_net.decoder(latent).view(*lead, *shape)  # (B, K, C, P, P)
        return reconstruct(decoded, keypoints, (images.shape[-2], images.shape[-1]), self.composite)


class FrozenStep:
    """The old lifting step (Algorithm 1 after the warm-up, fp32 eager) on a freshly seeded old model.

    ``step(images)`` runs stage 1 (one Adam step on tau at ``E_K(H_eta(I))``), stage 2 (N scaled keypoint
    steps, tau frozen) and stage 3 (one Adam step on eta with the weighted ``L_lift`` of eq. 14), and
    returns the losses as floats. ``network`` keyword arguments (``heatmap_channels``, ``heatmap_blocks``,
    ``task_width``, ``k``, ``composite``, ``nms``) shrink the model for tests.

    Example:
        >>> frozen = FrozenStep(heatmap_channels=4, heatmap_blocks=1, task_width=2)
        >>> sorted(frozen.step(torch.rand(2, 1, 80, 80)))
        ['lift', 'moved_px', 'task']
    """

    def __init__(self, model_state_seed: int = 0, device: str | torch.device = "cpu", **network) -> None:
        torch.manual_seed(model_state_seed)
        self.device = torch.device(device)
        self.model = FrozenModel(**network).to(self.device)
        self.optimizers = {
            "task": torch.optim.Adam(self.model.task_net.parameters(), lr=OLD_RECIPE["lr_task"]),
            "heatmap": torch.optim.Adam(self.model.heatmap_net.parameters(), lr=OLD_RECIPE["lr_heatmap"]),
        }

    def refine(self, images: torch.Tensor, keypoints: torch.Tensor) -> torch.Tensor:
        """Stage 2, the ``"scaled"`` rule: (B, K, 3) -> refined (B, K, 3), detached and clamped."""
        model, step = self.model, OLD_RECIPE["refine_step"]
        size = (images.shape[-2], images.shape[-1])
        x = keypoints.detach().clone().requires_grad_(True)
        frozen = [p for p in model.task_net.parameters() if p.requires_grad]
        for parameter in frozen:
            parameter.requires_grad_(False)
        try:
            for _ in range(OLD_RECIPE["refine_iterations"]):
                x.grad = None
                per_image_task_loss(images, model.run_task(images, x)).sum().backward()
                with torch.no_grad():
                    x.sub_(scaled_step(x.grad, step))
                    x.copy_(clamp_keypoints(x, model.scales, size))
        finally:
            for parameter in frozen:
                parameter.requires_grad_(True)
        return x.detach()

    def step(self, images: torch.Tensor) -> dict[str, float]:
        """One lifting step on images (B, 1, H, W) in [0, 1]: ``{"task", "lift", "moved_px"}``."""
        model = self.model
        size = (images.shape[-2], images.shape[-1])
        # stage 1: tau <- optimise T_tau with L_task at x = E_K(H_eta(I)); the heatmap's graph is kept
        heatmap, keypoints = model.extract(images)  # (B, S, H, W), (B, K, 3)
        keypoints = keypoints.detach()
        task_opt = self.optimizers["task"]
        task_opt.zero_grad(set_to_none=True)
        task_loss = per_image_task_loss(images, model.run_task(images, keypoints)).mean()
        task_loss.backward()
        task_opt.step()
        # stage 2: x* <- optimise {x_k} with L_task, tau frozen
        refined = self.refine(images, keypoints)
        # stage 3: h_bar = E_K^-1(x*); eta <- optimise H_eta with L_lift, each image weighted exp(-w L_task)
        with torch.no_grad():
            target = lift_target(refined, model.scales, size, OLD_RECIPE["target_sigma"])  # (B, S, H, W)
            refined_loss = per_image_task_loss(images, model.run_task(images, refined))  # (B,)
            weights = torch.exp(-OLD_RECIPE["lift_weighting"] * refined_loss)
        heat_opt = self.optimizers["heatmap"]
        heat_opt.zero_grad(set_to_none=True)
        lift = ((heatmap - target) ** 2).flatten(1).mean(1)  # (B,), eq. (14)
        lift_loss = (weights * lift).mean()
        lift_loss.backward()
        heat_opt.step()
        moved = (refined[..., :2] - keypoints[..., :2]).norm(dim=-1).mean()
        return {"task": task_loss.item(), "lift": lift_loss.item(), "moved_px": moved.item()}
