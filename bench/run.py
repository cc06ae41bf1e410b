"""Benchmark suite of issue 14: the lifting step of Algorithm 1 as it was and as it is, inference, and the
time to a fixed quality, measured in one process.

    python -m bench.run [--device cpu|cuda] [--quick] [--sections train,inference,ttq] [--batch N]
                        [--ttq-limit SECONDS] [--no-compile] [--ablation] [--out DIR]
    python -m bench.run --render          # rewrite the table of bench/README.md from bench/results/*.json

train: images/s of full lifting steps (stage 1, N = 2 stage-2 iterations, stage 3; K = 9, 80 x 80 MNIST
hard) of the frozen old ``--budget cpu`` step (bench/frozen_step.py), of the ``paper`` and ``compact``
presets in fp32 eager, and of compact with the speed switches of :func:`optimized_settings`; timed in
turns (frozen, paper, compact, compact-optimised, frozen, ...) on one batch, so that a change in the
machine's load hits them alike. inference: heatmap -> top-K -> patches -> task output (``MIST.forward``
under ``torch.inference_mode``) of paper and compact, plain vs optimised (channels-last, tensor checks off,
``torch.compile``), in turns. ttq: wall time for the compact CPU recipe, trained with the optimised
switches, to reach validation IoU>=50% of :data:`IOU_TARGET`. Every throughput is the median of
``repeats`` repetitions, with min, max and every run in the json (bench/results/; bench/README.md).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime as dt
import json
import math
import os
import platform
import re
import statistics
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from bench.frozen_step import OLD_RECIPE, FrozenStep
from mistlib.checks import checks
from mistlib.data import MNISTHard
from mistlib.evaluation import VALIDATION_SEED, measure
from mistlib.experiments import DATASETS, build_model, build_trainer, dataset_tensors, recipe
from mistlib.lifting import LiftingConfig, LiftingTrainer
from mistlib.model import MIST, MISTConfig
from mistlib.presets import preset

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
README = BENCH_DIR / "README.md"
SCHEMA = 2  # 1: the reference / optimised step of issue 6 (rendered in the legacy table)
SECTIONS = ("train", "inference", "ttq")
PRESETS = ("paper", "compact")
PAPER_NETWORKS = {"heatmap_channels": 32, "heatmap_blocks": 4, "task_width": 8}  # §4 and §8, for FrozenStep
INFERENCE_RUNS = ("paper", "paper_optimized", "compact", "compact_optimized")
ALGORITHM = {"composite": "max", "nms": 5}  # the MNIST recipes' E_K and eq. (6), as the old cpu recipe had
LIFTING = {
    "refine_iterations": 2,
    "refine_step": 1.0,
    "lift_weighting": 5.0,
}  # the old cpu recipe's stages 2-3
IOU_TARGET = (
    0.45  # validation IoU>=50% to reach (300 images of VALIDATION_SEED; untrained, 2026-12-01: 0.351)
)
TARGETS = {  # issue 14, on the project's 2-core CPU at batch 32
    "compact_lifting_images_per_s": 150.0,  # compact with the optimised switches
    "compact_inference_images_per_s": 1000.0,  # compact, optimised inference
    # the paper preset with the optimised switches / the frozen old step on the same (§4, §8) networks
    "paper_vs_frozen_paper": 2.0,
}
# Dense bf16 tensor-core peaks (no sparsity), FLOP/s, from the vendors' data sheets; first match wins.
PEAK_BF16_FLOPS = {
    "H100 PCIe": 756e12,
    "H100 NVL": 835e12,
    "H100": 989.4e12,  # SXM5 (HBM3)
    "H200": 989.4e12,
    "GH200": 989.4e12,
    "A100": 312e12,
    "L40S": 362.05e12,
}


def bf16_matrix_units() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (Intel AMX), where bf16 autocast pays.

    Example:
        >>> isinstance(bf16_matrix_units(), bool)
        True
    """
    try:
        return bool(torch._C._cpu._init_amx())  # asks the kernel for AMX tiles; False without them
    except (AttributeError, RuntimeError):
        return False


def optimized_settings(device: torch.device | str) -> dict[str, bool]:
    """The :class:`~mistlib.lifting.LiftingConfig` speed switches measured for a device type.

    CUDA: all of them (bf16 autocast, channels-last, fused Adam, ``torch.compile``). CPU: those that
    measured at least as fast as fp32 eager on the project's 2-core CPUs: channels-last and fused Adam,
    and bf16 autocast where the CPU has bf16 matrix units (AMX: the paper preset's step 1.9x, the compact
    one's 1.35x on one thread; an AVX2/AVX-512 machine without them keeps fp32). Compiling the training
    step takes minutes, more than a run saves.

    Example:
        >>> settings = optimized_settings("cpu")
        >>> amp = settings.get("amp", False)
        >>> settings["channels_last"], settings["fused_adam"], amp == bf16_matrix_units()
        (True, True, True)
    """
    if torch.device(device).type == "cuda":
        return {"amp": True, "channels_last": True, "fused_adam": True, "compile": True}
    return {"channels_last": True, "fused_adam": True} | ({"amp": True} if bf16_matrix_units() else {})


def inference_settings(device: torch.device | str, compile_networks: bool = True) -> dict[str, bool]:
    """What the optimised inference turns on: channels-last model and images, the tensor checks off,
    ``nn.Module.compile(dynamic=False)`` of both networks (``compile_networks``), and bf16 autocast on CUDA
    and on CPUs with bf16 matrix units (:func:`bf16_matrix_units`; compact, compiled, 2 threads: 1,100 ->
    1,760 images/s by hand on the project's AMX machine).

    Example:
        >>> settings = inference_settings("cpu")
        >>> settings["channels_last"], settings["compile"], settings["amp"] == bf16_matrix_units()
        (True, True, True)
    """
    amp = torch.device(device).type == "cuda" or bf16_matrix_units()
    return {"channels_last": True, "checks_off": True, "compile": compile_networks, "amp": amp}


def _preset_models() -> dict[str, MISTConfig]:
    return {name: preset(name, **ALGORITHM) for name in PRESETS}


@dataclass
class BenchConfig:
    """What one benchmark run measures, and how long it may take.

    ``for_device(device, quick)`` gives the standard settings; :meth:`tiny` the seconds-long test setting.

    Example:
        >>> config = BenchConfig.for_device("cpu")
        >>> config.batch_size, config.models["compact"].task_network, config.ttq_limit_s
        (32, 'compact', 1800.0)
    """

    device: str = "cpu"
    quick: bool = False
    models: dict[str, MISTConfig] = field(default_factory=_preset_models)  # "paper" and "compact"
    frozen: dict = field(default_factory=dict)  # FrozenStep network arguments ({}: the old cpu recipe's)
    # the old step's code on the paper preset's networks (None: not timed), for the code-only speed-up
    frozen_paper: dict | None = field(default_factory=lambda: dict(PAPER_NETWORKS))
    lifting: dict = field(default_factory=lambda: dict(LIFTING))  # stage-2 iterations and step, weighting
    batch_size: int = 32
    repeats: int = 7
    min_repeat_s: float = 2.0  # a repetition runs enough steps to last about this long (at least one)
    warmup_steps: int = 2  # untimed steps per variant (the first one compiles)
    large_batch: bool = True  # also the largest batch that fits (CUDA only)
    max_batch: int = 1024
    inference_batch: int = 32
    inference_repeats: int = 7
    inference_compile: bool = True  # compile both networks for the optimised inference
    ablation: bool = False  # also compact with each speed switch added one at a time
    ttq_limit_s: float = 1800.0
    ttq_eval_every: int = 250  # steps between two validation measurements
    ttq_eval_size: int = 300  # validation images (VALIDATION_SEED)
    ttq_train_size: int | None = None  # training images generated (None: the recipe's 10,000)
    ttq_target: float = IOU_TARGET
    ttq_model: MISTConfig | None = None  # None: the recipe's compact networks (the tests: a tiny one)
    ttq_train: dict = field(default_factory=dict)  # overrides of the recipe's trainer settings (tests)
    sections: tuple[str, ...] = SECTIONS

    @classmethod
    def for_device(cls, device: str, quick: bool = False) -> BenchConfig:
        """Standard settings: a full CPU run (batch 32, medians of 7, time to quality up to 30 min), a
        ``quick`` CPU run (< 3 min: 3 repetitions, no compiling, a 45 s time-to-quality attempt), and the
        GPU runs (batch 32 and the largest batch that fits)."""
        if device == "cuda":
            common = {"device": device, "repeats": 5, "min_repeat_s": 1.0, "inference_batch": 1024}
            if quick:
                return cls(**common, quick=True, repeats=3, large_batch=False, ttq_limit_s=60.0)
            return cls(**common, ablation=True, inference_repeats=5, ttq_limit_s=600.0)
        if quick:
            return cls(
                device=device,
                quick=True,
                repeats=3,
                min_repeat_s=0.5,
                warmup_steps=1,
                large_batch=False,
                inference_repeats=5,
                inference_compile=False,
                frozen_paper=None,
                ttq_limit_s=45.0,
                ttq_eval_every=25,
                ttq_eval_size=50,
                ttq_train_size=512,
            )
        return cls(device=device, large_batch=False)

    @classmethod
    def tiny(cls) -> BenchConfig:
        """A seconds-long CPU run on tiny networks, for the tests: checks plumbing, not speed."""
        small = {"heatmap_channels": 4, "heatmap_blocks": 1, **ALGORITHM}
        compact = preset("compact", **small, task_width=4, task_code=8)
        return cls(
            device="cpu",
            quick=True,
            models={"paper": preset("paper", **small, task_width=2), "compact": compact},
            frozen={"heatmap_channels": 4, "heatmap_blocks": 1, "task_width": 2},
            frozen_paper={"heatmap_channels": 4, "heatmap_blocks": 2, "task_width": 2},
            batch_size=2,
            repeats=2,
            min_repeat_s=0.0,
            warmup_steps=1,
            large_batch=False,
            inference_batch=2,
            inference_repeats=2,
            inference_compile=False,
            ablation=True,
            ttq_limit_s=60.0,  # generous: the 6-step cap, not the clock, must end it on a loaded machine
            ttq_eval_every=2,
            ttq_eval_size=4,
            ttq_train_size=8,
            ttq_model=compact,
            ttq_train={"steps": 6, "warmup_steps": 2, "batch_size": 4},
        )


# -- helpers ------------------------------------------------------------------------------------------------
def log(message: str) -> None:
    """Progress on stderr, with the time of day (a run killed by a time limit shows how far it got)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); a no-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    """The device as torch names it (``torch.cuda.get_device_name``), or ``"cpu"``."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or ``platform.processor()``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def peak_flops(name: str) -> float | None:
    """The dense bf16 peak (FLOP/s) of a GPU named ``name``; None for the CPU or an unknown device."""
    for key, value in PEAK_BF16_FLOPS.items():
        if key in name:
            return value
    return None


def summary(values: list[float]) -> dict:
    """Median, min, max and every value (rounded) of a list of measurements."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": [round(v, 3) for v in values],
    }


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, or None when either is missing (a variant that failed)."""
    return numerator / denominator if numerator and denominator else None


def bench_images(size: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    """``size`` MNIST-hard training images (size, 1, 80, 80), freshly generated, on ``device``."""
    return MNISTHard("train", size=size, seed=seed, cache=False).images.to(device)


def raise_recompile_limit(limit: int = 64) -> None:
    """Let dynamo keep more compiled variants per function: every model of a run compiles the same code
    objects, and past the default limit of 8 dynamo would silently run the rest eagerly."""
    config = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):  # the newer name first (torch >= 2.6)
        if hasattr(config, name):
            setattr(config, name, max(limit, getattr(config, name)))


def is_compiled(module: nn.Module) -> bool:
    """Whether ``module`` was compiled in place (``nn.Module.compile``)."""
    return getattr(module, "_compiled_call_impl", None) is not None


# -- the lifting step ---------------------------------------------------------------------------------------
@dataclass
class Variant:
    """One lifting step timed by the train section: a ``name``, the ``model`` it trains ("frozen",
    "frozen_paper", "paper" or "compact") and the :class:`~mistlib.lifting.LiftingConfig` switches it
    turns on."""

    name: str
    model: str
    settings: dict = field(default_factory=dict)


def lifting_variants(
    device: torch.device, ablation: bool = False, frozen_paper: bool = True
) -> list[Variant]:
    """The variants of the train section, in the order they are timed.

    Always: the frozen old step, paper and compact in fp32 eager, compact with :func:`optimized_settings`.
    ``frozen_paper``: also the old step's code on the paper networks. On CUDA also paper with the switches
    (the reference / optimised comparison of the GPU targets). ``ablation`` adds compact with the switches
    added one at a time (cumulative).

    Example:
        >>> [v.name for v in lifting_variants(torch.device("cpu"))]
        ['frozen', 'frozen_paper', 'paper', 'compact', 'compact_optimized', 'paper_optimized']
    """
    optimized = optimized_settings(device)
    variants = [Variant("frozen", "frozen")]
    if frozen_paper:
        variants.append(Variant("frozen_paper", "frozen_paper"))
    variants += [
        Variant("paper", "paper"),
        Variant("compact", "compact"),
        Variant("compact_optimized", "compact", optimized),
    ]
    variants.append(Variant("paper_optimized", "paper", optimized))
    if ablation:
        steps = ["fused_adam", "channels_last"] + (["amp"] if optimized.get("amp") else [])
        settings: dict = {}
        for switch in steps:
            settings = {**settings, switch: True}
            variants.append(Variant("compact+" + "+".join(settings), "compact", dict(settings)))
    return variants


class Stepper:
    """One variant's lifting step on freshly seeded weights (seed 0), ready to time: :meth:`step` runs one.

    The frozen steps are :class:`bench.frozen_step.FrozenStep` (``cfg.frozen`` or ``cfg.frozen_paper``
    networks); the others a
    :class:`~mistlib.lifting.LiftingTrainer` of ``MIST(cfg.models[variant.model])`` with ``cfg.lifting``
    and the variant's switches (no warm-up: every step is a full lifting step).
    """

    def __init__(self, cfg: BenchConfig, variant: Variant, batch: int) -> None:
        self.variant = variant
        self.trainer: LiftingTrainer | None = None
        if variant.model in ("frozen", "frozen_paper"):
            networks = cfg.frozen if variant.model == "frozen" else cfg.frozen_paper or {}
            self.frozen = FrozenStep(0, cfg.device, **networks)
            self.model: nn.Module = self.frozen.model
        else:
            torch.manual_seed(0)
            model = MIST(cfg.models[variant.model])
            config = LiftingConfig(
                device=cfg.device, batch_size=batch, warmup_steps=0, **cfg.lifting, **variant.settings
            )
            self.trainer = LiftingTrainer(model, "reconstruct", config)
            self.model = self.trainer.model

    def step(self, images: torch.Tensor) -> dict[str, float]:
        """One full lifting step on ``images`` (B, 1, H, W): the losses as floats."""
        if self.trainer is None:
            return self.frozen.step(images)
        losses = self.trainer.train_step(images, None)
        self.trainer.step += 1
        return losses

    def compile_report(self) -> dict | None:
        """Whether both networks run through ``torch.compile`` (None when the step does not compile)."""
        if self.trainer is None or not self.trainer.config.compile:
            return None
        networks = (self.model.heatmap_net, self.model.task_net)
        return {"compiled": all(is_compiled(net) for net in networks)}


def timed_steps(stepper: Stepper, images: torch.Tensor, steps: int) -> float:
    """Seconds for ``steps`` lifting steps on ``images`` (synchronised before and after)."""
    sync(images.device)
    start = time.perf_counter()
    for _ in range(steps):
        stepper.step(images)
    sync(images.device)
    return time.perf_counter() - start


def peak_memory(stepper: Stepper, images: torch.Tensor) -> int | None:
    """Peak bytes allocated on the GPU during one lifting step (weights and optimiser states included)."""
    if images.device.type != "cuda":
        return None
    sync(images.device)
    torch.cuda.reset_peak_memory_stats(images.device)
    stepper.step(images)
    sync(images.device)
    return int(torch.cuda.max_memory_allocated(images.device))


def measure_lifting(cfg: BenchConfig, variants: list[Variant], images: torch.Tensor, batch: int) -> dict:
    """Images/s of every variant at ``batch``, timed in turns, with warm-up time, peak memory and compile
    report. Each repetition of a variant runs ``steps_per_repeat`` steps: enough to last ``min_repeat_s``
    at the speed of its last warm-up step. A variant that fails is reported with its error."""
    steppers, out = {}, {}
    images = images[:batch]
    for variant in variants:
        entry = out[variant.name] = {"model": variant.model, "settings": variant.settings, "batch": batch}
        try:
            stepper = Stepper(cfg, variant, batch)
            seconds = []
            for _ in range(max(1, cfg.warmup_steps)):  # the first step compiles (compile=True)
                start = time.perf_counter()
                losses = stepper.step(images)
                sync(images.device)
                seconds.append(time.perf_counter() - start)
            entry["warmup_s"] = sum(seconds)
            entry["first_losses"] = losses
            if not all(math.isfinite(v) for v in losses.values()):
                raise FloatingPointError(f"non-finite losses {losses}")
            wanted = math.ceil(cfg.min_repeat_s / seconds[-1]) if cfg.min_repeat_s > 0 else 1
            entry["steps_per_repeat"] = min(100, max(1, wanted))
            entry["peak_memory_bytes"] = peak_memory(stepper, images)
            entry["compile"] = stepper.compile_report()
            steppers[variant.name] = stepper
            log(f"  {variant.name} @ {batch}: warm-up {entry['warmup_s']:.1f} s")
        except Exception as error:  # noqa: BLE001 - report it and go on with the other variants
            entry["error"] = f"{type(error).__name__}: {error}"[:500]
            log(f"  {variant.name} @ {batch} FAILED: {entry['error']}")
            if images.device.type == "cuda":
                torch.cuda.empty_cache()
    rates: dict[str, list[float]] = {name: [] for name in steppers}
    for _ in range(cfg.repeats):
        for name, stepper in steppers.items():
            steps = out[name]["steps_per_repeat"]
            rates[name].append(batch * steps / timed_steps(stepper, images, steps))
    for name, values in rates.items():
        out[name]["images_per_s"] = summary(values)
        log(f"  {name} @ {batch}: {out[name]['images_per_s']['median']:.1f} images/s")
    return out


def count_flops(cfg: BenchConfig, model: str, images: torch.Tensor) -> float:
    """FLOPs per image of one full fp32 eager lifting step of ``model`` (a :class:`Variant`'s),
    counted by ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matrix products, forward and
    backward; the bilinear sampling is not counted). The optimised step does the same useful work."""
    from torch.utils.flop_counter import FlopCounterMode

    stepper = Stepper(cfg, Variant(model, model), images.shape[0])
    counter = FlopCounterMode(display=False)
    with counter:
        stepper.step(images)
    return counter.get_total_flops() / images.shape[0]


def largest_batch(cfg: BenchConfig, per_image: int | None, device: torch.device) -> int | None:
    """The largest power-of-two batch (<= max_batch) whose step should fit in 85% of the free GPU memory,
    from the peak bytes per image measured at the base batch; None off CUDA."""
    if device.type != "cuda" or not per_image:
        return None
    free, _ = torch.cuda.mem_get_info(device)
    fit = int(0.85 * free / per_image)
    batch = cfg.batch_size
    while batch * 2 <= min(fit, cfg.max_batch):
        batch *= 2
    return batch if batch > cfg.batch_size else None


def measure_large(cfg: BenchConfig, variants: list[Variant], per_image: dict[str, int | None]) -> dict:
    """Each of ``variants`` at the largest batch that fits it (halving on out-of-memory), CUDA only."""
    device = torch.device(cfg.device)
    out: dict = {}
    for variant in variants:
        batch = largest_batch(cfg, per_image.get(variant.name), device)
        while batch is not None and batch > cfg.batch_size:
            torch.cuda.empty_cache()
            images = bench_images(batch, device, seed=1)
            result = measure_lifting(cfg, [variant], images, batch)[variant.name]
            if "OutOfMemoryError" not in result.get("error", ""):
                out[variant.name] = result
                break
            batch //= 2
    return out


# -- inference ----------------------------------------------------------------------------------------------
def measure_inference(cfg: BenchConfig, images: torch.Tensor) -> dict:
    """Images/s of ``MIST.forward`` (heatmap -> top-K -> patches -> task output -> reconstruction) under
    ``torch.inference_mode`` for paper and compact, plain (fp32 eager, checks on) and optimised
    (:func:`inference_settings`: channels-last model and images, checks off, compiled networks), all four
    timed in turns after two untimed calls each (the first compiles). A repetition makes enough forward
    passes to last about ``min_repeat_s`` (from the second repetition on), so that a small model is not
    timed on caches its larger neighbour in the turn has just flushed."""
    device = images.device
    settings = inference_settings(device, cfg.inference_compile)
    fast_images = images.contiguous(memory_format=torch.channels_last)
    out: dict = {"batch": images.shape[0], "settings": settings}
    runs = {}
    for name in PRESETS:
        torch.manual_seed(0)
        plain = MIST(cfg.models[name]).to(device).eval()
        fast = copy.deepcopy(plain).to(memory_format=torch.channels_last)
        if settings["compile"]:
            fast.heatmap_net.compile(dynamic=False)
            fast.task_net.compile(dynamic=False)
        runs[name] = (plain, images, False)
        runs[f"{name}_optimized"] = (fast, fast_images, True)

    def forward(model: MIST, x: torch.Tensor, optimised: bool) -> torch.Tensor:
        if not optimised:
            return model(x).reconstruction
        autocast = torch.autocast(device.type, dtype=torch.bfloat16) if settings["amp"] else nullcontext()
        with checks(False), autocast:
            return model(x).reconstruction

    ready = {}
    with torch.inference_mode():
        for name, run in runs.items():
            try:
                start = time.perf_counter()
                for _ in range(2):
                    forward(*run)
                sync(device)
                out[name] = {"warmup_s": time.perf_counter() - start}
                if run[2] and settings["compile"]:
                    out[name]["compiled"] = is_compiled(run[0].heatmap_net) and is_compiled(run[0].task_net)
                ready[name] = run
                log(f"  inference {name}: warm-up {out[name]['warmup_s']:.1f} s")
            except Exception as error:  # noqa: BLE001 - report it and go on with the others
                out[name] = {"error": f"{type(error).__name__}: {error}"[:500]}
                log(f"  inference {name} FAILED: {out[name]['error']}")
        rates: dict[str, list[float]] = {name: [] for name in ready}
        calls = {name: 1 for name in ready}  # forward passes a repetition makes: about min_repeat_s long
        for _ in range(cfg.inference_repeats):
            for name, run in ready.items():
                sync(device)
                start = time.perf_counter()
                for _ in range(calls[name]):
                    forward(*run)
                sync(device)
                elapsed = time.perf_counter() - start
                rates[name].append(calls[name] * images.shape[0] / elapsed)
                if cfg.min_repeat_s > 0:
                    calls[name] = max(calls[name], math.ceil(cfg.min_repeat_s * calls[name] / elapsed))
    for name, values in rates.items():
        out[name]["images_per_s"] = summary(values)
        log(f"  inference {name}: {out[name]['images_per_s']['median']:.1f} images/s")
    return out


# -- time to quality ----------------------------------------------------------------------------------------
def time_to_quality(cfg: BenchConfig, settings: dict) -> dict:
    """Wall time for the compact CPU recipe (``recipe("reconstruct", "mnist-hard", "mist", budget="cpu")``)
    trained with the switches ``settings`` to reach validation IoU>=50% >= ``cfg.ttq_target``.

    The clock starts before the training and validation images are generated (no cache); the validation
    measurement (:func:`mistlib.evaluation.measure` on ``ttq_eval_size`` images of ``VALIDATION_SEED``, every
    ``ttq_eval_every`` steps) is included. It stops at the target, at the first measurement past
    ``ttq_limit_s`` or at the end of the recipe, and never reports a target it did not reach
    (``time_to_quality_s`` is then None and ``iou50`` the last value measured).
    """
    os.environ.setdefault("MIST_QUIET", "1")
    experiment = recipe("reconstruct", "mnist-hard", "mist", budget="cpu")
    if cfg.ttq_model is not None:
        experiment = dataclasses.replace(experiment, model=cfg.ttq_model)
    train = {**experiment.train, **cfg.ttq_train, **settings, "device": cfg.device}
    train["log_every"] = cfg.ttq_eval_every
    experiment = dataclasses.replace(experiment, train=train)
    steps, train_size = train["steps"], cfg.ttq_train_size or experiment.train_size
    dataset = DATASETS[experiment.data]
    start = time.perf_counter()
    images = dataset(split="train", size=train_size, seed=experiment.seed, cache=False).images
    validation = dataset(split="test", size=cfg.ttq_eval_size, seed=VALIDATION_SEED, cache=False)
    val = dataset_tensors(validation)
    data_s = time.perf_counter() - start
    trainer = build_trainer(experiment, build_model(experiment))
    history: list[dict] = []
    metrics: dict = {"iou50": None, "rmse": None}
    reached = False
    while trainer.step < steps:
        trainer.fit(images, None, steps=min(steps, trainer.step + cfg.ttq_eval_every))
        metrics = measure(trainer.model, experiment, *val)
        elapsed = time.perf_counter() - start
        history.append(
            {
                "step": trainer.step,
                "elapsed_s": round(elapsed, 2),
                "iou50": round(metrics["iou50"], 4),
                "rmse": round(metrics["rmse"], 5),
            }
        )
        log(f"  ttq: step {trainer.step}, {elapsed:.0f} s, IoU>=50% {metrics['iou50']:.3f}")
        if metrics["iou50"] >= cfg.ttq_target:
            reached = True
            break
        if elapsed >= cfg.ttq_limit_s:
            break
    elapsed = time.perf_counter() - start
    return {
        "reached": reached,
        "time_to_quality_s": round(elapsed, 2) if reached else None,
        "target_iou50": cfg.ttq_target,
        "iou50": metrics["iou50"],
        "rmse": metrics["rmse"],
        "steps": trainer.step,
        "recipe_steps": steps,
        "warmup_steps": train.get("warmup_steps", 0),
        "batch_size": train["batch_size"],
        "elapsed_s": round(elapsed, 2),
        "data_generation_s": round(data_s, 2),
        "limit_s": cfg.ttq_limit_s,
        "train_size": train_size,
        "eval_size": cfg.ttq_eval_size,
        "eval_every": cfg.ttq_eval_every,
        "settings": settings,
        "history": history,
    }


# -- the run --------------------------------------------------------------------------------------------
def check_targets(results: dict) -> dict | None:
    """Each target of :data:`TARGETS` with the figure measured and whether it is met; None unless this is
    a full CPU run at batch 32 (the conditions the targets are stated for; a quick run does not compile)."""
    if results["quick"] or results["device_type"] != "cpu" or results["config"]["batch_size"] != 32:
        return None
    lifting = results.get("lifting_images_per_s") or {}
    inference = results.get("inference_images_per_s") or {}
    measured = {
        "compact_lifting_images_per_s": lifting.get("compact_optimized"),
        "compact_inference_images_per_s": inference.get("compact_optimized"),
        "paper_vs_frozen_paper": (results.get("speedups") or {}).get("paper_optimized_vs_frozen_paper"),
    }
    return {
        key: {
            "target": target,
            "measured": measured[key],
            "met": None if measured[key] is None else measured[key] >= target,
        }
        for key, target in TARGETS.items()
    }


def run(cfg: BenchConfig, command: str = "", on_section=lambda results: None) -> dict:
    """Measure every section of ``cfg.sections`` and return the results dict (see bench/README.md).

    A section that fails is reported under ``errors`` and the others still run; ``on_section(results)``
    is called after each section (the command line saves the json there, so that a run stopped by a time
    limit keeps what it measured)."""
    started = time.perf_counter()
    device = torch.device(cfg.device)
    raise_recompile_limit()
    name = device_name(device)
    peak = peak_flops(name)
    variants = lifting_variants(device, cfg.ablation, cfg.frozen_paper is not None)
    results: dict = {
        "schema": SCHEMA,
        "device": name,
        "device_type": device.type,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": str(torch.__version__),
        "python": platform.python_version(),
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "command": command,
        "quick": cfg.quick,
        "load_average_before": list(os.getloadavg()),
        "backend_flags": {
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        },
        "config": dataclasses.asdict(cfg),
        "frozen_recipe": {**OLD_RECIPE, **cfg.frozen},
        "optimized_settings": optimized_settings(device),
        "inference_settings": inference_settings(device, cfg.inference_compile),
        "targets": TARGETS,
        "lifting_images_per_s": None,
        "speedups": None,
        "inference_images_per_s": None,
        "peak_memory_bytes_per_image": None,
        "flops_per_image": None,
        "tflops_achieved": None,
        "peak_tflops": peak / 1e12 if peak else None,
        "mfu": None,
        "time_to_quality_s": None,
        "targets_met": None,
    }

    def train_section() -> None:
        log(f"lifting steps at batch {cfg.batch_size} on {name}: {', '.join(v.name for v in variants)}")
        images = bench_images(cfg.batch_size, device)
        lifting = measure_lifting(cfg, variants, images, cfg.batch_size)
        results["lifting"] = lifting
        ips = {n: entry.get("images_per_s", {}).get("median") for n, entry in lifting.items()}
        results["lifting_images_per_s"] = ips
        speedups = {
            "compact_optimized_vs_frozen": ratio(ips.get("compact_optimized"), ips.get("frozen")),
            "paper_vs_frozen": ratio(ips.get("paper"), ips.get("frozen")),
            "compact_vs_frozen": ratio(ips.get("compact"), ips.get("frozen")),
            "paper_vs_frozen_paper": ratio(ips.get("paper"), ips.get("frozen_paper")),
            "compact_optimized_vs_compact": ratio(ips.get("compact_optimized"), ips.get("compact")),
        }
        if "paper_optimized" in ips:
            speedups["paper_optimized_vs_paper"] = ratio(ips["paper_optimized"], ips.get("paper"))
            paper_optimized, frozen_paper = ips["paper_optimized"], ips.get("frozen_paper")
            speedups["paper_optimized_vs_frozen_paper"] = ratio(paper_optimized, frozen_paper)
        results["speedups"] = speedups
        per_image = {
            n: (entry.get("peak_memory_bytes") or 0) // cfg.batch_size or None for n, entry in lifting.items()
        }
        results["peak_memory_bytes_per_image"] = per_image if device.type == "cuda" else None
        log("counting FLOPs")
        models = {v.name: v.model for v in variants}
        flops = {m: count_flops(cfg, m, images[:2]) for m in dict.fromkeys(models.values())}
        results["flops_per_image"] = flops
        results["tflops_achieved"] = {n: v * flops[models[n]] / 1e12 if v else None for n, v in ips.items()}
        if peak:
            results["mfu"] = {n: v * flops[models[n]] / peak if v else None for n, v in ips.items()}
        if cfg.large_batch and device.type == "cuda":
            on_section(results)  # keep what is measured so far: the largest batch takes a while
            log("largest batch")
            large = measure_large(cfg, [v for v in variants if v.model == "paper"], per_image)
            for entry in large.values():
                rate = entry.get("images_per_s", {}).get("median")
                entry["tflops_achieved"] = rate * flops["paper"] / 1e12 if rate else None
                entry["mfu"] = rate * flops["paper"] / peak if rate and peak else None
            results["lifting_large_batch"] = large

    def inference_section() -> None:
        log(f"inference at batch {cfg.inference_batch}")
        inference = measure_inference(cfg, bench_images(cfg.inference_batch, device, seed=2))
        results["inference"] = inference
        results["inference_images_per_s"] = {
            n: inference[n].get("images_per_s", {}).get("median") for n in INFERENCE_RUNS
        }

    def ttq_section() -> None:
        log(f"time to quality (limit {cfg.ttq_limit_s:.0f} s)")
        ttq = time_to_quality(cfg, optimized_settings(device))
        results["time_to_quality"] = ttq
        results["time_to_quality_s"] = ttq["time_to_quality_s"]

    sections = {"train": train_section, "inference": inference_section, "ttq": ttq_section}
    results["errors"] = {}
    for section in cfg.sections:
        try:
            sections[section]()
        except Exception as error:  # noqa: BLE001 - keep the other sections' results
            results["errors"][section] = f"{type(error).__name__}: {error}"[:1000]
            log(f"section {section} FAILED: {results['errors'][section]}")
            if device.type == "cuda":
                torch.cuda.empty_cache()
        results["targets_met"] = check_targets(results)
        results["load_average_after"] = list(os.getloadavg())
        results["elapsed_s"] = round(time.perf_counter() - started, 1)
        results["notes"] = notes(results)
        on_section(results)
    return results


def notes(results: dict) -> list[str]:
    """Plain-language caveats stored with the results."""
    out = []
    if results["device_type"] == "cpu":
        out.append(
            f"CPU run ({results['cpu']}, {results['cpu_count']} cores, {results['torch_threads']} torch "
            f"threads, load average {results['load_average_before'][0]:.1f} before / "
            f"{results['load_average_after'][0]:.1f} after): the variants were timed in turns, so their "
            "ratios hold even where other processes shared the cores; absolute numbers need idle cores."
        )
    batch = results["config"]["batch_size"]
    if results.get("lifting") and batch != OLD_RECIPE["batch_size"]:
        out.append(f"The frozen old step ran at batch {batch}, as the others (its recipe had batch 16).")
    ttq = results.get("time_to_quality")
    if ttq and not ttq["reached"]:
        out.append(
            f"Time to quality NOT reached: validation IoU>=50% {ttq['iou50']} < {ttq['target_iou50']} after "
            f"{ttq['steps']} of {ttq['recipe_steps']} steps ({ttq['elapsed_s']:.0f} s, limit "
            f"{ttq['limit_s']:.0f} s)."
        )
    return out


def slug(name: str) -> str:
    """A file-name form of a device name: ``NVIDIA H100 80GB HBM3`` -> ``nvidia-h100-80gb-hbm3``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "device"


def save(results: dict, directory: Path = RESULTS_DIR) -> Path:
    """Write ``<device>[-quick]-<date>[-<sections>].json`` into ``directory``; return its path.

    The sections appear in the name only when a run measured some of them (a GPU session may split the
    suite over two commands to stay under a per-command time limit)."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = slug(results["device"]) + ("-quick" if results["quick"] else "")
    sections = results["config"]["sections"]
    part = "" if set(sections) == set(SECTIONS) else "-" + "+".join(sections)
    path = directory / f"{stem}-{results['date'][:10]}{part}.json"
    path.write_text(json.dumps(results, indent=1, default=str) + "\n")
    return path


# -- the README table -------------------------------------------------------------------------------------
def _fmt(value, digits: int = 1, scale: float = 1.0, unit: str = "") -> str:
    if value is None:
        return "–"
    return f"{value / scale:,.{digits}f}{unit}"


def _kind(r: dict) -> str:
    """``quick`` or ``full``, and the sections when a run measured only some."""
    kind = "quick" if r["quick"] else "full"
    sections = r["config"].get("sections", SECTIONS)
    if set(sections) != set(SECTIONS):
        kind += ": " + ", ".join(sections)
    return kind


def _ttq_text(ttq: dict | None, metric: str = "iou50") -> str:
    if not ttq:
        return "–"
    if ttq.get("reached"):
        return f"{ttq['time_to_quality_s']:.0f} s ({ttq['steps']} steps)"
    value = ttq.get(metric)
    shown = "–" if value is None else f"{value:.3f}"
    name = "IoU" if metric == "iou50" else "RMSE"
    return f"not reached: {name} {shown} after {ttq['steps']} steps, {ttq['elapsed_s']:.0f} s"


def render_table(all_results: list[dict]) -> str:
    """A markdown table of schema-2 results, one row per results file (newest first)."""
    lines = [
        "| date | device | torch | run | batch | lifting img/s: frozen | frozen, paper networks | paper "
        "| paper-opt | compact | compact-opt | compact-opt ÷ frozen | paper ÷ frozen, paper networks "
        "| paper-opt ÷ frozen, paper networks | inference img/s compact → opt | paper → opt "
        f"| time to IoU≥50% ≥ {IOU_TARGET} | targets met: lifting ≥ 150 / inference ≥ 1,000 / paper ≥ 2× |",
        "|" + "---|" * 18,
    ]
    for r in sorted(all_results, key=lambda r: r["date"], reverse=True):
        ips = r.get("lifting_images_per_s") or {}
        speed = r.get("speedups") or {}
        inf = r.get("inference_images_per_s") or {}
        met = r.get("targets_met")
        met_txt = "–"
        if met:
            marks = {True: "yes", False: "no", None: "–"}
            met_txt = " / ".join(marks[(met.get(key) or {}).get("met")] for key in TARGETS)
        lines.append(
            f"| {r['date'][:10]} | {r['device']} | {r['torch']} | {_kind(r)} | {r['config']['batch_size']} "
            f"| {_fmt(ips.get('frozen'), 2)} | {_fmt(ips.get('frozen_paper'), 2)} "
            f"| {_fmt(ips.get('paper'), 2)} "
            f"| {_fmt(ips.get('paper_optimized'), 2)} | {_fmt(ips.get('compact'))} "
            f"| {_fmt(ips.get('compact_optimized'))} "
            f"| {_fmt(speed.get('compact_optimized_vs_frozen'), unit='×')} "
            f"| {_fmt(speed.get('paper_vs_frozen_paper'), 2, unit='×')} "
            f"| {_fmt(speed.get('paper_optimized_vs_frozen_paper'), 2, unit='×')} "
            f"| {_fmt(inf.get('compact'))} → {_fmt(inf.get('compact_optimized'))} "
            f"| {_fmt(inf.get('paper'))} → {_fmt(inf.get('paper_optimized'))} "
            f"| {_ttq_text(r.get('time_to_quality'))} | {met_txt} |"
        )
    return "\n".join(lines)


def render_legacy_table(all_results: list[dict]) -> str:
    """The table of schema-1 results (issue 6: fp32 reference vs optimised step), newest first."""
    lines = [
        "| date | device | torch | run | train img/s ref → opt (batch) | speedup | large batch ref → opt |"
        " inference img/s ref → opt | TFLOP/s opt (MFU) | peak MiB/img ref / opt | time to RMSE ≤ 0.089 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(all_results, key=lambda r: r["date"], reverse=True):
        ips = r.get("train_step_images_per_s") or {}
        large = r.get("train_step_large_batch") or {}
        large_txt = "–"
        if large.get("reference") or large.get("optimized"):
            parts = []
            for n in ("reference", "optimized"):
                entry = large.get(n) or {}
                rate = (entry.get("images_per_s") or {}).get("median")
                parts.append(f"{_fmt(rate)} ({entry.get('batch', '–')})")
            large_txt = " → ".join(parts)
        inf, batch = r.get("inference_images_per_s") or {}, r["config"]["batch_size"]
        tflops = (r.get("tflops_achieved") or {}).get("optimized")
        mfu = (r.get("mfu") or {}).get("optimized")
        tflops_txt = _fmt(tflops, 2) + (f" ({100 * mfu:.1f}%)" if mfu else "")
        mem = r.get("peak_memory_bytes_per_image") or {}
        mem_txt = " / ".join(_fmt(mem.get(n), 1, 2**20) for n in ("reference", "optimized")) if mem else "–"
        lines.append(
            f"| {r['date'][:10]} | {r['device']} | {r['torch']} | {_kind(r)} "
            f"| {_fmt(ips.get('reference'), 2)} → {_fmt(ips.get('optimized'), 2)} ({batch}) "
            f"| {_fmt(r.get('train_step_speedup'), 2, unit='×')} | {large_txt} "
            f"| {_fmt(inf.get('reference'))} → {_fmt(inf.get('optimized'))} "
            f"| {tflops_txt} | {mem_txt} | {_ttq_text(r.get('time_to_quality'), 'rmse')} |"
        )
    return "\n".join(lines)


LEGACY_INTRO = (
    "Earlier runs (schema 1, issue 6: the fp32 eager step of the GPU recipe vs its speed switches, before "
    "the frozen copy; time to test RMSE ≤ 0.089):"
)


def render_results(results: list[dict]) -> str:
    """The markdown between the README's markers: the table of current results, then the legacy one."""
    current = [r for r in results if r.get("schema", 1) >= 2]
    legacy = [r for r in results if r.get("schema", 1) < 2]
    text = render_table(current)
    if not current:
        text += "\n\n(No run of this suite yet: `python -m bench.run --device cpu` on idle cores.)"
    if legacy:
        text += f"\n\n{LEGACY_INTRO}\n\n{render_legacy_table(legacy)}"
    return text


def render_readme(results_dir: Path = RESULTS_DIR, readme: Path = README) -> None:
    """Replace the text between the README's table markers with :func:`render_results` of every result."""
    results = [json.loads(p.read_text()) for p in sorted(results_dir.glob("*.json"))]
    start, end = "<!-- results:start -->", "<!-- results:end -->"
    text = readme.read_text()
    before, rest = text.split(start, 1)
    _, after = rest.split(end, 1)
    readme.write_text(f"{before}{start}\n{render_results(results)}\n{end}{after}")


EPILOG = f"""\
sections (one process; the variants of a section are timed in turns):
  train      lifting images/s at batch 32 (medians of 7 repetitions of >= 2 s): the frozen old
             --budget cpu step (bench/frozen_step.py), the same old code on the paper networks,
             the paper and compact presets in fp32 eager, compact with optimized_settings(device)
  inference  MIST.forward under torch.inference_mode, paper and compact, plain vs optimised
             (channels-last, tensor checks off, torch.compile of both networks; bf16 on CUDA)
  ttq        wall time, from before data generation, for recipe("reconstruct", "mnist-hard",
             "mist", budget="cpu") with the optimised switches to reach validation IoU>=50%
             >= {IOU_TARGET} (300 images, measured every 250 steps); stops at --ttq-limit

examples:
  python -m bench.run --device cpu           full CPU run (about 40 min at most; idle cores)
  python -m bench.run --device cpu --quick   plumbing check (< 3 min; not a measurement)
  python -m bench.run --render               rewrite bench/README.md's table from bench/results/

results: bench/results/<device>[-quick]-<date>[-<sections>].json (bench/README.md explains them)
"""


def main(argv: list[str] | None = None) -> int:
    """The command line (``python -m bench.run --help``); returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    parser.add_argument("--device", choices=["cuda", "cpu"], default=None, help="default: cuda if available")
    parser.add_argument(
        "--quick", action="store_true", help="short run (CPU: < 3 min; no compiling, a 45 s ttq attempt)"
    )
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma list of train,inference,ttq")
    parser.add_argument("--batch", type=int, default=None, help="lifting batch (default 32)")
    parser.add_argument(
        "--ttq-limit", type=float, default=None, help="seconds for the time-to-quality run (CPU default 1800)"
    )
    parser.add_argument("--no-compile", action="store_true", help="optimised inference without torch.compile")
    parser.add_argument(
        "--ablation", action="store_true", help="also compact with each switch added one at a time"
    )
    parser.add_argument("--out", type=Path, default=None, help="also copy the results json into this folder")
    parser.add_argument("--render", action="store_true", help="only rewrite the README table from results/")
    args = parser.parse_args(argv)
    if args.render:
        render_readme(RESULTS_DIR, README)
        return 0
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cfg = BenchConfig.for_device(device, args.quick)
    cfg.sections = tuple(s for s in args.sections.split(",") if s)
    unknown = set(cfg.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}")
    if args.batch is not None:
        cfg.batch_size = args.batch
    if args.ttq_limit is not None:
        cfg.ttq_limit_s = args.ttq_limit
    if args.no_compile:
        cfg.inference_compile = False
    if args.ablation:
        cfg.ablation = True
    command = "python -m bench.run " + " ".join(argv if argv is not None else sys.argv[1:])

    def keep(results: dict) -> None:
        save(results, RESULTS_DIR)
        if args.out is not None:
            save(results, args.out)

    results = run(cfg, command=command.strip(), on_section=keep)
    path = save(results, RESULTS_DIR)
    render_readme(RESULTS_DIR, README)
    print(render_table([results]))
    print(f"wrote {path} ({results['elapsed_s']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
