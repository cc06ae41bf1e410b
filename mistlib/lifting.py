"""Training MIST by lifting: Algorithm 1 of §6, eq. (8)–(14).

The top-K extractor ``E_K`` has no useful gradient, so the keypoints it selects are treated as free
(slack) variables ``x``. Each batch runs three stages:

1. ``x = E_K(H_eta(I))`` without gradient; one optimiser step on the task network ``tau`` with ``L_task``.
2. ``tau`` frozen; ``x`` (positions and scales) refined for ``N`` iterations on ``L_task`` (eq. 13).
3. ``h_bar = E_K^{-1}(x*)``; one optimiser step on the heatmap network ``eta`` with
   ``L_lift = ||h_bar - H_eta(I)||^2`` (eq. 14).

Stage 2 uses Adam on the keypoints, freshly started for every batch: Adam's first steps move each
coordinate by about ``refine_step`` pixels whatever the size of the gradient, so the step is stated in
pixels (the authors' code uses plain SGD on normalised coordinates with 2 iterations instead).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from mistlib.extract import target_heatmap
from mistlib.model import MIST, MISTOutput
from mistlib.training import TrainConfig, Trainer, resolve_device, step_generator


@dataclass
class LiftingConfig(TrainConfig):
    """Hyper-parameters of Algorithm 1 (defaults: MNIST hard; research/README.md says how they were chosen).

    Example:
        >>> config = LiftingConfig(steps=100, warmup_steps=20, refine_iterations=2)
        >>> config.refine_optimizer, config.warmup_loss, config.batch_size
        ('scaled', 'patch', 32)
    """

    lr_task: float = 1e-3  # Adam learning rate of the task network tau (stage 1)
    lr_heatmap: float = 1e-4  # Adam learning rate of the heatmap network eta (stage 3; authors: 1e-4)
    refine_iterations: int = 4  # N, keypoint refinement iterations per batch (stage 2; authors: 2)
    refine_step: float = 0.5  # stage-2 step size, in pixels per iteration (see refine_optimizer)
    refine_optimizer: str = (
        "scaled"  # "scaled": gradient steps scaled by the batch RMS; "adam": sign-like steps
    )
    warmup_steps: int = 0  # first steps train only tau, on K random windows per image
    warmup_loss: str = "patch"  # warm-up loss: "patch" (each patch vs its own input) or "image" (eq. 6)
    lift_weighting: float = 0.0  # w: each image's L_lift is weighted by exp(-w * L_task) (authors: 5)
    target_sigma: float = 0.0  # 0: single-point targets (§6); > 0: Gaussian blobs of this sigma (px)
    snapshot_every: int = 0  # record the probe images into the training log every n steps (0: never)


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


def per_image_task_loss(
    model: MIST, images: torch.Tensor, out: MISTOutput, labels: torch.Tensor | None
) -> torch.Tensor:
    """``L_task`` of each image, (B,): eq. (6) mean squared error or eq. (7) cross-entropy.

    Example:
        >>> from mistlib.model import MISTConfig
        >>> model, images = MIST(MISTConfig()), torch.rand(2, 1, 80, 80)
        >>> per_image_task_loss(model, images, model(images), None).shape
        torch.Size([2])
    """
    return model.task_loss(images, out, labels, reduction="none")


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
) -> torch.Tensor:
    """Stage 2 of Algorithm 1: move the keypoints downhill on ``L_task`` with the task network frozen.

    Two update rules, both with ``step`` in pixels:

    * ``"scaled"``: a gradient step divided by the root-mean-square gradient of the whole batch, capped at
      2 * step. A keypoint whose gradient is typical moves ``step`` pixels, one with no signal stays put.
    * ``"adam"``: Adam restarted for every batch. Its first steps are ``step * sign(gradient)``: every
      coordinate moves by the full step whatever the size of its gradient, so noise becomes motion.

    Args:
        images: (B, C, H, W); keypoints: (B, K, 3) the starting (x, y, s); labels: (B, L) or None.
        iterations: N; step: pixels per iteration; optimizer: "scaled" or "adam".

    Returns: (B, K, 3) the refined keypoints x*, detached, clamped to the image and the scale range.

    Example:
        >>> from mistlib.model import MISTConfig
        >>> model, images = MIST(MISTConfig()), torch.rand(1, 1, 80, 80)
        >>> start = torch.tensor([[[40.0, 40.0, 20.0]]])
        >>> refine_keypoints(model, images, start, None, iterations=2, step=0.5).shape
        torch.Size([1, 1, 3])
    """
    if optimizer not in ("scaled", "adam"):
        raise ValueError(f"optimizer must be 'scaled' or 'adam', got {optimizer!r}")
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
            per_image_task_loss(model, images, model.run_task(images, x), labels).sum().backward()
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


def lift_target(
    keypoints: torch.Tensor, scales: torch.Tensor, size: tuple[int, int], sigma: float
) -> torch.Tensor:
    """``h_bar = E_K^{-1}(x*)``: single points (sigma = 0) or Gaussian blobs with peak 1.

    Args: keypoints (B, K, 3); scales (S,); size (H, W); sigma in pixels. Returns: (B, S, H, W).

    Example:
        >>> scales = torch.tensor([16.0, 24.0])
        >>> target = lift_target(torch.tensor([[[5.0, 6.0, 20.0]]]), scales, (10, 10), sigma=0.0)
        >>> target[0, :, 6, 5].tolist(), target.sum().item()
        ([0.5, 0.5], 1.0)
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


class LiftingTrainer(Trainer):
    """Algorithm 1 for a :class:`~mistlib.model.MIST` model.

    Example:
        >>> from mistlib.model import MISTConfig
        >>> model = MIST(MISTConfig(task="reconstruct"))
        >>> trainer = LiftingTrainer(model, "reconstruct", LiftingConfig(steps=100, device="cpu"))
        >>> from mistlib.data import MNISTHard
        >>> history = trainer.fit(MNISTHard("train", size=512).images)  # doctest: +SKIP
    """

    kind = "lifting"

    def __init__(self, model: MIST, task: str, config: LiftingConfig | None = None) -> None:
        super().__init__()
        if task != model.config.task:
            raise ValueError(f"task {task!r} does not match the model's task {model.config.task!r}")
        self.config = config or LiftingConfig()
        self.model = model.to(resolve_device(self.config.device))
        self.optimizers = {
            "task": torch.optim.Adam(model.task_net.parameters(), lr=self.config.lr_task),
            "heatmap": torch.optim.Adam(model.heatmap_net.parameters(), lr=self.config.lr_heatmap),
        }
        self.log: TrainingLog | None = None
        self.probe: tuple[torch.Tensor, torch.Tensor | None] | None = None

    def random_keypoints(self, batch: int, size: tuple[int, int]) -> torch.Tensor:
        """K uniformly random windows per image for the warm-up, drawn from this step's generator."""
        generator = step_generator(self.config.seed, self.step, self.device)
        scales = self.model.scales
        uniform = torch.rand(batch, self.model.config.k, 3, generator=generator, device=self.device)
        low = torch.tensor([0.0, 0.0, float(scales[0])], device=self.device)
        high = torch.tensor([size[1] - 1.0, size[0] - 1.0, float(scales[-1])], device=self.device)
        return low + uniform * (high - low)  # (B, K, 3)

    def refine(
        self, images: torch.Tensor, keypoints: torch.Tensor, labels: torch.Tensor | None
    ) -> torch.Tensor:
        """Stage 2 with this trainer's settings: (B, K, 3) -> refined (B, K, 3)."""
        c = self.config
        return refine_keypoints(
            self.model, images, keypoints, labels, c.refine_iterations, c.refine_step, c.refine_optimizer
        )

    def inspect(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Run the three stages on a batch WITHOUT updating any weight; return every intermediate.

        Returns a dict of ``image`` (B, C, H, W), ``heatmap`` (B, S, H, W), ``keypoints`` (B, K, 3) before
        and ``refined`` (B, K, 3) after stage 2, ``target`` (B, S, H, W) = h_bar, ``output`` (the task
        output at the refined keypoints: reconstruction (B, C, H, W) or logits (B, K, classes)) and the
        per-image losses ``task_before``, ``task_after`` and ``lift`` (B,).
        """
        size = tuple(images.shape[-2:])
        with torch.no_grad():
            heatmap, keypoints = self.model.extract(images)
            before = per_image_task_loss(self.model, images, self.model.run_task(images, keypoints), labels)
        refined = self.refine(images, keypoints, labels)
        with torch.no_grad():
            out = self.model.run_task(images, refined)
            after = per_image_task_loss(self.model, images, out, labels)
            target = lift_target(refined, self.model.scales, size, self.config.target_sigma)
            lift = ((heatmap - target) ** 2).flatten(1).mean(1)
        output = out.reconstruction if out.reconstruction is not None else out.logits
        return {
            "image": images,
            "heatmap": heatmap,
            "keypoints": keypoints,
            "refined": refined,
            "target": target,
            "output": output,
            "task_before": before,
            "task_after": after,
            "lift": lift,
        }

    def train_step(self, images: torch.Tensor, labels: torch.Tensor | None) -> dict[str, float]:
        model, config = self.model, self.config
        size = tuple(images.shape[-2:])
        if self.log is not None and config.snapshot_every and self.step % config.snapshot_every == 0:
            self.log.record(self.step, self.inspect(*self.probe))

        # stage 1: tau <- optimise T_tau with L_task at x = E_K(H_eta(I))
        warming_up = self.step < config.warmup_steps
        if warming_up:
            keypoints = self.random_keypoints(images.shape[0], size)
        else:
            # eta does not change before stage 3, so this one forward pass (kept for its gradient) serves both
            heatmap, keypoints = model.extract(images)  # (B, S, H, W), (B, K, 3)
            keypoints = keypoints.detach()
        task_opt = self.optimizers["task"]
        task_opt.zero_grad(set_to_none=True)
        out = model.run_task(images, keypoints)
        if warming_up and config.warmup_loss == "patch" and out.reconstruction is not None:
            # each patch against its own input: random windows overlap, and eq. (6) would count the ink of
            # an overlap twice, teaching the auto-encoder to output dim patches (research/README.md)
            task_loss = ((out.task_output - out.patches) ** 2).mean()
        else:
            task_loss = per_image_task_loss(model, images, out, labels).mean()
        task_loss.backward()
        task_opt.step()
        if warming_up:
            return {"warmup": task_loss.item()}

        # stage 2: x* <- optimise {x_k} with L_task, tau frozen
        refined = self.refine(images, keypoints, labels)

        # stage 3: h_bar = E_K^{-1}(x*); eta <- optimise H_eta with L_lift = ||h_bar - H_eta(I)||^2
        with torch.no_grad():
            target = lift_target(refined, model.scales, size, config.target_sigma)  # (B, S, H, W)
            weights = torch.ones(images.shape[0], device=images.device)
            if config.lift_weighting > 0:
                refined_loss = per_image_task_loss(model, images, model.run_task(images, refined), labels)
                weights = torch.exp(-config.lift_weighting * refined_loss)
        heat_opt = self.optimizers["heatmap"]
        heat_opt.zero_grad(set_to_none=True)
        lift = ((heatmap - target) ** 2).flatten(1).mean(1)  # (B,), eq. (14)
        lift_loss = (weights * lift).mean()
        lift_loss.backward()
        heat_opt.step()
        moved = (refined[..., :2] - keypoints[..., :2]).norm(dim=-1).mean()
        return {"task": task_loss.item(), "lift": lift_loss.item(), "moved_px": moved.item()}

    def record_to(self, log: TrainingLog, images: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        """Record :meth:`inspect` of these probe images into ``log`` every ``snapshot_every`` steps."""
        self.log = log
        self.probe = (images.to(self.device), None if labels is None else labels.to(self.device))


class TrainingLog:
    """Compact snapshots of lifting on fixed probe images, for chapter 6's step/stage scrubber.

    Images, heatmaps and reconstructions are stored as uint8 (values in [0, 1] quantised to 1/255);
    keypoints, logits and losses as float32. ``h_bar`` is not stored: it is ``lift_target(refined)``.

    Example:
        >>> log = TrainingLog({"run": "demo"})
        >>> log.record(0, {"image": torch.rand(1, 1, 8, 8), "keypoints": torch.zeros(1, 2, 3)})
        >>> len(log), log.snapshots[0]["image"].dtype, log.snapshot(0)["image"].dtype
        (1, torch.uint8, torch.float32)
    """

    def __init__(self, meta: dict | None = None) -> None:
        self.meta = dict(meta or {})
        self.steps: list[int] = []
        self.snapshots: list[dict[str, torch.Tensor]] = []

    def record(self, step: int, inspected: dict[str, torch.Tensor]) -> None:
        """Append one snapshot taken at ``step`` (the output of :meth:`LiftingTrainer.inspect`)."""
        snapshot = {}
        for name, value in inspected.items():
            value = value.detach().cpu()
            if name in ("image", "heatmap") or (name == "output" and value.dim() == 4):
                value = (value.clamp(0, 1) * 255).round().to(torch.uint8)
            elif name != "target":
                value = value.float()
            else:
                continue
            snapshot[name] = value
        self.steps.append(step)
        self.snapshots.append(snapshot)

    def save(self, path: str | Path) -> None:
        """Write the log atomically; it loads with ``torch.load(weights_only=True)``."""
        from mistlib.checkpoint import save_checkpoint

        save_checkpoint(
            path,
            state={"steps": self.steps, "snapshots": self.snapshots},
            config={},
            kind="log",
            meta=self.meta,
        )

    @classmethod
    def load(cls, path: str | Path) -> TrainingLog:
        from mistlib.checkpoint import load_checkpoint

        checkpoint = load_checkpoint(path, kind="log")
        log = cls(checkpoint.get("meta"))
        log.steps = list(checkpoint["state"]["steps"])
        log.snapshots = list(checkpoint["state"]["snapshots"])
        return log

    def __len__(self) -> int:
        return len(self.steps)

    def snapshot(self, index: int) -> dict[str, torch.Tensor]:
        """Snapshot ``index`` as floats in [0, 1] (images) and float32 tensors (everything else)."""
        return {
            name: value.float() / 255 if value.dtype == torch.uint8 else value
            for name, value in self.snapshots[index].items()
        }
