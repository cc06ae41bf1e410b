"""A training run on disk: one writer per output, a resume that checks what it resumes, Ctrl-C that saves.

:func:`train` turns an :class:`~mistlib.experiments.Experiment` into a checkpoint at ``out``. While it
runs, ``<out>.lock`` holds its process id (a second run on the same ``out`` is refused) and
``<out>.resume`` its resumable state (weights, optimisers, step, elapsed time, and the experiment it
trains), saved every ``checkpoint_every`` steps or ``checkpoint_minutes``, and on Ctrl-C. A resume
compares the stored experiment with the one asked for and refuses to mix two runs.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import torch

from mistlib.checkpoint import CheckpointError, load_checkpoint
from mistlib.experiments import (
    Experiment,
    build_model,
    build_trainer,
    dataset_tensors,
    initial_heatmap,
    make_dataset,
    save_model,
)
from mistlib.lifting import LiftingTrainer
from mistlib.traininglog import TrainingLog

# trainer settings a resumed run may change: they do not change what is being trained
RESUMABLE_CHANGES = ("steps", "device", "checkpoint_every", "checkpoint_minutes")


class RunError(ValueError):
    """A run cannot start or resume as asked; the message says why and what to do instead.

    Example:
        >>> issubclass(RunError, ValueError)
        True
    """


class RunLock:
    """``<out>.lock``, created exclusively and holding this process id, for as long as the ``with`` lasts.

    A lock whose process no longer runs (a run killed with SIGKILL) is stale and taken over.

    Example:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp()) / "run.pt"
        >>> with RunLock(out):
        ...     with RunLock(out):
        ...         pass
        Traceback (most recent call last):
        ...
        mistlib.runs.RunError: another run (process ...) is writing .../run.pt; wait for it or ...
        >>> out.with_name("run.pt.lock").exists()
        False
    """

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        self.path = self.out.with_name(self.out.name + ".lock")

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = _lock_owner(self.path)
                if owner is not None and _alive(owner):
                    raise RunError(
                        f"another run (process {owner}) is writing {self.out}; wait for it or choose another "
                        "output"
                    ) from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            with os.fdopen(fd, "w") as handle:
                handle.write(str(os.getpid()))
            return self
        raise RunError(f"could not take the lock {self.path}")

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)


def _lock_owner(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def resume_mismatch(saved: dict, experiment: Experiment) -> list[str]:
    """The settings in which a stored experiment (``asdict`` of one) differs from ``experiment``.

    Each entry reads ``name: stored -> asked``; changes of :data:`RESUMABLE_CHANGES` are allowed.

    Example:
        >>> from mistlib.experiments import recipe
        >>> stored = dataclasses.asdict(recipe("reconstruct", "mnist-hard", "naive", seed=0))
        >>> resume_mismatch(stored, recipe("reconstruct", "gabor", "naive", seed=1))[:2]
        ["data: 'mnist-hard' -> 'gabor'", 'seed: 0 -> 1']
    """
    asked = dataclasses.asdict(experiment)
    differences = []
    for name, value in asked.items():
        old = saved.get(name)
        if name == "train":
            keys = sorted((set(value) | set(old or {})) - set(RESUMABLE_CHANGES))
            differences += [
                f"train.{key}: {(old or {}).get(key)!r} -> {value.get(key)!r}"
                for key in keys
                if (old or {}).get(key) != value.get(key)
            ]
        elif name == "model":
            old = old or {}
            differences += [
                f"model.{key}: {old.get(key)!r} -> {item!r}"
                for key, item in value.items()
                if _plain(old.get(key)) != _plain(item)
            ]
        elif old != value:
            differences.append(f"{name}: {old!r} -> {value!r}")
    return differences


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def check_steps(experiment: Experiment) -> None:
    """Refuse a MIST run whose steps end within its warm-up and polish: it would train no lifting step.

    Example:
        >>> from mistlib.experiments import recipe
        >>> check_steps(recipe("reconstruct", "mnist-hard", "mist", train={"steps": 10, "warmup_steps": 10}))
        Traceback (most recent call last):
        ...
        mistlib.runs.RunError: steps 10 end within the 10 warm-up steps of this mist recipe: no lifting ...
        >>> check_steps(recipe("reconstruct", "mnist-easy", "mist", budget="cpu", train={
        ...     "steps": 2000, "warmup_steps": 500, "polish_steps": 1500}))
        Traceback (most recent call last):
        ...
        mistlib.runs.RunError: steps 2000 leave no lifting step between the 500 warm-up and 1500 polish ...
    """
    config = experiment.trainer_config()
    warmup, polish = getattr(config, "warmup_steps", 0), getattr(config, "polish_steps", 0)
    if (warmup or polish) and config.steps <= warmup + polish:
        raise RunError(
            f"steps {config.steps} end within the {warmup} warm-up steps of this mist recipe: no lifting "
            f"step would run; ask for more than {warmup} steps"
            if not polish
            else f"steps {config.steps} leave no lifting step between the {warmup} warm-up and {polish} "
            f"polish steps of this mist recipe; ask for more than {warmup + polish} steps"
        )


def train(
    experiment: Experiment,
    out: str | Path,
    resume: bool = False,
    force: bool = False,
    log_path: str | Path | None = None,
    probe_size: int = 4,
    command: str | None = None,
    validate_every: int = 0,
    validation_size: int = 300,
) -> dict:
    """Train an experiment and write its fp16 model checkpoint to ``out`` (module doc: lock and resume).

    ``resume=True`` continues from ``<out>.resume`` (refused if it trains another experiment; a missing
    one starts fresh, with a note on stderr). Without it an existing ``<out>.resume`` is refused, unless
    ``force=True`` discards it. With ``log_path`` (MIST only), the training log of lifting snapshots on
    ``probe_size`` test images is written there. ``command``, the command line that trains this
    experiment, is kept in the metadata so that tables can cite it. With ``validate_every``, the metrics of
    :func:`~mistlib.evaluation.measure` on ``validation_size`` validation images (never the test images)
    are taken at step 0 and every ``validate_every`` steps: the learning curve, kept in the metadata as
    ``validation`` (a list of dicts with ``step``).

    Returns: the checkpoint's metadata (steps, wall time, device, final losses).

    The training images ``(train_size, C, H, W)`` are generated and cached under the data directory
    (:func:`mistlib.data.data_dir`); the example points that at a temporary folder and trains two steps.

    Example:
        >>> import os, tempfile
        >>> from unittest import mock
        >>> from mistlib.experiments import load_model
        >>> from mistlib.model import MISTConfig
        >>> tiny = MISTConfig(k=4, task_width=2)
        >>> settings = {"steps": 2, "batch_size": 2, "device": "cpu"}
        >>> experiment = Experiment(data="gabor", method="grid", train_size=4, model=tiny, train=settings)
        >>> with tempfile.TemporaryDirectory() as tmp, mock.patch.dict(os.environ, MIST_DATA_DIR=tmp):
        ...     meta = train(experiment, Path(tmp) / "grid.pt")
        ...     model, _, _ = load_model(Path(tmp) / "grid.pt", device="cpu")
        >>> meta["steps"], len(meta["history"]), type(model).__name__
        (2, 1, 'GridMIST')
    """
    out = Path(out)
    check_steps(experiment)
    resume_path = out.with_name(out.name + ".resume")
    with RunLock(out):
        saved = _resume_state(resume_path, experiment, resume, force)
        images, _, labels, _ = dataset_tensors(make_dataset(experiment, "train", experiment.train_size))
        model = build_model(experiment)
        if experiment.init_heatmap and saved is None:
            initial_heatmap(model, experiment.init_heatmap)
        trainer = build_trainer(experiment, model)
        trainer.meta = {"experiment": dataclasses.asdict(experiment)}
        if saved is not None and "validation" in saved[1]:
            trainer.meta["validation"] = saved[1]["validation"]
        log = _training_log(experiment, trainer, probe_size) if log_path is not None else None
        if saved is not None:
            try:
                trainer.load_state_dict(saved[0])
            except (RuntimeError, KeyError, ValueError) as error:
                raise RunError(f"{resume_path} does not fit this experiment ({error!s:.200})") from error
        train_labels = labels if trainer.model.task.needs_labels else None
        if validate_every:
            _fit_with_curve(
                trainer, experiment, images, train_labels, resume_path, validate_every, validation_size
            )
        else:
            trainer.fit(images, train_labels, checkpoint=resume_path)
        meta = {
            "steps": trainer.step,
            "wall_time_s": round(trainer.elapsed_s, 1),
            "device": str(trainer.device),
            "device_name": torch.cuda.get_device_name() if trainer.device.type == "cuda" else "cpu",
            "torch": str(torch.__version__),
            "final_losses": trainer.history[-1] if trainer.history else {},
            "history": trainer.history,
        }
        if "validation" in trainer.meta:
            meta["validation"] = trainer.meta["validation"]
        if command is not None:
            meta["command"] = command
        save_model(out, experiment, trainer.model, meta)
        if log is not None:
            log.save(log_path)
        resume_path.unlink(missing_ok=True)
    return meta


def _fit_with_curve(trainer, experiment, images, labels, checkpoint, every: int, size: int) -> None:
    """``trainer.fit`` in stretches of ``every`` steps, measuring the validation split after each."""
    from mistlib.evaluation import VALIDATION_SEED, measure

    tensors = dataset_tensors(make_dataset(experiment, "test", size, seed=VALIDATION_SEED))
    curve = trainer.meta.setdefault("validation", [])
    total = trainer.config.steps
    while True:
        if not curve or curve[-1]["step"] < trainer.step:
            metrics = measure(trainer.model, experiment, *tensors)
            curve.append({"step": trainer.step, **metrics})
        if trainer.step >= total:
            break
        trainer.fit(
            images, labels, checkpoint=checkpoint, steps=min(total, (trainer.step // every + 1) * every)
        )


def _resume_state(path: Path, experiment: Experiment, resume: bool, force: bool) -> tuple | None:
    """(trainer state, metadata) to continue from, after the checks of :func:`train`; None: start fresh."""
    if not path.exists():
        if resume:
            print(f"note: no {path} to resume: starting from step 0", file=sys.stderr)
        return None
    if not resume:
        if force:
            path.unlink()
            return None
        step = _stored_step(path)
        raise RunError(
            f"{path} holds an unfinished run{step}: add --resume to continue it, or --force to discard it"
        )
    checkpoint = load_checkpoint(path)
    stored = (checkpoint.get("meta") or {}).get("experiment")
    if stored is not None:
        differences = resume_mismatch(stored, experiment)
        if differences:
            raise RunError(
                f"cannot resume {path}: it trains another experiment ({'; '.join(differences)}); use the "
                "same settings, or --force without --resume to discard it"
            )
    return checkpoint["state"], checkpoint.get("meta") or {}


def _stored_step(path: Path) -> str:
    try:
        return f" (step {int(load_checkpoint(path)['state']['step'])})"
    except (CheckpointError, KeyError, TypeError, ValueError):
        return ""


def _training_log(experiment: Experiment, trainer, probe_size: int) -> TrainingLog | None:
    """A lifting trainer's snapshot log on ``probe_size`` images (about 60 snapshots); None otherwise."""
    if not isinstance(trainer, LiftingTrainer):
        return None
    probe = make_dataset(experiment, "test", probe_size, seed=12345)
    probe_images, _, probe_labels, _ = dataset_tensors(probe)
    log = TrainingLog({"experiment": experiment.name, "seed": experiment.seed})
    trainer.record_to(log, probe_images, probe_labels if trainer.model.task.needs_labels else None)
    if not trainer.config.snapshot_every:
        trainer.config.snapshot_every = max(1, trainer.config.steps // 60)
    return log
