"""The training loop every method shares: deterministic batches, progress, atomic checkpoints, resume.

A concrete trainer (Algorithm 1 in :mod:`mistlib.lifting`, plain back-propagation in
:mod:`mistlib.baselines`) only says what one step does, in :meth:`Trainer.train_step`. Everything random in
step ``t`` is drawn from a generator seeded by ``(seed, t)``, so a run killed after step ``t`` and resumed
from its checkpoint reaches the same weights as a run that was never interrupted.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from mistlib.checkpoint import load_checkpoint, save_checkpoint


@dataclass
class TrainConfig:
    """What every trainer shares. Method-specific configs subclass it.

    Example:
        >>> config = TrainConfig(steps=10, device="cpu")
        >>> config.steps, config.batch_size, config.seed
        (10, 32, 0)
    """

    steps: int = 2000  # optimisation steps (batches)
    batch_size: int = 32  # images per step (the authors' code: 32)
    seed: int = 0  # seeds the batch order and every random draw of a step
    device: str = "auto"  # "auto" (CUDA when present, else CPU), "cpu" or "cuda"
    checkpoint_every: int = 500  # steps between checkpoints when fit() is given a path (0: only at the end)
    checkpoint_minutes: float = 0.0  # also save when this many minutes passed since the last save (0: never)
    log_every: int = 50  # steps between entries of the loss history

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "log_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.checkpoint_every, bool) or not isinstance(self.checkpoint_every, int):
            raise ValueError(f"checkpoint_every must be an integer, got {self.checkpoint_every!r}")
        if self.checkpoint_every < 0 or not self.checkpoint_minutes >= 0:
            raise ValueError("checkpoint_every and checkpoint_minutes must be >= 0")


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) stopped :meth:`Trainer.fit` between two steps, after saving its checkpoint.

    ``step`` is the number of steps done; ``checkpoint`` the resumable file written (None without one).

    Example:
        >>> error = TrainingInterrupted(12, "run.pt.resume")
        >>> str(error), isinstance(error, KeyboardInterrupt)
        ('interrupted after step 12; saved run.pt.resume', True)
    """

    def __init__(self, step: int, checkpoint: str | Path | None) -> None:
        saved = f"; saved {checkpoint}" if checkpoint is not None else " (no checkpoint path: nothing saved)"
        super().__init__(f"interrupted after step {step}{saved}")
        self.step, self.checkpoint = step, checkpoint


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else the CPU; anything else is passed to ``torch.device``.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
        >>> resolve_device("auto").type in ("cuda", "cpu")
        True
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def step_generator(seed: int, step: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator owned by one step: the same ``(seed, step)`` always draws the same numbers.

    Example:
        >>> first = torch.rand(3, generator=step_generator(seed=0, step=5))  # (3,)
        >>> torch.equal(first, torch.rand(3, generator=step_generator(seed=0, step=5)))
        True
    """
    generator = torch.Generator(device=device)
    generator.manual_seed((seed * 1_000_003 + step) % (2**63 - 1))
    return generator


def batch_indices(num_items: int, batch_size: int, seed: int, step: int) -> torch.Tensor:
    """Indices of the batch of step ``step``: epochs are seeded permutations, batches never straddle two.

    Returns: (batch_size,) int64 on the CPU. ``batch_size`` is capped at ``num_items``.

    Example:
        >>> batch_indices(10, 4, seed=0, step=0).shape
        torch.Size([4])
        >>> epoch = torch.cat([batch_indices(6, 3, seed=0, step=t) for t in (0, 1)])  # one epoch: 2 batches
        >>> sorted(epoch.tolist())
        [0, 1, 2, 3, 4, 5]
    """
    batch_size = min(batch_size, num_items)
    per_epoch = num_items // batch_size
    epoch, position = divmod(step, per_epoch)
    order = torch.randperm(num_items, generator=step_generator(seed, -1 - epoch))
    return order[position * batch_size : (position + 1) * batch_size]


class Trainer:
    """Base class: a subclass sets model, config and optimizers, and implements train_step.

    :meth:`fit` takes the whole training set, images (N, C, H, W) and labels (N, L) or None, and hands
    :meth:`train_step` one batch (B, C, H, W) per step. :meth:`save` also stores ``asdict(model.config)``,
    so models that are saved need a dataclass ``config``.

    Example:
        >>> class MeanTrainer(Trainer):  # learns one weight: the mean pixel value
        ...     kind = "mean"
        ...     def __init__(self, config):
        ...         super().__init__()
        ...         self.model, self.config = nn.Linear(1, 1, bias=False), config
        ...         self.optimizers = {"sgd": torch.optim.SGD(self.model.parameters(), lr=0.5)}
        ...     def train_step(self, images, labels):
        ...         optimiser = self.optimizers["sgd"]
        ...         optimiser.zero_grad()
        ...         loss = (self.model.weight.sum() - images.mean()).square()
        ...         loss.backward()
        ...         optimiser.step()
        ...         return {"loss": loss.item()}
        >>> trainer = MeanTrainer(TrainConfig(steps=20, batch_size=4, log_every=10, device="cpu"))
        >>> history = trainer.fit(torch.full((8, 1, 2, 2), 0.5))
        >>> [entry["step"] for entry in history], round(trainer.model.weight.item(), 3)
        ([10, 20], 0.5)
    """

    kind = "trainer"
    model: nn.Module
    config: TrainConfig
    optimizers: dict[str, torch.optim.Optimizer]

    def __init__(self) -> None:
        self.step = 0  # steps done so far
        self.history: list[dict[str, float]] = []  # mean losses, one entry every log_every steps
        self._window: dict[str, float] = {}  # loss sums since the last history entry
        self._window_steps = 0
        self.elapsed_s = 0.0  # seconds spent in fit() over every segment of the run (kept by resume)
        self.meta: dict = {}  # stored with every checkpoint save() writes (e.g. the experiment it trains)

    # -- what a subclass provides --------------------------------------------------------------------
    def train_step(self, images: torch.Tensor, labels: torch.Tensor | None) -> dict[str, float]:
        """One optimisation step on a batch; returns the losses to log (floats)."""
        raise NotImplementedError

    # -- state ------------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def state_dict(self) -> dict:
        """Everything needed to resume: weights, optimiser states, step and loss history."""
        return {
            "model": self.model.state_dict(),
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
            "step": self.step,
            "history": [dict(entry) for entry in self.history],
            "window": dict(self._window),
            "window_steps": self._window_steps,
            "elapsed_s": self.elapsed_s,
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        self.step = int(state["step"])
        self.history = [dict(entry) for entry in state["history"]]
        self._window = dict(state["window"])
        self._window_steps = int(state["window_steps"])
        self.elapsed_s = float(state.get("elapsed_s", 0.0))

    def save(self, path: str | Path, meta: dict | None = None) -> None:
        """Write a resumable checkpoint atomically (temp file + rename)."""
        save_checkpoint(
            path,
            state=self.state_dict(),
            config={"model": asdict(self.model.config), "train": asdict(self.config)},
            kind=self.kind,
            meta={**self.meta, **(meta or {})},
        )

    def resume(self, path: str | Path) -> dict:
        """Continue from a checkpoint that :meth:`save` of this kind of trainer wrote; returns its meta."""
        checkpoint = load_checkpoint(path, kind=self.kind, map_location=self.device)
        self.load_state_dict(checkpoint["state"])
        return checkpoint.get("meta") or {}

    # -- the loop ---------------------------------------------------------------------------------------
    def fit(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | None = None,
        checkpoint: str | Path | None = None,
        steps: int | None = None,
    ) -> list[dict[str, float]]:
        """Train until ``steps`` (default ``config.steps``) steps are done in total.

        Args:
            images: (N, C, H, W) the training set, moved to the model's device once.
            labels: (N, L) int64 padded with -1 (classification), or None.
            checkpoint: where to save every ``checkpoint_every`` steps (or ``checkpoint_minutes``), at the
                end, and when Ctrl-C stops the run (atomic writes). Ctrl-C (SIGINT, when ``fit`` runs in
                the main thread) ends the current step first, then raises :class:`TrainingInterrupted`.
            steps: total number of steps to reach; lets a caller stop early to test resuming. History
                entries still close every ``log_every`` steps and at ``config.steps`` only, so a run stopped
                early and resumed logs exactly what an uninterrupted run logs.

        Returns: the loss history.
        """
        total = self.config.steps if steps is None else steps
        device = self.device
        images = images.to(device)
        labels = None if labels is None else labels.to(device)
        quiet = not sys.stderr.isatty() or os.environ.get("MIST_QUIET") == "1"
        bar = tqdm(total=total, initial=self.step, disable=quiet, desc=self.kind, dynamic_ncols=True)
        interrupted = threading.Event()
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGINT, lambda *_: interrupted.set())
        try:
            self._loop(images, labels, total, checkpoint, bar, interrupted)
        finally:
            bar.close()
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        if interrupted.is_set():
            if checkpoint is not None:
                self.save(checkpoint)
            raise TrainingInterrupted(self.step, checkpoint)
        if checkpoint is not None:
            self.save(checkpoint)
        return self.history

    def _loop(self, images, labels, total: int, checkpoint, bar, interrupted: threading.Event) -> None:
        """The steps of :meth:`fit` until ``total`` or an interrupt, with their logging and saving."""
        last_save = time.monotonic()
        while self.step < total and not interrupted.is_set():
            started = time.perf_counter()
            index = batch_indices(images.shape[0], self.config.batch_size, self.config.seed, self.step)
            index = index.to(images.device)
            losses = self.train_step(images[index], None if labels is None else labels[index])
            for name, value in losses.items():
                if not math.isfinite(value):
                    raise FloatingPointError(f"{name} became {value} at step {self.step}: training diverged")
                self._window[name] = self._window.get(name, 0.0) + value
            self._window_steps += 1
            self.step += 1
            bar.update(1)
            if self.step % self.config.log_every == 0 or self.step == self.config.steps:
                entry = {"step": self.step, **{k: v / self._window_steps for k, v in self._window.items()}}
                self.history.append(entry)
                bar.set_postfix({k: f"{v:.4f}" for k, v in entry.items() if k != "step"})
                self._window, self._window_steps = {}, 0
            self.elapsed_s += time.perf_counter() - started
            every, minutes = self.config.checkpoint_every, self.config.checkpoint_minutes
            late = minutes and time.monotonic() - last_save >= 60 * minutes
            due = (every and self.step % every == 0) or late
            if checkpoint is not None and due:
                self.save(checkpoint)
                last_save = time.monotonic()


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


def cosine_decay(optimizers: dict, rates: dict[str, float], done: int, total: int) -> None:
    """Set each optimiser's learning rate to ``rates[name]`` times a cosine: 1 at ``done = 0``, 0 at
    ``total``.

    Example:
        >>> optimizers = {"task": torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=1.0)}
        >>> cosine_decay(optimizers, {"task": 0.1}, done=50, total=100)
        >>> round(optimizers["task"].param_groups[0]["lr"], 6)
        0.05
    """
    factor = 0.5 * (1 + math.cos(math.pi * min(done, total) / max(total, 1)))
    for name, optimizer in optimizers.items():
        for group in optimizer.param_groups:
            group["lr"] = rates[name] * factor
