"""How long one lifting step of a cpu recipe takes with a few changes to it, timed side by side.

A diagnostic for choices that trade time for quality (research/README.md §23): every ``--variant`` is a
``recipe(--task, --data, "mist", budget="cpu")`` with the MISTConfig overrides of its ``"model"`` and the
trainer overrides of its ``"train"``, built from the same seed, and fed the same ``--batch`` training
images. After ``--warm`` untimed lifting steps each, the variants take turns: one repetition is ``--steps``
lifting steps of one variant, and ``--reps`` rounds of repetitions give each variant's median seconds per
step, so that a change in the machine's load hits all of them alike. The warm-up of the task network is
skipped (it is not what is timed) and eta starts from scratch (its weights do not change the step's work).

    OMP_NUM_THREADS=1 python research/step_time.py --task classify \\
        --variant '{}' '{"model": {"task_width": 24}}' \\
        '{"model": {"task_width": 24}, "train": {"refine_iterations": 1}}'

Prints one JSON line per variant: its overrides, the median and every repetition's seconds per step, and
the ratio of its median to the first variant's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time

import torch

from mistlib.experiments import build_model, build_trainer, dataset_tensors, make_dataset, recipe


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=("classify", "reconstruct"), default="classify")
    parser.add_argument("--data", choices=("mnist-hard", "mnist-easy", "gabor"), default="mnist-hard")
    parser.add_argument(
        "--variant",
        nargs="+",
        type=json.loads,
        default=[{}],
        help='each a JSON object {"model": {...}, "train": {...}} of overrides; the first is the reference',
    )
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--warm", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--reps", type=int, default=4)
    args = parser.parse_args(argv)
    base = recipe(args.task, args.data, "mist", budget="cpu")
    images, _, labels, _ = dataset_tensors(make_dataset(base, "train", args.batch))
    batch_labels = labels if args.task == "classify" else None
    trainers = []
    for variant in args.variant:
        experiment = dataclasses.replace(
            base,
            model=dataclasses.replace(base.model, **variant.get("model", {})),
            train={**base.train, "warmup_steps": 0, **variant.get("train", {})},
            init_heatmap=None,
        )
        trainers.append(build_trainer(experiment, build_model(experiment)))
    for trainer in trainers:
        for _ in range(args.warm):
            trainer.train_step(images, batch_labels)
    seconds: list[list[float]] = [[] for _ in trainers]
    for _ in range(args.reps):
        for trainer, times in zip(trainers, seconds, strict=True):
            start = time.perf_counter()
            for _ in range(args.steps):
                trainer.train_step(images, batch_labels)
            times.append((time.perf_counter() - start) / args.steps)
    reference = statistics.median(seconds[0])
    for variant, times in zip(args.variant, seconds, strict=True):
        median = statistics.median(times)
        row = {
            "variant": variant,
            "seconds_per_step": round(median, 3),
            "ratio": round(median / reference, 2),
            "repetitions": [round(t, 3) for t in times],
            "threads": torch.get_num_threads(),
        }
        print(json.dumps(row))


if __name__ == "__main__":
    main()
