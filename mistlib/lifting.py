"""Training MIST by lifting: Algorithm 1 of §6, eq. (8)–(14).

The top-K extractor ``E_K`` has no useful gradient, so the keypoints it selects are treated as free
(slack) variables ``x``. Each batch runs three stages:

1. ``x = E_K(H_eta(I))`` without gradient; one optimiser step on the task network ``tau`` with ``L_task``.
2. ``tau`` frozen; ``x`` (positions and scales) refined for ``N`` iterations on ``L_task`` (eq. 13).
3. ``h_bar = E_K^{-1}(x*)``; one optimiser step on the heatmap network ``eta`` with
   ``L_lift = ||h_bar - H_eta(I)||^2`` (eq. 14).

Stage 2 takes, by default, gradient steps scaled by the batch's RMS gradient (``refine_optimizer="scaled"``):
a typical keypoint moves ``refine_step`` pixels per iteration and one without signal stays put. Adam,
restarted per batch (``"adam"``), moves every coordinate by the full step whatever its gradient, which
research/README.md measured to push keypoints off the digits. The authors' code uses plain SGD on
normalised coordinates with 2 iterations.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from mistlib.extract import _target_heatmap, target_heatmap
from mistlib.model import MIST, MISTOutput
from mistlib.training import TrainConfig, Trainer, resolve_device, step_generator


@dataclass
class LiftingConfig(TrainConfig):
    """Hyper-parameters of Algorithm 1 (defaults: MNIST hard; research/README.md says how they were chosen).

    Example:
        >>> config = LiftingConfig(steps=100, warmup_steps=20, refine_iterations=2)
        >>> config.refine_optimizer, config.warmup_loss, config.batch_size
        ('scaled', 'patch', 32)
        >>> config.fast, LiftingConfig(fast=True, amp=True).amp  # the optimised step is opt-in
        (False, True)
        >>> LiftingConfig(compile=True)
        Traceback (most recent call last):
        ...
        ValueError: compile: only in the optimised step, set fast=True as well
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
    warmup_windows: str = "random"  # warm-up windows: "random", or "heatmap": E_K of the (frozen) heatmap net
    lift_weighting: float = 0.0  # w: each image's L_lift is weighted by exp(-w * L_task) (authors: 5)
    target_sigma: float = 0.0  # 0: single-point targets (§6); > 0: Gaussian blobs of this sigma (px)
    snapshot_every: int = 0  # record the probe images into the training log every n steps (0: never)
    # The optimised step of issue 6 (bench/README.md). All off: the plain fp32 eager reference step.
    fast: bool = False  # no input checks or host syncs inside the step; one sync per step for the losses
    amp: bool = False  # bf16 autocast of both networks (fast only); heads, losses and keypoints stay fp32
    channels_last: bool = False  # NHWC memory format for both networks' convolutions
    pack_scales: bool = False  # run the heatmap trunk once on a canvas of all S scales (fast only)
    fused_adam: bool = False  # Adam's fused kernels for tau and eta (foreach where fused is unavailable)
    compile: bool = False  # torch.compile the heatmap and task pipelines (fast only), eager fallback
    compile_mode: str = "default"  # torch.compile mode; "reduce-overhead" adds CUDA graphs

    def __post_init__(self) -> None:
        for name, allowed in [("warmup_loss", ("patch", "image")), ("warmup_windows", ("random", "heatmap"))]:
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        needs_fast = [name for name in ("amp", "pack_scales", "compile") if getattr(self, name)]
        if needs_fast and not self.fast:
            raise ValueError(f"{', '.join(needs_fast)}: only in the optimised step, set fast=True as well")


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
    return _blur_target(target_heatmap(keypoints, scales, size), sigma)  # (B, S, H, W)


def _blur_target(target: torch.Tensor, sigma: float) -> torch.Tensor:
    """Each point of ``target`` (B, S, H, W) spread into a separable Gaussian of peak 1 (sigma > 0)."""
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


def optimized_settings(device: str | torch.device) -> dict[str, bool]:
    """The :class:`LiftingConfig` options of the optimised step for a device type (bench/README.md).

    CUDA: every option (bf16 autocast, channels-last, fused Adam, ``torch.compile``). CPU: only those
    that measured at least as fast as the reference on the project's 2-core CPU (no autocast: no bf16
    units; no compile: its minutes of compilation outweigh a short run).

    Example:
        >>> optimized_settings("cpu")
        {'fast': True, 'channels_last': True, 'fused_adam': True}
        >>> LiftingConfig(**optimized_settings("cuda")).compile
        True
    """
    if torch.device(device).type == "cuda":
        return {"fast": True, "amp": True, "channels_last": True, "fused_adam": True, "compile": True}
    return {"fast": True, "channels_last": True, "fused_adam": True}


def make_adam(parameters, lr: float, fused: bool = False) -> torch.optim.Adam:
    """Adam; with ``fused`` its fused kernels, or the foreach ones where this build has no fused Adam.

    Example:
        >>> make_adam(torch.nn.Linear(2, 2).parameters(), lr=1e-3, fused=True).defaults["lr"]
        0.001
    """
    parameters = list(parameters)
    if fused:
        try:
            return torch.optim.Adam(parameters, lr=lr, fused=True)
        except (RuntimeError, ValueError):  # no fused Adam for this device or build
            return torch.optim.Adam(parameters, lr=lr, foreach=True)
    return torch.optim.Adam(parameters, lr=lr)


class CompiledFn:
    """``fn`` under ``torch.compile`` (static shapes), or eager ``fn`` when compiling is off or fails.

    A compiler that is missing or fails (no C++ compiler, an unsupported op, an old build) raises on the
    first call; the error is kept in :attr:`error`, a warning is issued and every later call runs eagerly.

    Example:
        >>> double = CompiledFn(lambda x: 2 * x, enabled=False)
        >>> double(torch.ones(2)), double.compiled
        (tensor([2., 2.]), False)
    """

    def __init__(self, fn, enabled: bool = True, mode: str = "default") -> None:
        self.fn, self.error, self._compiled = fn, None, None
        if enabled:
            try:
                self._compiled = torch.compile(fn, mode=mode, dynamic=False)
            except Exception as error:  # noqa: BLE001 - any failure means: run eagerly
                self._fail(error)

    @property
    def compiled(self) -> bool:
        """Whether calls go through the compiled function."""
        return self._compiled is not None

    def _fail(self, error: Exception) -> None:
        import warnings

        self.error, self._compiled = f"{type(error).__name__}: {error}"[:500], None
        warnings.warn(f"torch.compile failed, running eagerly: {self.error}", RuntimeWarning, stacklevel=3)

    def __call__(self, *args):
        if self._compiled is not None:
            try:
                return self._compiled(*args)
            except Exception as error:  # noqa: BLE001 - the eager function is the same computation
                self._fail(error)
        return self.fn(*args)


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
        if self.config.channels_last:
            self.model.to(memory_format=torch.channels_last)
        fused = self.config.fused_adam
        self.optimizers = {
            "task": make_adam(model.task_net.parameters(), self.config.lr_task, fused),
            "heatmap": make_adam(model.heatmap_net.parameters(), self.config.lr_heatmap, fused),
        }
        self.log: TrainingLog | None = None
        self.probe: tuple[torch.Tensor, torch.Tensor | None] | None = None
        self._fast: dict | None = None  # the optimised step's functions, built at its first call

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
        if self.config.fast:
            return self.fast_train_step(images, labels)
        model, config = self.model, self.config
        size = tuple(images.shape[-2:])
        if self.log is not None and config.snapshot_every and self.step % config.snapshot_every == 0:
            self.log.record(self.step, self.inspect(*self.probe))

        # stage 1: tau <- optimise T_tau with L_task at x = E_K(H_eta(I))
        warming_up = self.step < config.warmup_steps
        if warming_up and config.warmup_windows == "random":
            keypoints = self.random_keypoints(images.shape[0], size)
        elif warming_up:  # the heatmap's own picks, eta frozen: stage 1 alone
            with torch.no_grad():
                keypoints = model.extract(images)[1]
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

    # -- the optimised step (issue 6) ------------------------------------------------------------------
    def fast_functions(self) -> dict:
        """The optimised step's pieces, built once: ``extract`` (images -> heatmap, keypoints),
        ``task_loss`` (images, keypoints, labels -> per-image L_task (B,)) and ``patch_loss`` (the warm-up
        loss), each a :class:`CompiledFn` (compiled when ``config.compile``), and the keypoint bounds.
        """
        if self._fast is None:
            model, c = self.model, self.config
            amp_dtype = torch.bfloat16 if c.amp else None

            def extract(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                return model.fast_extract(images, pack_scales=c.pack_scales, amp_dtype=amp_dtype)

            def task_loss(images: torch.Tensor, keypoints: torch.Tensor, labels: torch.Tensor | None):
                out = model.fast_run_task(images, keypoints, amp_dtype=amp_dtype)
                return model.task_loss(images, out, labels, reduction="none")  # (B,)

            def patch_loss(images: torch.Tensor, keypoints: torch.Tensor) -> torch.Tensor:
                out = model.fast_run_task(images, keypoints, amp_dtype=amp_dtype)
                return ((out.task_output - out.patches) ** 2).mean()

            scales = model.scales.tolist()  # python floats: no sync inside the step
            size = model.config.image_size
            self._fast = {
                "extract": CompiledFn(extract, c.compile, c.compile_mode),
                "task_loss": CompiledFn(task_loss, c.compile, c.compile_mode),
                "patch_loss": CompiledFn(patch_loss, c.compile, c.compile_mode),
                "low": torch.tensor([0.0, 0.0, scales[0]], device=self.device),
                "high": torch.tensor([size - 1.0, size - 1.0, scales[-1]], device=self.device),
                "scales": scales,
            }
        return self._fast

    def _trial_compile(self, images: torch.Tensor, labels: torch.Tensor | None) -> None:
        """Compile every variant the step will use (forward and backward, stage 1, 2 and 3) on this batch,
        before any weight changes; a function whose compilation fails runs eagerly from then on.

        ``torch.compile`` compiles a backward lazily, at its first call, where a failure could no longer be
        undone (stage 1 would already have updated tau). So this trial runs them all first, on random
        keypoints drawn from a private generator, and leaves the weights, their gradients and the global
        random state as they were.
        """
        fast, model = self.fast_functions(), self.model
        shape = (images.shape[0], model.config.k, 3)
        generator = torch.Generator(device=images.device).manual_seed(0)
        low, high = fast["low"], self._high(fast, (images.shape[-2], images.shape[-1]))
        keypoints = low + torch.rand(shape, generator=generator, device=images.device) * (high - low)
        frozen = [p for p in model.task_net.parameters() if p.requires_grad]

        def stage2() -> None:
            x = keypoints.clone().requires_grad_(True)
            for parameter in frozen:
                parameter.requires_grad_(False)
            try:
                torch.autograd.grad(fast["task_loss"](images, x, labels).sum(), x)
            finally:
                for parameter in frozen:
                    parameter.requires_grad_(True)

        def no_grad() -> None:
            with torch.no_grad():
                fast["task_loss"](images, keypoints, labels)

        trials = [
            ("extract", lambda: (fast["extract"](images)[0] ** 2).flatten(1).mean(1).mean().backward()),
            ("task_loss", lambda: fast["task_loss"](images, keypoints, labels).mean().backward()),
            ("task_loss", stage2),
            ("task_loss", no_grad),
        ]
        if model.config.task == "reconstruct" and self.config.warmup_steps > self.step:
            trials.append(("patch_loss", lambda: fast["patch_loss"](images, keypoints).backward()))
        for name, run in trials:
            if not fast[name].compiled:
                continue
            if self.config.compile_mode == "reduce-overhead":
                torch.compiler.cudagraph_mark_step_begin()
            try:
                run()
            except Exception as error:  # noqa: BLE001 - the eager function is the same computation
                fast[name]._fail(error)
        for parameter in model.parameters():
            parameter.grad = None
        fast["tried"] = True

    def _high(self, fast: dict, size: tuple[int, int]) -> torch.Tensor:
        """Upper keypoint bounds (x, y, s) for images of ``size`` (H, W): cached for the model's size."""
        if size == (self.model.config.image_size,) * 2:
            return fast["high"]
        return torch.tensor([size[1] - 1.0, size[0] - 1.0, fast["scales"][-1]], device=self.device)

    def fast_refine(
        self, images: torch.Tensor, keypoints: torch.Tensor, labels: torch.Tensor | None
    ) -> torch.Tensor:
        """Stage 2 as :meth:`refine` (same update rules), through the optimised task loss: (B, K, 3)."""
        c, fast = self.config, self.fast_functions()
        low, high = fast["low"], self._high(fast, (images.shape[-2], images.shape[-1]))
        x = keypoints.detach().clone().requires_grad_(True)
        adam = torch.optim.Adam([x], lr=c.refine_step) if c.refine_optimizer == "adam" else None
        frozen = [p for p in self.model.task_net.parameters() if p.requires_grad]
        for parameter in frozen:  # the task network is frozen: its backward computes no weight gradients
            parameter.requires_grad_(False)
        try:
            for _ in range(c.refine_iterations):
                (grad,) = torch.autograd.grad(fast["task_loss"](images, x, labels).sum(), x)
                with torch.no_grad():
                    if adam is not None:
                        x.grad = grad
                        adam.step()
                    else:
                        x.sub_(scaled_step(grad, c.refine_step))
                    x.copy_(torch.minimum(torch.maximum(x, low), high))  # clamp_keypoints
        finally:
            for parameter in frozen:
                parameter.requires_grad_(True)
        return x.detach()

    def fast_train_step(self, images: torch.Tensor, labels: torch.Tensor | None) -> dict[str, float]:
        """:meth:`train_step` (Algorithm 1, the same three stages and losses) with the options of issue 6.

        No input checks and no host-device sync inside the step: the losses are read back in one transfer
        at the end. ``amp`` runs the networks in bf16 (losses, keypoints and heatmap in fp32),
        ``pack_scales`` the heatmap trunk on one canvas, ``compile`` the heatmap and task pipelines
        through ``torch.compile``. In fp32 it computes what :meth:`train_step` computes, up to rounding.

        Example:
            >>> from mistlib.model import MISTConfig
            >>> tiny = MISTConfig(heatmap_channels=4, heatmap_blocks=1, task_width=2)
            >>> trainer = LiftingTrainer(MIST(tiny), "reconstruct", LiftingConfig(device="cpu", fast=True))
            >>> sorted(trainer.fast_train_step(torch.rand(2, 1, 80, 80), None))
            ['lift', 'moved_px', 'task']
        """
        model, config = self.model, self.config
        fast = self.fast_functions()
        size = (images.shape[-2], images.shape[-1])
        if config.pack_scales:  # build the canvas index eagerly, outside any compiled region
            model.heatmap_net._packing(model.heatmap_net.scale_sizes(*size), images.device)
        if config.compile and not fast.get("tried"):
            self._trial_compile(images, labels)
        if config.compile and config.compile_mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()
        if self.log is not None and config.snapshot_every and self.step % config.snapshot_every == 0:
            self.log.record(self.step, self.inspect(*self.probe))

        warming_up = self.step < config.warmup_steps
        if warming_up and config.warmup_windows == "heatmap":
            with torch.no_grad():
                keypoints = fast["extract"](images)[1]
        elif warming_up:  # as random_keypoints, with the bounds kept on the device
            generator = step_generator(config.seed, self.step, images.device)
            shape = (images.shape[0], model.config.k, 3)
            uniform = torch.rand(shape, generator=generator, device=images.device)
            low, high = fast["low"], self._high(fast, size)
            keypoints = low + uniform * (high - low)  # (B, K, 3)
        else:
            heatmap, keypoints = fast["extract"](images)  # (B, S, H, W) kept for stage 3, (B, K, 3)
            keypoints = keypoints.detach()
        task_opt = self.optimizers["task"]
        task_opt.zero_grad(set_to_none=True)
        if warming_up and config.warmup_loss == "patch" and model.config.task == "reconstruct":
            task_loss = fast["patch_loss"](images, keypoints)
        else:
            task_loss = fast["task_loss"](images, keypoints, labels).mean()
        task_loss.backward()
        task_opt.step()
        if warming_up:
            return {"warmup": task_loss.item()}

        refined = self.fast_refine(images, keypoints, labels)  # stage 2

        with torch.no_grad():  # stage 3
            scales = model.scales
            target = _blur_target(_target_heatmap(refined, scales, size), config.target_sigma)
            weights = torch.ones(images.shape[0], device=images.device)
            if config.lift_weighting > 0:
                weights = torch.exp(-config.lift_weighting * fast["task_loss"](images, refined, labels))
        heat_opt = self.optimizers["heatmap"]
        heat_opt.zero_grad(set_to_none=True)
        lift_loss = (weights * ((heatmap - target) ** 2).flatten(1).mean(1)).mean()  # eq. (14)
        lift_loss.backward()
        heat_opt.step()
        moved = (refined[..., :2] - keypoints[..., :2]).norm(dim=-1).mean()
        task, lift, moved = torch.stack([task_loss.detach(), lift_loss.detach(), moved]).tolist()  # 1 sync
        return {"task": task, "lift": lift, "moved_px": moved}

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
