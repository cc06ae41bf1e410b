"""Benchmark suite: one process measures, side by side, the fp32 eager lifting step and the same step with its
speed switches on (:func:`optimized_settings`), inference, memory, FLOP/s and time to quality.

    python -m bench.run [--device cuda|cpu] [--quick] [--out DIR] [--sections train,inference,ttq]
    python -m bench.run --render          # rewrite the table of bench/README.md from bench/results/*.json

Every throughput is the median over ``repeats`` timed repetitions (each of ``steps_per_repeat`` steps),
with the spread (min, max and every run) next to it. The variants are timed in turns (reference,
optimised, reference, ...) so that a change in the machine's load hits them alike. Throughput steps are
full lifting steps (all three stages of Algorithm 1: ``warmup_steps=0``), K = 9, 80 x 80 MNIST hard.
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

from mistlib.checks import checks
from mistlib.data import MNISTHard
from mistlib.experiments import recipe
from mistlib.lifting import LiftingConfig, LiftingTrainer
from mistlib.metrics import RMSE
from mistlib.model import MIST, MISTConfig

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
README = BENCH_DIR / "README.md"
SCHEMA = 1
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
SECTIONS = ("train", "inference", "ttq")
RMSE_TARGET = 0.089  # MNIST hard, Table 1 (the paper's MIST row)


def optimized_settings(device: torch.device | str) -> dict[str, bool]:
    """The :class:`~mistlib.lifting.LiftingConfig` speed switches measured for a device type.

    CUDA: all of them (bf16 autocast, channels-last, fused Adam, ``torch.compile``). CPU: those that
    measured at least as fast as fp32 eager on the project's 2-core CPU (no bf16 units; compiling takes
    minutes, more than a short run saves).

    Example:
        >>> optimized_settings("cpu")
        {'channels_last': True, 'fused_adam': True}
    """
    if torch.device(device).type == "cuda":
        return {"amp": True, "channels_last": True, "fused_adam": True, "compile": True}
    return {"channels_last": True, "fused_adam": True}


def _lifting_settings() -> dict:
    """The lifting hyper-parameters of the GPU recipe (``recipe("reconstruct", "mnist-hard", "mist")``)."""
    train = dict(recipe("reconstruct", "mnist-hard", "mist").train)
    return {k: train[k] for k in ("refine_iterations", "refine_step", "lift_weighting")}


@dataclass
class BenchConfig:
    """What one benchmark run measures, and how long it may take.

    ``for_device(device, quick)`` gives the standard settings; :meth:`tiny` the seconds-long test setting.
    """

    device: str = "cpu"
    quick: bool = False
    model: MISTConfig = field(default_factory=MISTConfig)  # K = 9, 80 x 80, the §4 / §8 networks
    lifting: dict = field(default_factory=_lifting_settings)  # stage-2 iterations and step, lift weighting
    batch_size: int = 32
    large_batch: bool = True  # also measure the largest batch that fits (CUDA only)
    max_batch: int = 1024
    repeats: int = 5
    steps_per_repeat: int = 5
    warmup_steps: int = 2  # untimed steps per variant (the first one compiles)
    inference_batch: int = 1024
    inference_repeats: int = 5
    variants: bool = True  # the ablation: each optimisation added one at a time
    compile_variants: bool = True  # the ablation's compiled variants (minutes of compiling on a CPU)
    ttq_limit_s: float = 300.0
    ttq_eval_every: int = 250  # steps between two test evaluations
    ttq_eval_size: int = 1000
    ttq_train_size: int = 10_000
    ttq_steps: int | None = None  # cap on the steps (None: the recipe's 6,000)
    ttq_target: float = RMSE_TARGET
    sections: tuple[str, ...] = SECTIONS

    @classmethod
    def for_device(cls, device: str, quick: bool = False) -> BenchConfig:
        """Standard settings: full on CUDA; on the CPU small batches, and ``quick`` for a < 2 min run."""
        if device == "cuda":
            if quick:
                return cls(device=device, quick=True, repeats=3, variants=False, ttq_limit_s=60.0)
            return cls(device=device)
        if quick:
            return cls(
                device=device,
                quick=True,
                batch_size=4,
                large_batch=False,
                repeats=3,
                steps_per_repeat=1,
                warmup_steps=1,
                inference_batch=8,
                inference_repeats=7,
                variants=False,
                ttq_limit_s=25.0,
                ttq_eval_every=10,
                ttq_eval_size=50,
                ttq_train_size=512,
            )
        return cls(
            device=device,
            batch_size=8,
            large_batch=False,
            repeats=5,
            steps_per_repeat=2,
            inference_batch=32,
            ttq_limit_s=120.0,
            ttq_eval_every=25,
            ttq_eval_size=200,
            ttq_train_size=2048,
        )

    @classmethod
    def tiny(cls) -> BenchConfig:
        """A seconds-long CPU run on a tiny model, for the tests: checks plumbing, not speed."""
        return cls(
            device="cpu",
            quick=True,
            model=MISTConfig(heatmap_channels=4, heatmap_blocks=1, task_width=2),
            lifting={"refine_iterations": 2, "refine_step": 0.5, "lift_weighting": 5.0},
            batch_size=2,
            large_batch=False,
            repeats=2,
            steps_per_repeat=1,
            warmup_steps=1,
            inference_batch=2,
            inference_repeats=2,
            variants=True,
            compile_variants=False,
            ttq_limit_s=60.0,  # generous: the 6-step cap, not the clock, must end it on a loaded machine
            ttq_eval_every=2,
            ttq_eval_size=4,
            ttq_train_size=8,
            ttq_steps=6,
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


def bench_images(size: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    """``size`` MNIST-hard training images (size, 1, 80, 80), freshly generated, on ``device``."""
    return MNISTHard("train", size=size, seed=seed, cache=False).images.to(device)


def raise_recompile_limit(limit: int = 64) -> None:
    """Let dynamo keep more compiled variants per function: every trainer of a run (variants, largest
    batch, time to quality) compiles the same code objects, and past the default limit of 8 dynamo would
    silently run the rest eagerly."""
    config = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):  # the newer name first (torch >= 2.6)
        if hasattr(config, name):
            setattr(config, name, max(limit, getattr(config, name)))


def variant_settings(device: torch.device, ablation: bool, compiled: bool = True) -> dict[str, dict]:
    """The lifting options of every variant timed: the reference, the optimised path, and (``ablation``)
    the optimisations added one at a time (``compiled``: with the compiled variants)."""
    variants: dict[str, dict] = {"reference": {}, "optimized": optimized_settings(device)}
    if ablation:
        steps = [("fused_adam", {"fused_adam": True}), ("+channels_last", {"channels_last": True})]
        if device.type == "cuda":
            steps.append(("+amp", {"amp": True}))
        settings: dict = {}
        for name, extra in steps:
            settings = {**settings, **extra}
            variants[name] = dict(settings)
        if compiled and device.type == "cpu":  # compiling takes minutes on a small CPU: not in its default
            variants["optimized+compile"] = {**optimized_settings(device), "compile": True}
    return variants


def make_trainer(cfg: BenchConfig, settings: dict, state: dict, batch: int) -> LiftingTrainer:
    """A lifting trainer (full lifting steps: no warm-up) on a copy of the weights ``state``."""
    model = MIST(cfg.model)
    model.load_state_dict(state)
    config = LiftingConfig(device=cfg.device, batch_size=batch, warmup_steps=0, **cfg.lifting, **settings)
    return LiftingTrainer(model, "reconstruct", config)


def compile_report(trainer: LiftingTrainer) -> dict | None:
    """Whether both networks run through ``torch.compile`` (None when the step does not compile)."""
    if not trainer.config.compile:
        return None
    networks = (trainer.model.heatmap_net, trainer.model.task_net)
    return {"compiled": all(getattr(net, "_compiled_call_impl", None) is not None for net in networks)}


def timed_steps(trainer: LiftingTrainer, images: torch.Tensor, steps: int) -> float:
    """Seconds for ``steps`` training steps on ``images`` (synchronised before and after)."""
    device = images.device
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(images, None)
        trainer.step += 1
    sync(device)
    return time.perf_counter() - start


def peak_memory(trainer: LiftingTrainer, images: torch.Tensor) -> int | None:
    """Peak bytes allocated on the GPU during one training step (weights and optimiser states included)."""
    if images.device.type != "cuda":
        return None
    sync(images.device)
    torch.cuda.reset_peak_memory_stats(images.device)
    trainer.train_step(images, None)
    sync(images.device)
    return int(torch.cuda.max_memory_allocated(images.device))


# -- sections -------------------------------------------------------------------------------------------
def measure_train(
    cfg: BenchConfig, variants: dict[str, dict], images: torch.Tensor, state: dict, batch: int
) -> dict[str, dict]:
    """Throughput (images/s) of every variant at ``batch``, timed in turns; plus warm-up time, peak
    memory and compile report. A variant that fails is reported with its error, not measured."""
    trainers, out = {}, {}
    for name, settings in variants.items():
        out[name] = {"settings": settings, "batch": batch}
        try:
            trainer = make_trainer(cfg, settings, state, batch)
            start = time.perf_counter()
            for _ in range(cfg.warmup_steps):  # the first step compiles (compile=True)
                losses = trainer.train_step(images[:batch], None)
                trainer.step += 1
            sync(images.device)
            out[name]["warmup_s"] = time.perf_counter() - start
            out[name]["first_losses"] = losses
            if not all(math.isfinite(v) for v in losses.values()):
                raise FloatingPointError(f"non-finite losses {losses}")
            out[name]["peak_memory_bytes"] = peak_memory(trainer, images[:batch])
            out[name]["compile"] = compile_report(trainer)
            trainers[name] = trainer
            log(f"  {name} @ {batch}: warm-up {out[name]['warmup_s']:.1f} s")
        except Exception as error:  # noqa: BLE001 - report it and go on with the other variants
            out[name]["error"] = f"{type(error).__name__}: {error}"[:500]
            log(f"  {name} @ {batch} FAILED: {out[name]['error']}")
            if images.device.type == "cuda":
                torch.cuda.empty_cache()
    rates: dict[str, list[float]] = {name: [] for name in trainers}
    for _ in range(cfg.repeats):
        for name, trainer in trainers.items():
            seconds = timed_steps(trainer, images[:batch], cfg.steps_per_repeat)
            rates[name].append(batch * cfg.steps_per_repeat / seconds)
    for name, values in rates.items():
        out[name]["images_per_s"] = summary(values)
        log(f"  {name} @ {batch}: {out[name]['images_per_s']['median']:.1f} images/s")
    return out


def count_flops(cfg: BenchConfig, state: dict, images: torch.Tensor) -> float:
    """FLOPs per image of one full lifting step, counted on the fp32 eager reference with
    ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matrix products, forward and backward;
    the bilinear sampling is not counted). The optimised step does the same useful work."""
    from torch.utils.flop_counter import FlopCounterMode

    batch = images.shape[0]
    trainer = make_trainer(cfg, {}, state, batch)
    counter = FlopCounterMode(display=False)
    with counter:
        trainer.train_step(images, None)
    return counter.get_total_flops() / batch


def measure_inference(cfg: BenchConfig, state: dict, images: torch.Tensor) -> dict:
    """Images/s of heatmap -> top-K -> patches -> task network (-> reconstruction), reference
    (``MIST.forward``, fp32) vs the same forward with the optimised switches (layout, autocast, compile),
    tensor checks off, in turns."""
    device = images.device
    settings = optimized_settings(device)
    reference = MIST(cfg.model).to(device).eval()
    reference.load_state_dict(state)
    fast = copy.deepcopy(reference)
    if settings.get("channels_last"):
        fast.to(memory_format=torch.channels_last)
    if settings.get("compile"):
        fast.heatmap_net.compile(dynamic=False)
        fast.task_net.compile(dynamic=False)

    def fast_forward(x: torch.Tensor) -> torch.Tensor:
        autocast = torch.autocast(device.type, dtype=torch.bfloat16) if settings.get("amp") else nullcontext()
        with checks(False), autocast:
            return fast(x).reconstruction

    runs = {"reference": lambda x: reference(x).reconstruction, "optimized": fast_forward}
    out: dict = {"batch": images.shape[0], "settings": settings, "compile": None}
    rates: dict[str, list[float]] = {name: [] for name in runs}
    with torch.inference_mode():
        for name, run in runs.items():
            start = time.perf_counter()
            for _ in range(2):
                run(images)
            sync(device)
            out[f"{name}_warmup_s"] = time.perf_counter() - start
        for _ in range(cfg.inference_repeats):
            for name, run in runs.items():
                sync(device)
                start = time.perf_counter()
                run(images)
                sync(device)
                rates[name].append(images.shape[0] / (time.perf_counter() - start))
    if settings.get("compile"):
        out["compile"] = {"compiled": True}
    for name, values in rates.items():
        out[name] = summary(values)
    return out


@torch.no_grad()
def evaluate_rmse(model: MIST, images: torch.Tensor, batch: int = 250) -> float:
    """RMSE of the clamped reconstructions of ``images`` (N, 1, H, W), as ``mistlib.evaluation.evaluate``."""
    metric = RMSE()
    for start in range(0, images.shape[0], batch):
        chunk = images[start : start + batch]
        metric.update(chunk, model(chunk).reconstruction.clamp(0, 1))
    return metric.compute()


def time_to_quality(cfg: BenchConfig, settings: dict) -> dict:
    """Wall time for MIST (the GPU recipe of ``mistlib.experiments``, with the optimised step) to reach test
    RMSE <= target on MNIST hard, counted from before the data are generated; evaluation time included.

    Stops at the target, at ``ttq_limit_s`` or at the end of the recipe; never reports a target it did not
    reach (``time_to_quality_s`` is then None and ``rmse`` is the last RMSE attained).
    """
    device = torch.device(cfg.device)
    experiment = recipe("reconstruct", "mnist-hard", "mist", model=cfg.model)
    train = dict(experiment.train)
    steps = train["steps"] if cfg.ttq_steps is None else min(cfg.ttq_steps, train["steps"])
    train.update(settings, device=cfg.device, steps=steps, log_every=max(1, cfg.ttq_eval_every))
    start = time.perf_counter()
    images = MNISTHard("train", size=cfg.ttq_train_size, seed=experiment.seed, cache=False).images
    test = MNISTHard("test", size=cfg.ttq_eval_size, seed=1, cache=False).images.to(device)
    data_s = time.perf_counter() - start
    torch.manual_seed(experiment.seed)
    model = MIST(experiment.model)
    trainer = LiftingTrainer(model, "reconstruct", LiftingConfig(seed=experiment.seed, **train))
    history, rmse, reached = [], None, False
    os.environ.setdefault("MIST_QUIET", "1")
    while trainer.step < steps:
        trainer.fit(images, steps=min(steps, trainer.step + cfg.ttq_eval_every))
        rmse = evaluate_rmse(model, test)
        elapsed = time.perf_counter() - start
        history.append({"step": trainer.step, "elapsed_s": round(elapsed, 2), "rmse": round(rmse, 5)})
        log(f"  ttq: step {trainer.step}, {elapsed:.0f} s, test RMSE {rmse:.4f}")
        if rmse <= cfg.ttq_target:
            reached = True
            break
        if elapsed >= cfg.ttq_limit_s:
            break
    elapsed = time.perf_counter() - start
    return {
        "reached": reached,
        "time_to_quality_s": round(elapsed, 2) if reached else None,
        "target_rmse": cfg.ttq_target,
        "rmse": rmse,
        "steps": trainer.step,
        "recipe_steps": train["steps"] if cfg.ttq_steps is None else cfg.ttq_steps,
        "warmup_steps": train.get("warmup_steps", 0),
        "batch_size": train["batch_size"],
        "elapsed_s": round(elapsed, 2),
        "data_generation_s": round(data_s, 2),
        "limit_s": cfg.ttq_limit_s,
        "train_size": cfg.ttq_train_size,
        "eval_size": cfg.ttq_eval_size,
        "settings": settings,
        "compile": compile_report(trainer),
        "history": history,
    }


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


def measure_large(
    cfg: BenchConfig, variants: dict[str, dict], state: dict, per_image: dict[str, int | None]
) -> dict:
    """Reference and optimised at the largest batch that fits each (halving on out-of-memory)."""
    device = torch.device(cfg.device)
    out: dict = {}
    for name in ("reference", "optimized"):
        batch = largest_batch(cfg, per_image.get(name), device)
        while batch is not None and batch > cfg.batch_size:
            torch.cuda.empty_cache()
            images = bench_images(batch, device, seed=1)
            result = measure_train(cfg, {name: variants[name]}, images, state, batch)[name]
            if "OutOfMemoryError" not in result.get("error", ""):
                out[name] = result
                break
            batch //= 2
    ref, opt = (out.get(n, {}).get("images_per_s", {}).get("median") for n in ("reference", "optimized"))
    out["speedup"] = opt / ref if ref and opt else None
    return out


# -- the run --------------------------------------------------------------------------------------------
def run(cfg: BenchConfig, command: str = "", on_section=lambda results: None) -> dict:
    """Measure every section of ``cfg.sections`` and return the results dict (see bench/README.md).

    A section that fails is reported under ``errors`` and the others still run; ``on_section(results)``
    is called after each section (the command line saves the json there, so that a run stopped by a time
    limit keeps what it measured)."""
    started = time.perf_counter()
    device = torch.device(cfg.device)
    raise_recompile_limit()
    torch.manual_seed(0)
    state = {k: v.clone() for k, v in MIST(cfg.model).state_dict().items()}
    name = device_name(device)
    peak = peak_flops(name)
    variants = variant_settings(device, cfg.variants, cfg.compile_variants)
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
        "config": {
            **{k: v for k, v in dataclasses.asdict(cfg).items() if k != "model"},
            "model": dataclasses.asdict(cfg.model),
        },
        "optimized_settings": variants["optimized"],
        "train_step_images_per_s": None,
        "train_step_speedup": None,
        "inference_images_per_s": None,
        "peak_memory_bytes_per_image": None,
        "flops_per_image": None,
        "tflops_achieved": None,
        "peak_tflops": peak / 1e12 if peak else None,
        "mfu": None,
        "time_to_quality_s": None,
    }

    def train_section() -> None:
        log(f"train step at batch {cfg.batch_size} on {name}: {', '.join(variants)}")
        images = bench_images(cfg.batch_size, device)
        train = measure_train(cfg, variants, images, state, cfg.batch_size)
        results["train_step"] = train
        ips = {n: train[n].get("images_per_s", {}).get("median") for n in ("reference", "optimized")}
        results["train_step_images_per_s"] = ips
        if ips["reference"] and ips["optimized"]:
            results["train_step_speedup"] = ips["optimized"] / ips["reference"]
        per_image = {
            n: (train[n].get("peak_memory_bytes") or 0) // cfg.batch_size or None
            for n in ("reference", "optimized")
        }
        results["peak_memory_bytes_per_image"] = per_image if device.type == "cuda" else None
        log("counting FLOPs")
        flops = count_flops(cfg, state, images)
        results["flops_per_image"] = flops
        results["tflops_achieved"] = {n: v * flops / 1e12 if v else None for n, v in ips.items()}
        if peak:
            results["mfu"] = {n: v * flops / peak if v else None for n, v in ips.items()}
        if cfg.large_batch and device.type == "cuda":
            on_section(results)  # keep what is measured so far: the largest batch takes a while
            log("largest batch")
            large = measure_large(cfg, variants, state, per_image)
            for n in ("reference", "optimized"):
                rate = large.get(n, {}).get("images_per_s", {}).get("median")
                if n in large:
                    large[n]["tflops_achieved"] = rate * flops / 1e12 if rate else None
                    large[n]["mfu"] = rate * flops / peak if rate and peak else None
            results["train_step_large_batch"] = large

    def inference_section() -> None:
        log(f"inference at batch {cfg.inference_batch}")
        inference = measure_inference(cfg, state, bench_images(cfg.inference_batch, device, seed=2))
        results["inference"] = inference
        results["inference_images_per_s"] = {n: inference[n]["median"] for n in ("reference", "optimized")}

    def ttq_section() -> None:
        log(f"time to quality (limit {cfg.ttq_limit_s:.0f} s)")
        ttq = time_to_quality(cfg, variants["optimized"])
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
            f"CPU run ({results['cpu']}, {results['cpu_count']} cores, load average "
            f"{results['load_average_before'][0]:.1f} before / "
            f"{results['load_average_after'][0]:.1f} after): "
            "other processes shared the cores, so absolute numbers are noisy; the reference and optimised "
            "steps were timed in turns, so their ratio is the figure to read. No GPU: peak memory and MFU "
            "are not defined."
        )
    ttq = results.get("time_to_quality")
    if ttq and not ttq["reached"]:
        out.append(
            f"Time to quality NOT reached: test RMSE {ttq['rmse']:.4f} > {ttq['target_rmse']} after "
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
def _fmt(value, digits: int = 1, scale: float = 1.0) -> str:
    if value is None:
        return "–"
    return f"{value / scale:,.{digits}f}"


def render_table(all_results: list[dict]) -> str:
    """A markdown table, one row per results file (newest first)."""
    lines = [
        "| date | device | torch | run | train img/s ref → opt (batch) | speedup | large batch ref → opt |"
        " inference img/s ref → opt | TFLOP/s opt (MFU) | peak MiB/img ref / opt | time to RMSE ≤ 0.089 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(all_results, key=lambda r: r["date"], reverse=True):
        ips = r.get("train_step_images_per_s") or {}
        batch = r["config"]["batch_size"]
        large = r.get("train_step_large_batch") or {}
        large_txt = "–"
        if large.get("reference") or large.get("optimized"):
            parts = []
            for n in ("reference", "optimized"):
                entry = large.get(n) or {}
                rate = (entry.get("images_per_s") or {}).get("median")
                parts.append(f"{_fmt(rate)} ({entry.get('batch', '–')})")
            large_txt = " → ".join(parts)
        inf = r.get("inference_images_per_s") or {}
        tflops = (r.get("tflops_achieved") or {}).get("optimized")
        mfu = (r.get("mfu") or {}).get("optimized")
        tflops_txt = _fmt(tflops, 2) + (f" ({100 * mfu:.1f}%)" if mfu else "")
        mem = r.get("peak_memory_bytes_per_image") or {}
        mem_txt = " / ".join(_fmt(mem.get(n), 1, 2**20) for n in ("reference", "optimized")) if mem else "–"
        ttq = r.get("time_to_quality") or {}
        if ttq.get("reached"):
            ttq_txt = f"{ttq['time_to_quality_s']:.0f} s"
        elif ttq:
            ttq_txt = (
                f"not reached: RMSE {ttq['rmse']:.3f} after {ttq['steps']} steps, {ttq['elapsed_s']:.0f} s"
            )
        else:
            ttq_txt = "–"
        speed = r.get("train_step_speedup")
        kind = "quick" if r["quick"] else "full"
        sections = r["config"].get("sections", SECTIONS)
        if set(sections) != set(SECTIONS):
            kind += ": " + ", ".join(sections)
        lines.append(
            f"| {r['date'][:10]} | {r['device']} | {r['torch']} | {kind} "
            f"| {_fmt(ips.get('reference'), 2)} → {_fmt(ips.get('optimized'), 2)} ({batch}) "
            f"| {_fmt(speed, 2)}× | {large_txt} "
            f"| {_fmt(inf.get('reference'))} → {_fmt(inf.get('optimized'))} "
            f"| {tflops_txt} | {mem_txt} | {ttq_txt} |"
        )
    return "\n".join(lines)


def render_readme(results_dir: Path = RESULTS_DIR, readme: Path = README) -> None:
    """Replace the text between the README's table markers with :func:`render_table` of every result."""
    results = [json.loads(p.read_text()) for p in sorted(results_dir.glob("*.json"))]
    start, end = "<!-- results:start -->", "<!-- results:end -->"
    text = readme.read_text()
    before, rest = text.split(start, 1)
    _, after = rest.split(end, 1)
    readme.write_text(f"{before}{start}\n{render_table(results)}\n{end}{after}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default=None, help="default: cuda if available")
    parser.add_argument("--quick", action="store_true", help="small, short run (CPU: < 2 minutes)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma list of train,inference,ttq")
    parser.add_argument("--no-variants", action="store_true", help="skip the one-at-a-time ablation")
    parser.add_argument("--ttq-limit", type=float, default=None, help="seconds for the time-to-quality run")
    parser.add_argument("--out", type=Path, default=None, help="also copy the results json into this folder")
    parser.add_argument("--render", action="store_true", help="only rewrite the README table from results/")
    args = parser.parse_args(argv)
    if args.render:
        render_readme()
        return 0
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cfg = BenchConfig.for_device(device, args.quick)
    cfg.sections = tuple(s for s in args.sections.split(",") if s)
    unknown = set(cfg.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}")
    if args.no_variants:
        cfg.variants = False
    if args.ttq_limit is not None:
        cfg.ttq_limit_s = args.ttq_limit
    command = "python -m bench.run " + " ".join(argv if argv is not None else sys.argv[1:])

    def keep(results: dict) -> None:
        save(results)
        if args.out is not None:
            save(results, args.out)

    results = run(cfg, command=command.strip(), on_section=keep)
    path = save(results)
    render_readme()
    print(render_table([results]))
    print(f"wrote {path} ({results['elapsed_s']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
