"""Command line: ``python -m mistlib {train,evaluate,reproduce}``.

Examples::

    python -m mistlib train --task reconstruct --data mnist-hard --method mist --steps 6000
    python -m mistlib evaluate data/checkpoints/reconstruct-mnist-hard-mist.pt --seed 1 --size 1000
    python -m mistlib reproduce table1
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from mistlib.experiments import BUDGETS, DATASETS, METHODS, TASKS, evaluate, load_model, recipe, train
from mistlib.presets import PRESETS

CHECKPOINTS = Path("data/checkpoints")


def _train(args: argparse.Namespace) -> int:
    overrides = {}
    for name in ("steps", "batch_size", "device"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    experiment = recipe(
        args.task, args.data, args.method, budget=args.budget, preset=args.preset, seed=args.seed
    )
    if args.train_size is not None:
        experiment.train_size = args.train_size
    experiment.train.update(overrides)
    out = Path(args.out) if args.out else CHECKPOINTS / f"{experiment.name}.pt"
    command = "python -m mistlib " + shlex.join(args.argv)
    meta = train(experiment, out, resume=args.resume, log_path=args.log, command=command)
    metrics = evaluate(load_model(out, device=args.device or "auto")[0], experiment, size=args.eval_size)
    print(
        json.dumps(
            {"checkpoint": str(out), "steps": meta["steps"], "wall_time_s": meta["wall_time_s"], **metrics}
        )
    )
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    model, experiment, _ = load_model(args.checkpoint, device=args.device or "auto")
    metrics = evaluate(model, experiment, size=args.size, seed=args.seed)
    print(json.dumps({"checkpoint": str(args.checkpoint), **metrics}))
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    from mistlib.tables import reproduce

    reproduce(
        args.table,
        checkpoints=Path(args.checkpoints),
        results=Path(args.results),
        retrain=args.retrain,
        steps=args.steps,
        eval_size=args.size,
        train_size=args.train_size,
        budget=args.budget,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mistlib", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("train", help="train one method on one dataset and write its checkpoint")
    p.add_argument("--task", choices=TASKS, default="reconstruct")
    p.add_argument("--data", choices=list(DATASETS), default="mnist-hard")
    p.add_argument("--method", choices=METHODS, default="mist")
    p.add_argument("--budget", choices=BUDGETS, default="gpu", help="recipe size: gpu (full) or cpu (small)")
    p.add_argument("--preset", choices=list(PRESETS), help="network size (default: the budget's own)")
    p.add_argument("--steps", type=int, help="optimisation steps (recipe default otherwise)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--train-size", type=int, help="number of generated training images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="cpu, cuda or auto (default)")
    p.add_argument("--out", help="checkpoint path (default data/checkpoints/{task}-{data}-{method}.pt)")
    p.add_argument("--log", help="also write the lifting training log here (method mist)")
    p.add_argument("--resume", action="store_true", help="continue a killed run from <out>.resume")
    p.add_argument("--eval-size", type=int, default=1000, help="test images evaluated at the end")
    p.set_defaults(run=_train)

    p = commands.add_parser("evaluate", help="evaluate a checkpoint on fresh test images")
    p.add_argument("checkpoint")
    p.add_argument("--seed", type=int, default=1, help="seed of the fresh test images")
    p.add_argument("--size", type=int, default=1000, help="number of test images")
    p.add_argument("--device", help="cpu, cuda or auto (default)")
    p.set_defaults(run=_evaluate)

    p = commands.add_parser("reproduce", help="rebuild Table 1 or Table 2 into results/")
    p.add_argument("table", choices=("table1", "table2"))
    p.add_argument("--checkpoints", default=str(CHECKPOINTS))
    p.add_argument("--results", default="results")
    p.add_argument("--retrain", action="store_true", help="train every row even when its checkpoint exists")
    p.add_argument("--budget", choices=BUDGETS, default="gpu", help="recipe of rows that are trained")
    p.add_argument("--steps", type=int, help="override the training steps of rows that are trained")
    p.add_argument("--train-size", type=int, help="override the generated training images of trained rows")
    p.add_argument("--size", type=int, default=1000, help="number of test images")
    p.set_defaults(run=_reproduce)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
