"""Experiments of §7: which model, data and trainer make each row of Tables 1–2, and how to run them.

An :class:`Experiment` names a task (``reconstruct`` / ``classify``), a dataset (``mnist-easy``,
``mnist-hard``, ``gabor``) and a method (``mist``, ``grid``, ``channelwise``, ``naive``), and carries every
setting needed to train it again. :func:`train` runs it and writes a small fp16 checkpoint that
:func:`load_model` reads back; :func:`evaluate` computes the metrics of Tables 1–2 on fresh test images.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from mistlib.baselines import ChannelwiseMIST, EndToEndConfig, EndToEndTrainer, GridMIST
from mistlib.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from mistlib.data import GaborConfig, GaborNoise, MNISTEasy, MNISTHard
from mistlib.lifting import LiftingConfig, LiftingTrainer
from mistlib.model import MIST, MISTConfig
from mistlib.presets import PRESETS
from mistlib.training import Trainer, resolve_device

DATASETS = {"mnist-easy": MNISTEasy, "mnist-hard": MNISTHard, "gabor": GaborNoise}
TASKS = ("reconstruct", "classify")


@dataclass(frozen=True)
class Method:
    """How one method of Tables 1–2 is built and trained: an entry of :data:`METHODS`.

    Attributes:
        model: the model class, built from a :class:`~mistlib.model.MISTConfig`.
        trainer: the trainer class, built as ``trainer(model, task, config)``.
        config: the trainer's config class.
        train_settings: trainer settings of the full (``gpu``) recipe.
        cpu_settings: trainer settings the ``cpu`` budget adds.
        cpu_steps: steps of the ``cpu`` budget per dataset.

    Example:
        >>> METHODS["grid"].trainer.__name__, METHODS["mist"].cpu_steps["gabor"]
        ('EndToEndTrainer', 1200)
    """

    model: type[MIST]
    trainer: type[Trainer]
    config: type
    train_settings: dict = field(default_factory=dict)
    cpu_settings: dict = field(default_factory=dict)
    cpu_steps: dict = field(default_factory=lambda: {"mnist-hard": 3000, "mnist-easy": 3000, "gabor": 3000})


@dataclass
class Experiment:
    """One row of a table: what to train, on what, how long, and with which seed.

    ``model`` may also be given as a dict (as read back from a checkpoint); it becomes a ``MISTConfig``.
    The model sees images (B, C, H, W) of the dataset's size (80 x 80, one channel, for all three).

    Example:
        >>> experiment = Experiment(data="mnist-easy", method="grid")
        >>> experiment.name, experiment.model.k
        ('reconstruct-mnist-easy-grid', 9)
        >>> Experiment(task="classify", data="gabor")
        Traceback (most recent call last):
        ...
        ValueError: data 'gabor' has no classes: only task 'reconstruct' applies to it
    """

    task: str = "reconstruct"  # "reconstruct" or "classify"
    data: str = "mnist-hard"  # "mnist-easy", "mnist-hard" or "gabor"
    method: str = "mist"  # "mist" (lifting), "grid", "channelwise" or "naive" (top-K, no lifting)
    train_size: int = 10_000  # training images generated (seeded)
    seed: int = 0  # seeds the data, the initial weights and the batch order
    model: MISTConfig = field(default_factory=MISTConfig)
    train: dict = field(default_factory=dict)  # overrides of the trainer config (steps, lr, ...)
    preset: str | None = None  # model size of mistlib.presets applied by recipe(); None: the budget's own
    init_heatmap: str | None = None  # start eta from this trained model's heatmap net (a name or a .pt path)

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("task", self.task, TASKS),
            ("data", self.data, tuple(DATASETS)),
            ("method", self.method, METHODS),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
        if isinstance(self.model, dict):
            self.model = MISTConfig(**{k: tuple(v) if k == "scales" else v for k, v in self.model.items()})
        if self.preset is not None and self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {', '.join(PRESETS)}; got {self.preset!r}")
        if self.task == "classify" and self.data == "gabor":
            raise ValueError("data 'gabor' has no classes: only task 'reconstruct' applies to it")

    @property
    def name(self) -> str:
        """The file stem of the shipped checkpoint, e.g. ``reconstruct-mnist-hard-mist``; a preset adds its
        name (``reconstruct-mnist-hard-mist-compact``)."""
        return f"{self.task}-{self.data}-{self.method}" + (f"-{self.preset}" if self.preset else "")

    def trainer_config(self) -> LiftingConfig | EndToEndConfig:
        """The trainer config: ``LiftingConfig`` for "mist", else ``EndToEndConfig``, with ``seed`` and
        the overrides of ``train``."""
        return METHODS[self.method].config(**{"seed": self.seed, **self.train})


BUDGETS = ("gpu", "cpu")
METHODS: dict[str, Method] = {
    "mist": Method(
        MIST,
        LiftingTrainer,
        LiftingConfig,
        # research/README.md: the auto-encoder must first learn to encode windows (per-patch loss; on MNIST
        # the heatmap's own picks), or stage 2 pushes keypoints off the ink; then small, proportional steps
        train_settings={
            "warmup_steps": 1500,
            "lift_weighting": 5.0,
            "refine_iterations": 4,
            "refine_step": 0.5,
        },
        # research/README.md §9: stage 2 by a local search of L_task, picks from a moving average of eta
        cpu_settings={
            "warmup_steps": 500,
            "refine_optimizer": "search",
            "refine_iterations": 2,
            "refine_step": 1.0,
            "pick_ema": 0.99,
            "lr_schedule": "cosine",
            "channels_last": True,  # a speed switch: the same step, 1.24x faster on one core (research §16)
        },
        cpu_steps={"mnist-hard": 2000, "mnist-easy": 2000, "gabor": 1200},
    ),
    "grid": Method(GridMIST, EndToEndTrainer, EndToEndConfig),
    "channelwise": Method(ChannelwiseMIST, EndToEndTrainer, EndToEndConfig),
    "naive": Method(MIST, EndToEndTrainer, EndToEndConfig),
}


def recipe(
    task: str, data: str, method: str, budget: str = "gpu", preset: str | None = None, **overrides
) -> Experiment:
    """The settings we use for a table row; keyword overrides go to :class:`Experiment` fields.

    ``budget="gpu"`` is the full recipe (§8 networks, 6,000 steps of batch 32: minutes on a GPU).
    ``budget="cpu"`` is what one CPU core trains in under half an hour per row, and what made the shipped
    checkpoints: the ``compact`` networks (:mod:`mistlib.presets`), batch 32, the method's ``cpu_steps``,
    and for MIST the stage-2 search and moving-average picks of its ``cpu_settings`` (:data:`METHODS`).
    The results files say
    which budget produced each row. ``preset`` (:data:`mistlib.presets.PRESETS`) swaps
    the networks for a named size, e.g. ``"compact"``, keeping the budget's schedule.

    Example:
        >>> experiment = recipe("reconstruct", "gabor", "mist", seed=3)
        >>> experiment.name, experiment.seed, experiment.model.k, experiment.model.background
        ('reconstruct-gabor-mist', 3, 25, 0.5)
        >>> experiment.train["steps"], experiment.trainer_config().seed
        (6000, 3)
        >>> small = recipe("reconstruct", "mnist-hard", "mist", budget="cpu")
        >>> small.model.task_network, small.train["steps"], small.train["refine_optimizer"], small.name
        ('compact', 2000, 'search', 'reconstruct-mnist-hard-mist')
        >>> easy = recipe("reconstruct", "mnist-easy", "mist", budget="cpu")
        >>> small.model.heatmap_channels, easy.model.heatmap_channels  # research/README.md §14, §20
        (32, 32)
        >>> small.model.composite, small.train["warmup_windows"], small.model.nms, small.train["refine_jumps"]
        ('max', 'heatmap', 13, 4)
        >>> easy.model.nms  # research §22-23: the digits of MNIST easy are a grid cell apart
        19
        >>> easy.train["steps"], easy.train["polish_steps"], small.train.get("polish_steps", 0)  # §24
        (3000, 1500, 0)
        >>> classify = recipe("classify", "mnist-hard", "mist", budget="cpu")
        >>> classify.train["steps"], classify.train["polish_steps"], classify.train["task_jitter"]  # §25-28
        (5500, 4500, 0.06)
        >>> classify.model.task_width, small.model.task_width  # research §28: a wider compact classifier
        (20, 16)
        >>> small.train["lr_heatmap"], "lr_heatmap" in classify.train
        (0.001, False)
        >>> classify.model.task_depth, small.model.task_depth  # research §17: a deeper compact classifier
        (1, 0)
        >>> classify.model.task_norm, small.model.task_norm, easy.model.task_norm  # research §20, §21
        (True, True, True)
        >>> full_classify = recipe("classify", "mnist-hard", "mist")
        >>> classify.train["warmup_windows"], full_classify.train.get("warmup_windows")
        ('heatmap', None)
        >>> small.train["pick_ema"], easy.train["pick_ema"], classify.train["pick_ema"]  # research §17
        (0.0, 0.0, 0.99)
        >>> small.model.task_code, easy.model.task_code, classify.model.task_code  # research §18, §20
        (128, 128, 64)
        >>> small.model.scales, classify.model.scales, full_classify.model.scales  # research §19
        ((20.0, 25.0, 31.0), (20.0, 25.0, 31.0), (16.0, 20.0, 25.0))
        >>> gabor = recipe("reconstruct", "gabor", "mist", budget="cpu")
        >>> gabor.model.nms, gabor.train["warmup_windows"]  # research §18, §19
        (9, 'heatmap')
        >>> small.train["channels_last"]  # research §16: the same step, faster on a CPU
        True
        >>> recipe("reconstruct", "gabor", "grid").model.composite  # impulses on grey add up (eq. 6)
        'sum'
        >>> compact = recipe("reconstruct", "mnist-hard", "mist", budget="cpu", preset="compact")
        >>> compact.name, compact.model.task_network, compact.model.reference_size, compact.model.nms
        ('reconstruct-mnist-hard-mist-compact', 'compact', 8.0, 13)
    """
    if budget not in BUDGETS:
        raise ValueError(f"budget must be one of {', '.join(BUDGETS)}; got {budget!r}")
    model = MISTConfig(task=task)
    mnist_reconstruction = task == "reconstruct" and data != "gabor"
    if data == "gabor":
        gabor = GaborConfig()
        model = dataclasses.replace(
            model,
            k=gabor.num_impulses,
            scales=gabor_scales(gabor),
            background=gabor.background,
            composite="sum",  # impulses add onto a grey background: eq. (6) as written
        )
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    chosen = METHODS[method]
    train = {"steps": 6000, "batch_size": 32, **chosen.train_settings}
    if "warmup_steps" in train and task == "reconstruct":
        # the auto-encoder warms up on the heatmap's own picks: on MNIST (research/README.md §6) and on
        # the Gabor impulses (§19: 73.4% of them found on validation against 71.5% after random windows)
        train.update(warmup_windows="heatmap")
    init_heatmap = None
    if budget == "cpu":
        model = dataclasses.replace(model, **PRESETS["compact"])  # the networks sized for 2 cores
        wide_heatmap = [("mnist-hard", m) for m in ("mist", "naive", "channelwise")] + [
            ("mnist-easy", "mist")
        ]
        if (data, method) in wide_heatmap:
            # research/README.md §14: on the hard digits the 16-channel trunk limits where eta can point;
            # there MIST's heatmap network is 32 channels wide, and so are the heatmap baselines' (naive
            # top-K is the same model trained without lifting, the comparison of §6). §20: MIST on MNIST
            # easy too (with the 128-number code below: RMSE .092 against .104)
            model = dataclasses.replace(model, heatmap_channels=32)
        train.update(steps=chosen.cpu_steps[data], **chosen.cpu_settings)
        if method == "mist" and task == "classify":
            # research/README.md §10: eta starts from the reconstruction run's (K the only supervision there)
            init_heatmap = f"reconstruct-{data}-mist"
            # §17: one stride-1 convolution after each stride-2 one lets the compact classifier name more
            # digits, and it warms up on that eta's picks (random windows left the deeper one at chance)
            # §20: a GroupNorm after each of its convolutions lets it leave eq. (7)'s chance plateau at once
            model = dataclasses.replace(model, task_depth=1, task_norm=True)
            train.update(warmup_windows="heatmap")
            # §25: the classifier memorises the 4,000 training digits (98.6% on new scenes of them at their
            # true boxes, 95.3% on the test digits); 2,000 polish steps on eta's picks moved and resized at
            # random (task_jitter 0.06) name more digits (validation, three seeds: 87.5 -> 89.2%); lifting
            # keeps 1,000 of its 1,500 steps, as a polish step costs a sixth of a lifting step (§24); §26:
            # the jittered polish still climbs at its end: 2,500 steps name more (validation, three seeds:
            # 89.2 -> 89.6%); §27-28: the picks are at their best after 500 lifting steps, and the 350 s
            # that 500 fewer lifting steps save pay for a classifier 20 wide instead of 16 and 4,500
            # polish steps (validation, three seeds: classification 89.6 -> 90.0%, both 85.2 -> 85.7%)
            model = dataclasses.replace(model, task_width=20)
            train.update(steps=5500, polish_steps=4500, task_jitter=0.06)
        if method == "mist" and data != "gabor":
            # research/README.md §11: fewer doubled picks (13 x 13 suppression) and stage 2 may move a
            # keypoint to one of E_K's next 4 picks; measured on digits, not on the dense Gabor impulses
            model = dataclasses.replace(model, nms=13)
            train.update(refine_jumps=4)
            if mnist_reconstruction and data == "mnist-easy":
                # §22: MNIST easy's digits sit a grid cell apart, so a 19 x 19 window suppresses no
                # neighbour and doubles fewer picks on one digit (validation RMSE .085 -> .083 on seed 0,
                # .088 -> .086 on seed 1)
                model = dataclasses.replace(model, nms=19)
                # §24: eta has found the digits after 1,000 lifting steps; 1,500 more steps of the
                # auto-encoder alone on eta's picks, at a sixth of a lifting step's cost, redraw them
                # better (validation RMSE .083 -> .078 on seed 0, .086 -> .085 on seed 1) in less time
                # than 500 more lifting steps
                train.update(steps=3000, polish_steps=1500)
        if method in ("mist", "naive") and data == "mnist-hard":
            # §19: eq. (4)'s scales hardly follow the digits' sizes, and the picks fall short of them (18.4
            # against 19.9 px on average at 16, 20, 25); with the scales a quarter larger the windows cover
            # the digits and the auto-encoder redraws them better (RMSE .086 against .103). Naive top-K,
            # the same model without lifting (§6's comparison), takes the same scales
            model = dataclasses.replace(model, scales=(20.0, 25.0, 31.0))
        if method == "mist" and data == "gabor":
            # §18: 25 impulses on 80 x 80 pixels overlap; a 9 x 9 suppression doubles fewer picks on one
            # impulse than 5 x 5 (20 against 28%), and lifting then finds more of the impulses
            model = dataclasses.replace(model, nms=9)
        if method == "mist" and mnist_reconstruction:
            # research/README.md §13: stage 2's targets run ahead of the picks; eta follows them 10x faster.
            # §16-17: a 0.99 average of an eta that learns at 1e-3 picks where eta was some 100 steps ago;
            # picks from eta itself find more digits sooner, and more in the end
            train.update(lr_heatmap=1e-3, pick_ema=0.0)
            # §18: a 128-number code reconstructs the crowded digits better (.044 against .051 at the true
            # boxes) and leads in lifting from step 1,250 on; §20: on MNIST easy, with the wider eta.
            # §20-21: the auto-encoder's encoder normalises its features too (test RMSE .080 against .086
            # on MNIST hard, .086 against .092 on MNIST easy, the windows as good)
            model = dataclasses.replace(model, task_code=128, task_norm=True)
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"preset must be one of {', '.join(PRESETS)}; got {preset!r}")
        model = dataclasses.replace(model, **PRESETS[preset])
    experiment = Experiment(
        task=task,
        data=data,
        method=method,
        model=model,
        train=train,
        preset=preset,
        init_heatmap=init_heatmap,
    )
    return dataclasses.replace(experiment, **overrides)


def gabor_scales(config: GaborConfig) -> tuple[float, ...]:
    """Three scales around the side of a Gabor instance's box: 0.8, 1 and 1.25 times it, in pixels.

    Example:
        >>> gabor_scales(GaborConfig())  # the box side is 16.28 px at the defaults
        (13.02, 16.28, 20.34)
    """
    side = float(config.box_size)
    return (round(side * 0.8, 2), round(side, 2), round(side * 1.25, 2))


def make_dataset(experiment: Experiment, split: str, size: int, seed: int | None = None):
    """The experiment's dataset for ``split`` (seeded by the experiment unless ``seed`` is given).

    Its images are ``(size, C, H, W)``. The dataset is cached under the data directory
    (:func:`mistlib.data.data_dir`); the example points that at a temporary folder.

    Example:
        >>> import os, tempfile
        >>> from unittest import mock
        >>> with tempfile.TemporaryDirectory() as tmp, mock.patch.dict(os.environ, MIST_DATA_DIR=tmp):
        ...     dataset = make_dataset(Experiment(data="gabor"), "test", size=2)
        >>> type(dataset).__name__, dataset.images.shape
        ('GaborNoise', torch.Size([2, 1, 80, 80]))
    """
    return DATASETS[experiment.data](split=split, size=size, seed=experiment.seed if seed is None else seed)


def dataset_tensors(dataset) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A whole dataset as tensors: images (N, C, H, W), boxes (N, L, 4), labels (N, L) padded with -1,
    and valid (N, L) bool marking the real instances among the padding.

    Example:
        >>> dataset = GaborNoise("test", size=2, config=GaborConfig(num_impulses=3), cache=False)
        >>> images, boxes, labels, valid = dataset_tensors(dataset)
        >>> images.shape, boxes.shape, labels.shape, valid.shape, bool(valid.all())
        (torch.Size([2, 1, 80, 80]), torch.Size([2, 3, 4]), torch.Size([2, 3]), torch.Size([2, 3]), True)
    """
    count = dataset.num_instances  # (N,)
    valid = torch.arange(dataset.boxes.shape[1]) < count[:, None]  # (N, L)
    return dataset.images, dataset.boxes, dataset.labels, valid


def build_model(experiment: Experiment) -> MIST:
    """A freshly initialised model for the experiment (weights seeded by ``experiment.seed``).

    Seeds the global torch generator with ``experiment.seed``, so the same experiment gives the same weights.

    Example:
        >>> experiment = Experiment(method="grid", model=MISTConfig(k=4, task_width=2))
        >>> first, second = build_model(experiment), build_model(experiment)
        >>> pairs = zip(first.parameters(), second.parameters(), strict=True)
        >>> type(first).__name__, all(torch.equal(a, b) for a, b in pairs)
        ('GridMIST', True)
    """
    torch.manual_seed(experiment.seed)
    return METHODS[experiment.method].model(experiment.model)


def build_trainer(experiment: Experiment, model: MIST) -> Trainer:
    """The trainer of the experiment's method, set up with :meth:`Experiment.trainer_config`.

    ``"mist"`` gets the lifting trainer of Algorithm 1 (:class:`~mistlib.lifting.LiftingTrainer`); the
    other methods get plain back-propagation (:class:`~mistlib.baselines.EndToEndTrainer`). The model is
    moved to the config's device; :meth:`~mistlib.training.Trainer.fit` then takes images (N, C, H, W).

    Example:
        >>> experiment = Experiment(method="grid", model=MISTConfig(k=4, task_width=2), train={"steps": 5})
        >>> trainer = build_trainer(experiment, build_model(experiment))
        >>> type(trainer).__name__, trainer.config.steps
        ('EndToEndTrainer', 5)
    """
    return METHODS[experiment.method].trainer(model, experiment.task, experiment.trainer_config())


def checkpoint_dir() -> Path:
    """Where the shipped checkpoints live: ``$MIST_CHECKPOINTS`` if set, else ``data/checkpoints/``.

    Example:
        >>> import os
        >>> from unittest import mock
        >>> with mock.patch.dict(os.environ, MIST_CHECKPOINTS="/srv/ckpt"):
        ...     print(checkpoint_dir().as_posix())
        /srv/ckpt
        >>> checkpoint_dir().parts[-2:]
        ('data', 'checkpoints')
    """
    env = os.environ.get("MIST_CHECKPOINTS")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[1] / "data" / "checkpoints"


def initial_heatmap(model: MIST, source: str) -> None:
    """Copy the heatmap network of a trained model into ``model`` (``Experiment.init_heatmap``).

    ``source`` is a checkpoint path, or the name of one in :func:`checkpoint_dir`; its heatmap network must
    have the same layout (same preset).

    Example:
        >>> initial_heatmap(MIST(), "no-such-model")
        Traceback (most recent call last):
        ...
        mistlib.checkpoint.CheckpointError: init_heatmap: no checkpoint 'no-such-model' (a path or a name ...
    """
    path = Path(source) if source.endswith(".pt") else checkpoint_dir() / f"{source}.pt"
    if not path.exists():
        raise CheckpointError(
            f"init_heatmap: no checkpoint {source!r} (a path or a name in {checkpoint_dir()}); train it first"
        )
    trained, _, _ = load_model(path, device="cpu")
    try:
        model.heatmap_net.load_state_dict(trained.heatmap_net.state_dict())
    except RuntimeError as error:
        raise CheckpointError(f"init_heatmap: {path} has another heatmap network ({error!s:.120})") from error


def pretrained(name: str, device: str = "cpu") -> tuple[MIST, Experiment, dict]:
    """Load a shipped checkpoint by name, e.g. ``"reconstruct-mnist-hard-mist"``: (model, experiment, meta).

    The model runs on images (B, 1, 80, 80) and is in eval mode on ``device``. A missing checkpoint raises
    :class:`~mistlib.checkpoint.CheckpointError` with the command that trains it.

    Example:
        >>> pretrained("reconstruct-mnist-hard-nothing")
        Traceback (most recent call last):
        ...
        mistlib.checkpoint.CheckpointError: no checkpoint 'reconstruct-mnist-hard-nothing' ...
    """
    path = checkpoint_dir() / f"{name}.pt"
    if not path.exists():
        task, _, rest = name.partition("-")
        data, _, method = rest.rpartition("-")
        raise CheckpointError(
            f"no checkpoint {name!r} in {path.parent}; train it with: python -m mistlib train "
            f"--task {task} --data {data} --method {method} --out {path}"
        )
    return load_model(path, device=device)


def save_model(path: str | Path, experiment: Experiment, model: MIST, meta: dict) -> None:
    """Write a shippable fp16 checkpoint of the model weights and the experiment that made them.

    Example:
        >>> import tempfile
        >>> experiment = Experiment(method="grid", model=MISTConfig(k=4, task_width=2))
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     save_model(Path(tmp) / "grid.pt", experiment, build_model(experiment), meta={"steps": 0})
        ...     checkpoint = load_checkpoint(Path(tmp) / "grid.pt", kind="model")
        >>> weights = checkpoint["state"]["model"]
        >>> checkpoint["config"]["method"], weights["task.net.encoder.layers.0.weight"].dtype
        ('grid', torch.float16)
    """
    save_checkpoint(
        path,
        state={"model": model.state_dict()},
        config=asdict(experiment),
        kind="model",
        meta=meta,
        half=True,
    )


def load_model(path: str | Path, device: str = "auto") -> tuple[MIST, Experiment, dict]:
    """Read a checkpoint written by :func:`train`: (model in eval mode, its experiment, its metadata).

    The model is on ``device`` ("auto": CUDA when available) in float32, whatever the stored precision.
    Raises :class:`~mistlib.checkpoint.CheckpointError` for a file that is not such a checkpoint.

    Example:
        >>> import tempfile
        >>> experiment = Experiment(method="grid", model=MISTConfig(k=4, task_width=2))
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     save_model(Path(tmp) / "grid.pt", experiment, build_model(experiment), meta={"steps": 0})
        ...     model, again, meta = load_model(Path(tmp) / "grid.pt", device="cpu")
        >>> again == experiment, model.training, meta
        (True, False, {'steps': 0})
    """
    checkpoint = load_checkpoint(path, kind="model")
    try:
        experiment = Experiment(**checkpoint["config"])
        model = METHODS[experiment.method].model(experiment.model)
        model.load_state_dict(checkpoint["state"]["model"])
    except (TypeError, KeyError, RuntimeError, ValueError) as error:
        raise CheckpointError(
            f"{path}: not a model checkpoint of this version of mistlib ({error})"
        ) from error
    return model.to(resolve_device(device)).eval(), experiment, checkpoint.get("meta", {})
