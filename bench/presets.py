"""The lifting step and inference of the ``paper`` and ``compact`` presets, timed in turns on one device.

    python -m bench.presets [--batch 32] [--repeats 5] [--device cpu|cuda] [--out bench/results/presets]

Both presets run Algorithm 1 as the MNIST recipes do (K = 9, max composite, 5 x 5 NMS, N = 2 stage-2
iterations of 1 px, lift weighting 5, no warm-up) on the same batch of MNIST-hard training images; the two
are timed alternately, ``repeats`` times each after one untimed step, and the medians are reported.
Inference is ``MIST.forward`` (heatmap -> top-K -> patches -> task network -> reconstruction) under
``torch.inference_mode``. Writes ``presets-<device>-<date>.json`` into ``--out`` (default
bench/results/presets/); prints a table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from mistlib.data import MNISTHard
from mistlib.files import atomic_write
from mistlib.lifting import LiftingConfig, LiftingTrainer
from mistlib.model import MIST
from mistlib.presets import preset

NAMES = ("paper", "compact")


def _timed(fn, device: torch.device) -> float:
    """Seconds taken by ``fn()``, waiting for the device."""
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def measure(batch: int = 32, repeats: int = 5, device: str = "cpu") -> dict:
    """Median lifting-step and inference throughput (images/s) of each preset, timed in turns.

    Example:
        >>> result = measure(batch=2, repeats=1)  # doctest: +SKIP
        >>> sorted(result["lifting_images_per_s"])  # doctest: +SKIP
        ['compact', 'paper']
    """
    dev = torch.device(device)
    images = MNISTHard("train", size=batch, seed=0).images.to(dev)  # (B, 1, 80, 80)
    config = LiftingConfig(device=device, refine_iterations=2, refine_step=1.0, lift_weighting=5.0)
    trainers = {}
    for name in NAMES:
        torch.manual_seed(0)
        model = MIST(preset(name, composite="max", nms=5))
        trainers[name] = LiftingTrainer(model, "reconstruct", config)
        trainers[name].train_step(images, None)  # untimed: allocation, first-call costs
    steps: dict[str, list[float]] = {name: [] for name in NAMES}
    forwards: dict[str, list[float]] = {name: [] for name in NAMES}
    for _ in range(repeats):
        for name, trainer in trainers.items():
            steps[name].append(_timed(lambda t=trainer: t.train_step(images, None), dev))
            with torch.inference_mode():
                forwards[name].append(_timed(lambda m=trainer.model: m(images), dev))
    return {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "batch": batch,
        "repeats": repeats,
        "lifting_images_per_s": {n: batch / statistics.median(t) for n, t in steps.items()},
        "inference_images_per_s": {n: batch / statistics.median(t) for n, t in forwards.items()},
        "lifting_step_s": steps,
        "inference_s": forwards,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.presets", description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32, help="images per step (default: 32)")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per preset (default: 5)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "presets", help="results folder"
    )
    args = parser.parse_args(argv)
    result = measure(args.batch, args.repeats, args.device)
    date = datetime.date.today().isoformat()
    path = args.out / f"presets-{args.device}-{date}.json"
    atomic_write(path, lambda handle: handle.write(json.dumps(result, indent=1).encode()))
    print(f"{'preset':8s} {'lifting img/s':>14s} {'inference img/s':>16s}   (batch {args.batch}, medians)")
    for name in NAMES:
        lifting, inference = result["lifting_images_per_s"][name], result["inference_images_per_s"][name]
        print(f"{name:8s} {lifting:14.1f} {inference:16.1f}")
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
