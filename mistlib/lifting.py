"""Training MIST by lifting: Algorithm 1 of §6, eq. (8)–(14).

The top-K extractor ``E_K`` has no useful gradient, so the keypoints it selects are treated as free
(slack) variables ``x``. Each batch runs three stages:

1. ``x = E_K(H_eta(I))`` without gradient; one optimiser step on the task network ``tau`` with ``L_task``.
2. ``tau`` frozen; ``x`` (positions and scales) refined for ``N`` iterations on ``L_task`` (eq. 13).
3. ``h_bar = E_K^{-1}(x*)``; one optimiser step on the heatmap network ``eta`` with
   ``L_lift = ||h_bar - H_eta(I)||^2`` (eq. 14).

Stage 2 (:mod:`mistlib.refine`) takes, by default, gradient steps scaled by the batch's RMS gradient
(``refine_optimizer="scaled"``): a typical keypoint moves ``refine_step`` pixels per iteration and one
without signal stays put; ``"adam"`` moves every coordinate by the full step whatever its gradient;
``"search"`` tries small moves and keeps the one that lowers ``L_task``. The authors' code uses plain SGD
on normalised coordinates with 2 iterations.
"""

from __future__ import annotations

import copy
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from mistlib.checks import check_images, checks
from mistlib.data.augment import dihedral, elastic_deform
from mistlib.extract import lift_target, topk_extract
from mistlib.model import MIST
from mistlib.refine import REFINE_RULES, refine_keypoints, residual_jumps
from mistlib.training import TrainConfig, Trainer, cosine_decay, make_adam, resolve_device, step_generator
from mistlib.traininglog import TrainingLog


@dataclass
class LiftingConfig(TrainConfig):
    """Hyper-parameters of Algorithm 1 (defaults: MNIST hard; research/README.md says how they were chosen).

    Example:
        >>> config = LiftingConfig(steps=100, warmup_steps=20, refine_iterations=2)
        >>> config.refine_optimizer, config.warmup_loss, config.batch_size
        ('scaled', 'patch', 32)
        >>> LiftingConfig(refine_optimizer="sgd")
        Traceback (most recent call last):
        ...
        ValueError: refine_optimizer must be one of ('scaled', 'adam', 'search'), got 'sgd'
    """

    lr_task: float = 1e-3  # Adam learning rate of the task network tau (stage 1)
    lr_heatmap: float = 1e-4  # Adam learning rate of the heatmap network eta (stage 3; authors: 1e-4)
    refine_iterations: int = 4  # N, keypoint refinement iterations per batch (stage 2; authors: 2)
    refine_step: float = 0.5  # stage-2 step size, in pixels per iteration (see refine_optimizer)
    refine_optimizer: str = (
        "scaled"  # "scaled": gradient steps scaled by the batch RMS; "adam": sign-like steps
    )
    refine_jumps: int = 0  # J: "search" may also move a keypoint to one of E_K's next J picks (refine.py)
    jump_residual: int = 0  # and to the M peaks of the ink its reconstruction misses (refine.residual_jumps)
    warmup_steps: int = 0  # first steps train only tau, on K random windows per image
    warmup_loss: str = "patch"  # warm-up loss: "patch" (each patch vs its own input) or "image" (eq. 6)
    warmup_windows: str = "random"  # warm-up windows: "random", or "heatmap": E_K of the (frozen) heatmap net
    polish_steps: int = 0  # last steps train only tau, on E_K of the (frozen) heatmap net: stage 1 alone
    task_jitter: float = 0.0  # j > 0: warm-up and polish train tau on windows moved ~ j s px, scaled ~ exp(j)
    jitter_whole_pixel: bool = False  # task_jitter's moves rounded to whole pixels, the side kept
    jitter_warmup: bool = True  # task_jitter in the warm-up too (False: the polish alone)
    deform: float = 0.0  # a > 0: each training batch bent by a smooth random field of std a px (augment)
    dihedral: str = "off"  # "all" | "polish": every step's / the polish's images turned or flipped (augment)
    lift_weighting: float = 0.0  # w: each image's L_lift is weighted by exp(-w * L_task) (authors: 5)
    target_sigma: float = 0.0  # 0: single-point targets (§6); > 0: Gaussian blobs of this sigma (px)
    target_nms: bool = False  # leave out of h_bar the keypoints that E_K's suppression window would drop
    lr_schedule: str = "constant"  # "cosine": both learning rates decay to 0 over the lifting steps
    pick_ema: float = 0.0  # > 0: stage 1 picks x from a moving average of eta with this decay (a target net)
    snapshot_every: int = 0  # record the probe images into the training log every n steps (0: never)
    # Speed switches on the one step (all off: fp32 eager; the cpu recipe turns channels_last on)
    amp: bool = False  # bf16 autocast of both networks; heatmap, keypoints and losses stay float32
    channels_last: bool = False  # NHWC memory format for both networks' convolutions
    fused_adam: bool = False  # Adam's fused kernels for tau and eta (foreach where fused is unavailable)
    compile: bool = False  # torch.compile both networks in place (minutes of compilation: long runs only)

    def __post_init__(self) -> None:
        choices = [
            ("warmup_loss", ("patch", "image")),
            ("warmup_windows", ("random", "heatmap")),
            ("refine_optimizer", REFINE_RULES),
            ("lr_schedule", ("constant", "cosine")),
            ("dihedral", ("off", "all", "polish")),
        ]
        for name, allowed in choices:
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.polish_steps < 0 or self.polish_steps > max(0, self.steps - self.warmup_steps):
            raise ValueError(
                f"polish_steps must be in [0, steps - warmup_steps = {self.steps - self.warmup_steps}], "
                f"got {self.polish_steps}"
            )
        if not 0 <= self.task_jitter < 1:
            raise ValueError(f"task_jitter must be in [0, 1), got {self.task_jitter!r}")
        if self.task_jitter == 0 and (self.jitter_whole_pixel or not self.jitter_warmup):
            raise ValueError("jitter_whole_pixel and jitter_warmup change task_jitter: set task_jitter > 0")
        if not 0 <= self.deform <= 8:
            raise ValueError(f"deform must be in [0, 8] pixels, got {self.deform!r}")
        for name in ("refine_jumps", "jump_residual"):
            value = getattr(self, name)
            if value < 0 or (value and self.refine_optimizer != "search"):
                raise ValueError(
                    f"{name} must be >= 0 and needs refine_optimizer='search', got {value} "
                    f"with {self.refine_optimizer!r}"
                )


def split_picks(picks: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """E_K's first ``k`` picks (B, k, 3) and the runner-ups after them (B, J, 3), or None when J = 0.

    Example:
        >>> keypoints, alternatives = split_picks(torch.zeros(2, 11, 3), 9)
        >>> keypoints.shape, alternatives.shape, split_picks(torch.zeros(2, 9, 3), 9)[1]
        (torch.Size([2, 9, 3]), torch.Size([2, 2, 3]), None)
    """
    return picks[:, :k], (picks[:, k:] if picks.shape[1] > k else None)


def task_update(
    model: MIST,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    keypoints: torch.Tensor,
    labels: torch.Tensor | None,
    per_patch: bool = False,
) -> torch.Tensor:
    """Stage 1 of Algorithm 1 (line 3): one optimiser step on the task network ``tau`` with ``L_task``.

    Args:
        images: (B, C, H, W); keypoints: (B, K, 3) fixed windows; labels: (B, L) or None.
        per_patch: reconstruction only: compare each decoded patch with its own input patch instead of
            eq. (6) (the warm-up on random windows, which overlap: eq. (6) would count their ink twice).

    Returns: the loss of the step, a detached scalar.

    Example:
        >>> from mistlib.model import MISTConfig
        >>> model = MIST(MISTConfig(heatmap_channels=4, heatmap_blocks=1, task_width=2))
        >>> optimizer = torch.optim.Adam(model.task_net.parameters())
        >>> keypoints = torch.tensor([[[40.0, 40.0, 20.0]] * 9])
        >>> task_update(model, optimizer, torch.rand(1, 1, 80, 80), keypoints, None).shape
        torch.Size([])
    """
    optimizer.zero_grad(set_to_none=True)
    out = model.run_task(images, keypoints)
    loss = model.task.patch_loss(out) if per_patch else None
    if loss is None:
        loss = model.task_loss(images, out, labels)
    loss.backward()
    optimizer.step()
    return loss.detach()


def lift_terms(
    model: MIST,
    images: torch.Tensor,
    refined: torch.Tensor,
    labels: torch.Tensor | None,
    sigma: float,
    weighting: float,
    nms: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """What eq. (14) compares the heatmap with, and how much each image counts: no gradient.

    Returns: ``h_bar = E_K^{-1}(x*)`` (B, S, H, W) and the per-image weights (B,): ``exp(-w L_task(x*))``
    with ``w = weighting`` (the authors' weighting: a badly explained image teaches the heatmap less),
    divided by its batch mean, or ones for ``weighting = 0``. ``nms > 1`` leaves out of ``h_bar`` the
    keypoints inside the window of a stronger one (:func:`~mistlib.extract.lift_target`).

    Example:
        >>> from mistlib.model import MISTConfig
        >>> model = MIST(MISTConfig(heatmap_channels=4, heatmap_blocks=1, task_width=2))
        >>> refined = torch.tensor([[[40.0, 40.0, 20.0]] * 9] * 2)
        >>> target, weights = lift_terms(model, torch.rand(2, 1, 80, 80), refined, None, 0.0, 5.0)
        >>> target.shape, float(target[0].sum()), round(float(weights.mean()), 4)  # K units of mass
        (torch.Size([2, 3, 80, 80]), 9.0, 1.0)
    """
    with torch.no_grad():
        target = lift_target(refined, model.scales, tuple(images.shape[-2:]), sigma, nms)  # (B, S, H, W)
        weights = torch.ones(images.shape[0], device=images.device)
        if weighting > 0:
            refined_loss = model.task_loss(images, model.run_task(images, refined), labels, "none")
            # the authors' exp(-w L_task) per image, scaled to a batch mean of 1: only the ranking within the
            # batch counts, so a cross-entropy of ~2 (classification) does not shrink every weight to ~1e-5
            weights = torch.softmax(-weighting * refined_loss, dim=0) * refined_loss.shape[0]
    return target, weights


def heatmap_regression(
    optimizer: torch.optim.Optimizer, heatmap: torch.Tensor, target: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Stage 3 of Algorithm 1 (lines 7-8): one optimiser step on ``eta`` with ``L_lift`` of eq. (14).

    Args: heatmap (B, S, H, W) ``H_eta(I)`` with its graph; target (B, S, H, W) ``h_bar``; weights (B,).

    Returns: the weighted ``L_lift`` of the step, a detached scalar.

    Example:
        >>> conv = torch.nn.Conv2d(1, 3, 1)
        >>> optimizer = torch.optim.SGD(conv.parameters(), lr=0.1)
        >>> heatmap, target = conv(torch.rand(2, 1, 8, 8)), torch.zeros(2, 3, 8, 8)
        >>> float(heatmap_regression(optimizer, heatmap, target, torch.ones(2))) > 0
        True
    """
    optimizer.zero_grad(set_to_none=True)
    lift = (weights * ((heatmap - target) ** 2).flatten(1).mean(1)).mean()  # eq. (14), a weighted mean
    lift.backward()
    optimizer.step()
    return lift.detach()


def random_windows(
    images: torch.Tensor, k: int, scales: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """K uniformly random windows per image (the warm-up's): x, y anywhere in the image, s in the scale range.

    Args: images (B, C, H, W); scales (S,). Returns: (B, K, 3).

    Example:
        >>> windows = random_windows(torch.zeros(2, 1, 80, 80), 9, torch.tensor([16.0, 25.0]))
        >>> windows.shape, bool((windows[..., 2] >= 16).all() and (windows[..., 2] <= 25).all())
        (torch.Size([2, 9, 3]), True)
    """
    batch, (height, width), device = images.shape[0], images.shape[-2:], images.device
    uniform = torch.rand(batch, k, 3, generator=generator, device=device)
    low = torch.tensor([0.0, 0.0, float(scales[0])], device=device)
    high = torch.tensor([width - 1.0, height - 1.0, float(scales[-1])], device=device)
    return low + uniform * (high - low)  # (B, K, 3)


def jitter_windows(
    keypoints: torch.Tensor, amount: float, generator: torch.Generator, whole_pixel: bool = False
) -> torch.Tensor:
    """Windows moved and resized at random: the data augmentation of ``task_jitter`` (warm-up and polish).

    Each window (x, y, s) moves by ``amount * s`` pixels times a standard normal along x and along y, and
    its side is multiplied by ``exp(amount * n)``, n standard normal: the same relative change at every
    scale. The task network then learns from windows a little off the picks, instead of from exactly the
    same window of each training digit every time it is drawn (research/README.md §25: the compact
    classifier otherwise memorises the 4,000 training digits). With ``whole_pixel`` the moves are rounded
    to whole pixels and the side is kept, so a window on a pixel centre (as E_K's picks are) stays on
    one, and the sampler's blur stays the picks' own (§26).

    Args: keypoints (B, K, 3) as (x, y, s); amount: the relative standard deviation j >= 0.

    Returns: (B, K, 3), the windows themselves when ``amount`` is 0.

    Example:
        >>> windows = torch.tensor([[[40.0, 40.0, 20.0]] * 2000])
        >>> moved = jitter_windows(windows, 0.1, torch.Generator().manual_seed(0))
        >>> round(float(moved[..., 0].std()), 1), round(float(moved[..., 2].log().std()), 2)  # 0.1 s; 0.1
        (2.0, 0.1)
        >>> steps = jitter_windows(windows, 0.1, torch.Generator().manual_seed(0), whole_pixel=True)
        >>> bool((steps[..., :2] == steps[..., :2].round()).all()), bool((steps[..., 2] == 20).all())
        (True, True)
    """
    if amount == 0:
        return keypoints
    noise = torch.randn(keypoints.shape, generator=generator, device=keypoints.device) * amount  # (B, K, 3)
    sides = keypoints[..., 2:]  # (B, K, 1)
    moves = noise[..., :2] * sides  # (B, K, 2) in pixels
    if whole_pixel:
        return torch.cat([keypoints[..., :2] + moves.round(), sides], -1)
    return torch.cat([keypoints[..., :2] + moves, sides * noise[..., 2:].exp()], -1)


@torch.no_grad()
def moving_average(average: nn.Module, live: nn.Module, decay: float) -> None:
    """``average <- decay * average + (1 - decay) * live``, parameter by parameter (the picker of eta).

    Example:
        >>> average, live = nn.Linear(1, 1, bias=False), nn.Linear(1, 1, bias=False)
        >>> _ = nn.init.zeros_(average.weight), nn.init.ones_(live.weight)
        >>> moving_average(average, live, 0.9); average.weight.item()
        0.10000000149011612
    """
    for mine, theirs in zip(average.parameters(), live.parameters(), strict=True):
        mine.lerp_(theirs, 1 - decay)


class LiftingTrainer(Trainer):
    """Algorithm 1 for a :class:`~mistlib.model.MIST` model: :meth:`train_step` runs its three stages,
    :func:`task_update`, :func:`refine_keypoints` and :func:`heatmap_regression`, on each batch.

    Speed options are switches on this one step: ``channels_last`` and ``fused_adam`` (measured on the
    CPU), ``amp`` (bf16 autocast of the networks; heatmap, keypoints and losses stay float32) and
    ``compile`` (``torch.compile`` of both networks, in place). The tensor checks of the library run once
    per batch, at :meth:`train_step`'s door, and are off inside it (:func:`mistlib.checks.checks`).

    Example:
        >>> trainer = LiftingTrainer(MIST(), "reconstruct", LiftingConfig(steps=100, device="cpu"))
        >>> from mistlib.data import MNISTHard
        >>> history = trainer.fit(MNISTHard("train", size=512).images)  # doctest: +SKIP
    """

    kind = "lifting"

    def __init__(self, model: MIST, task: str, config: LiftingConfig | None = None) -> None:
        super().__init__()
        if task != model.task.name:
            raise ValueError(f"task {task!r} does not match the model's task {model.task.name!r}")
        self.config = config or LiftingConfig()
        self.model = model.to(resolve_device(self.config.device))
        if self.config.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if self.config.compile:  # in place: parameter names, and so checkpoints, stay as they are
            self.model.heatmap_net.compile(dynamic=False)
            self.model.task_net.compile(dynamic=False)
        fused = self.config.fused_adam
        self.optimizers = {
            "task": make_adam(model.task_net.parameters(), self.config.lr_task, fused),
            "heatmap": make_adam(model.heatmap_net.parameters(), self.config.lr_heatmap, fused),
        }
        self.picker = None  # the moving-average copy of eta that picks the keypoints (pick_ema > 0)
        if self.config.pick_ema > 0:
            self.picker = copy.deepcopy(self.model.heatmap_net).requires_grad_(False)
        # the suppression window h_bar is thinned with (config.target_nms), else 1: every refined keypoint
        self.target_nms = self.model.config.nms if self.config.target_nms else 1
        self.log: TrainingLog | None = None
        self.probe: tuple[torch.Tensor, torch.Tensor | None] | None = None

    def autocast(self):
        """The bf16 autocast context of ``config.amp`` on the model's device, else a no-op context."""
        if not self.config.amp:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def refine(
        self,
        images: torch.Tensor,
        keypoints: torch.Tensor,
        labels: torch.Tensor | None,
        alternatives: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Stage 2 with this trainer's settings: (B, K, 3) -> refined (B, K, 3); ``alternatives``
        (B, J, 3) are the runner-up picks a keypoint may jump to (``refine_jumps``)."""
        c = self.config
        if c.jump_residual:
            extra = residual_jumps(self.model, images, keypoints, c.jump_residual)  # (B, M, 3)
            alternatives = extra if alternatives is None else torch.cat([alternatives, extra], 1)
        return refine_keypoints(
            self.model,
            images,
            keypoints,
            labels,
            c.refine_iterations,
            c.refine_step,
            c.refine_optimizer,
            alternatives,
        )

    def inspect(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Run the three stages on a batch WITHOUT updating any weight; return every intermediate.

        Returns a dict of ``image`` (B, C, H, W), ``heatmap`` (B, S, H, W), ``keypoints`` (B, K, 3) before
        and ``refined`` (B, K, 3) after stage 2, ``target`` (B, S, H, W) = h_bar, ``output`` (the task
        output at the refined keypoints: reconstruction (B, C, H, W) or logits (B, K, classes)) and the
        per-image losses ``task_before``, ``task_after`` and ``lift`` (B,).
        """
        model, c = self.model, self.config
        with torch.no_grad():
            heatmap, picks = model.extract(images, model.config.k + c.refine_jumps)
            keypoints, alternatives = split_picks(picks, model.config.k)
            before = model.task_loss(images, model.run_task(images, keypoints), labels, "none")
        refined = self.refine(images, keypoints, labels, alternatives)
        target, _ = lift_terms(model, images, refined, labels, c.target_sigma, 0.0, self.target_nms)
        with torch.no_grad():
            out = model.run_task(images, refined)
            after = model.task_loss(images, out, labels, "none")
            lift = ((heatmap - target) ** 2).flatten(1).mean(1)  # (B,), eq. (14)
        output = model.task.prediction(out)
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

    def pick(
        self, images: torch.Tensor, warming_up: bool, polishing: bool = False
    ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
        """This step's windows (B, K, 3); while lifting, the heatmap (B, S, H, W) whose gradient stage 3
        follows, and with ``refine_jumps`` = J the next J picks (B, J, 3) (None where absent)."""
        model, config = self.model, self.config
        if warming_up and config.warmup_windows == "random":
            generator = step_generator(config.seed, self.step, self.device)
            return None, random_windows(images, model.config.k, model.scales, generator), None
        if warming_up or polishing:  # the heatmap's own picks, eta frozen: stage 1 alone
            with torch.no_grad():
                return None, model.extract(images)[1], None
        count = model.config.k + config.refine_jumps
        if self.picker is not None:  # picks from the moving average, regression on eta itself
            with torch.no_grad():
                picks = topk_extract(self.picker(images), count, model.scales, model.config.nms)
            return model.heatmap_net(images), *split_picks(picks, model.config.k)
        # eta does not change before stage 3: this forward pass (kept for its gradient) serves both
        heatmap, picks = model.extract(images, count)  # (B, S, H, W), (B, K + J, 3)
        return heatmap, *split_picks(picks.detach(), model.config.k)

    def augment(self, images: torch.Tensor, labels: torch.Tensor | None, polishing: bool) -> torch.Tensor:
        """This step's training images, bent (``deform``) and turned or flipped (``dihedral``) as configured.

        New shapes of the training digits at every step, drawn from the step's own generators; each scene
        keeps its count and labels (a symmetry moves its instances with it). Returns (B, C, H, W), the
        ``images`` themselves when both are off.
        """
        config = self.config
        if config.deform > 0:
            images = elastic_deform(images, config.deform, step_generator(config.seed + 2, self.step))
        if config.dihedral == "all" or (config.dihedral == "polish" and polishing):
            if labels is not None:
                raise ValueError(f"dihedral={config.dihedral!r} mirrors digits into other classes' shapes")
            images = dihedral(images, step_generator(config.seed + 3, self.step))[0]
        return images

    def train_step(self, images: torch.Tensor, labels: torch.Tensor | None) -> dict[str, float]:
        """One batch of Algorithm 1 (stage 1 alone during the warm-up and the polish): the losses as floats.

        With ``lr_schedule="cosine"`` eta's rate decays to 0 over the lifting steps, and tau's over the
        lifting and polishing steps together (the same schedule when ``polish_steps`` is 0).
        """
        check_images("images", images, self.model.config.in_channels)
        model, config = self.model, self.config
        if self.log is not None and config.snapshot_every and self.step % config.snapshot_every == 0:
            self.log.record(self.step, self.inspect(*self.probe))
        warming_up = self.step < config.warmup_steps
        polishing = config.polish_steps > 0 and self.step >= config.steps - config.polish_steps
        images = self.augment(images, labels, polishing)
        if config.lr_schedule == "cosine" and not warming_up:
            done, after_warmup = self.step - config.warmup_steps, config.steps - config.warmup_steps
            for name, rate, total in [
                ("task", config.lr_task, after_warmup),
                ("heatmap", config.lr_heatmap, after_warmup - config.polish_steps),
            ]:
                cosine_decay({name: self.optimizers[name]}, {name: rate}, done, total)
        with checks(False), self.autocast():
            heatmap, keypoints, alternatives = self.pick(images, warming_up, polishing)
            per_patch = warming_up and config.warmup_loss == "patch"
            # stage 1: tau <- optimise T_tau with L_task at x = E_K(H_eta(I)); when it runs alone (warm-up,
            # polish) at windows moved at random by task_jitter: lifting's stage 1 and 2 see the picks
            windows = keypoints
            if config.task_jitter > 0 and ((warming_up and config.jitter_warmup) or polishing):
                generator = step_generator(config.seed + 1, self.step, self.device)  # not the warm-up's
                windows = jitter_windows(keypoints, config.task_jitter, generator, config.jitter_whole_pixel)
            task = task_update(model, self.optimizers["task"], images, windows, labels, per_patch)
            if warming_up:
                return {"warmup": task.item()}
            if polishing:
                return {"polish": task.item()}
            # stage 2: x* <- optimise {x_k} with L_task, tau frozen
            refined = self.refine(images, keypoints, labels, alternatives)
            # stage 3: h_bar = E_K^{-1}(x*); eta <- optimise H_eta with L_lift = ||h_bar - H_eta(I)||^2
            sigma, weighting = config.target_sigma, config.lift_weighting
            target, weights = lift_terms(model, images, refined, labels, sigma, weighting, self.target_nms)
            lift = heatmap_regression(self.optimizers["heatmap"], heatmap, target, weights)
            if self.picker is not None:
                moving_average(self.picker, model.heatmap_net, config.pick_ema)
            moved = (refined[..., :2] - keypoints[..., :2]).norm(dim=-1).mean()
        task, lift, moved = torch.stack([task, lift, moved.detach()]).tolist()  # one read from the device
        return {"task": task, "lift": lift, "moved_px": moved}

    def state_dict(self) -> dict:
        """The base trainer's state, plus the moving-average picker when there is one."""
        state = super().state_dict()
        if self.picker is not None:
            state["picker"] = self.picker.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if self.picker is not None:
            self.picker.load_state_dict(state["picker"])

    def record_to(self, log: TrainingLog, images: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        """Record :meth:`inspect` of these probe images into ``log`` every ``snapshot_every`` steps."""
        self.log = log
        self.probe = (images.to(self.device), None if labels is None else labels.to(self.device))
