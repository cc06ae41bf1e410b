"""Learning curves on the validation split: the harness behind research/README.md §9 onwards.

Trains one row (``recipe(task, data, method, budget="cpu", preset="compact")`` with batch 32 unless a
``--train`` override says otherwise) and, every ``--every`` steps, measures on ``--val`` fresh validation
images (seed ``VALIDATION_SEED``, never the test seed 1): IoU>=50%, the share of digits with a keypoint
within 4 px of their centre, and RMSE (reconstruction) or multiset classification accuracy. One JSON line
per measurement goes to ``research/curves/<name>.jsonl``; the final model to ``runs/research/<name>.pt``.

    python research/curves.py base --task reconstruct --steps 3000 --every 250
    python research/curves.py search --train '{"refine_optimizer": "search"}' --steps 3000
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import torch

from mistlib.evaluation import VALIDATION_SEED, measure
from mistlib.experiments import build_model, build_trainer, dataset_tensors, make_dataset, recipe, save_model

ROOT = Path(__file__).resolve().parents[1]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name")
    parser.add_argument("--task", default="reconstruct")
    parser.add_argument("--data", default="mnist-hard")
    parser.add_argument("--method", default="mist")
    parser.add_argument("--preset", default="compact")
    parser.add_argument("--train", default="{}", help="JSON overrides of the trainer config")
    parser.add_argument("--model", default="{}", help="JSON overrides of the MISTConfig")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument("--val", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--init", default=None, help="start from this checkpoint's weights")
    parser.add_argument("--init-heatmap", default=None, help="start eta from this checkpoint's heatmap net")
    parser.add_argument(
        "--state", action="store_true", help="keep the trainer's state after each measurement (to replay)"
    )
    return parser.parse_args(argv)


def setup(args: argparse.Namespace):
    """The run ``args`` describe: (experiment, trainer, training images, labels or None, validation set)."""
    torch.set_num_threads(args.threads)
    os.environ.setdefault("MIST_QUIET", "1")
    experiment = recipe(args.task, args.data, args.method, budget="cpu", preset=args.preset, seed=args.seed)
    train = {**experiment.train, "batch_size": 32, "device": "cpu", **json.loads(args.train)}
    train["steps"] = args.steps
    model_config = dataclasses.replace(experiment.model, **json.loads(args.model))
    experiment = dataclasses.replace(experiment, train=train, model=model_config)
    images, _, labels, _ = dataset_tensors(make_dataset(experiment, "train", experiment.train_size))
    labels = labels if args.task == "classify" else None
    val = dataset_tensors(make_dataset(experiment, "test", args.val, seed=VALIDATION_SEED))
    model = build_model(experiment)
    if args.init:
        from mistlib.experiments import load_model

        source, _, _ = load_model(args.init, device="cpu")
        model.load_state_dict(source.state_dict(), strict=False)
    if args.init_heatmap:  # e.g. a reconstruction run's eta for a classification run (same preset)
        from mistlib.experiments import load_model

        source, _, _ = load_model(args.init_heatmap, device="cpu")
        model.heatmap_net.load_state_dict(source.heatmap_net.state_dict())
    trainer = build_trainer(experiment, model)
    return experiment, trainer, images, labels, val


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    experiment, trainer, images, labels, val = setup(args)
    out = ROOT / "research" / "curves" / f"{args.name}.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with out.open("w") as log:
        header = {"name": args.name, "argv": sys.argv[1:], "experiment": dataclasses.asdict(experiment)}
        log.write(json.dumps(header) + "\n")
        stops = [0, *range(args.every, args.steps + 1, args.every)]
        for stop in stops + ([args.steps] if stops[-1] != args.steps else []):
            if stop:
                trainer.fit(images, labels, steps=stop)
                if args.state:  # weights, optimisers, picker and step, to replay a stretch of the run
                    state = ROOT / "runs" / "research" / f"{args.name}.state{stop}.pt"
                    torch.save(trainer.state_dict(), state)
            metrics = measure(trainer.model, experiment, *val)
            losses = trainer.history[-1] if trainer.history else {}
            line = {"step": stop, "wall_s": round(time.perf_counter() - started, 1), **metrics, **losses}
            line["step"] = stop
            log.write(json.dumps(line) + "\n")
            log.flush()
            shown = " ".join(f"{k}={v:.4g}" for k, v in line.items() if isinstance(v, float))
            print(f"{args.name} {stop}: {shown}", flush=True)
    out_model = ROOT / "runs" / "research" / f"{args.name}.pt"
    save_model(out_model, experiment, trainer.model, {"steps": args.steps})


if __name__ == "__main__":
    main()
