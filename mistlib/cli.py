"""The command line, ``mist`` (or ``python -m mistlib``): train, evaluate, reproduce.

Examples::

    mist train --task reconstruct --data mnist-hard --method mist      # writes runs/<name>.pt
    mist evaluate runs/reconstruct-mnist-hard-mist.pt --size 1000
    mist reproduce table1                                               # loads data/checkpoints/

Errors are one line on stderr and exit status 2 (``--debug`` shows the traceback); Ctrl-C during
training saves a resumable checkpoint and exits with status 130.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import torch

from mistlib import __version__
from mistlib.evaluation import evaluate
from mistlib.experiments import BUDGETS, DATASETS, METHODS, TASKS, load_model, recipe
from mistlib.presets import PRESETS
from mistlib.runs import RunError, train
from mistlib.training import TrainingInterrupted

CHECKPOINTS = Path("data/checkpoints")  # the shipped checkpoints: read by reproduce, never a default target
RUNS = Path("runs")  # where train writes by default (git-ignored)
DEVICES = ("auto", "cpu", "cuda")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1.

    Example:
        >>> positive_int("3")
        3
        >>> positive_int("0")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: must be a positive integer, got '0'
    """
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def save_every(text: str) -> tuple[int, float]:
    """argparse type of ``--save-every``: ``N`` steps or ``Nm`` minutes -> (steps, minutes).

    Example:
        >>> save_every("200"), save_every("5m")
        ((200, 0.0), (0, 5.0))
    """
    try:
        if text.endswith("m"):
            minutes = float(text[:-1])
            if minutes > 0:
                return 0, minutes
        else:
            return positive_int(text), 0.0
    except (ValueError, argparse.ArgumentTypeError):
        pass
    raise argparse.ArgumentTypeError(f"must be a number of steps (200) or of minutes (5m), got {text!r}")


def check_device(device: str) -> str:
    """Refuse ``cuda`` where this torch sees no CUDA device; returns ``device``.

    Example:
        >>> check_device("cpu")
        'cpu'
    """
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"--device cuda: this torch ({torch.__version__}) sees no CUDA device; use --device cpu"
        )
    return device


def resolve_budget(budget: str, device: str) -> str:
    """``auto``: the ``gpu`` recipe where training runs on CUDA, else the ``cpu`` one.

    Example:
        >>> resolve_budget("auto", "cpu"), resolve_budget("gpu", "cpu")
        ('cpu', 'gpu')
    """
    if budget != "auto":
        return budget
    on_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    return "gpu" if on_cuda else "cpu"


def _train(args: argparse.Namespace) -> int:
    device = check_device(args.device)
    budget = resolve_budget(args.budget, device)
    experiment = recipe(args.task, args.data, args.method, budget=budget, preset=args.preset, seed=args.seed)
    if args.train_size is not None:
        experiment.train_size = args.train_size
    if args.init_heatmap is not None:
        experiment.init_heatmap = args.init_heatmap or None  # "" trains eta from scratch
    for name in ("steps", "batch_size"):
        if getattr(args, name) is not None:
            experiment.train[name] = getattr(args, name)
    experiment.train["device"] = device
    if args.save_every is not None:
        experiment.train["checkpoint_every"], experiment.train["checkpoint_minutes"] = args.save_every
    experiment.trainer_config()  # refuse bad settings before any work
    out = Path(args.out) if args.out else RUNS / f"{experiment.name}.pt"
    if out.exists() and not args.force:
        raise RunError(f"{out} exists: pass --force to overwrite it, or choose another --out")
    command = "python -m mistlib " + shlex.join(args.argv)
    meta = train(
        experiment,
        out,
        resume=args.resume,
        force=args.force,
        log_path=args.log,
        command=command,
        validate_every=args.validate_every,
    )
    model = load_model(out, device=device)[0]
    metrics = evaluate(model, experiment, size=args.eval_size, progress=True)
    summary = {"checkpoint": str(out), "steps": meta["steps"], "wall_time_s": meta["wall_time_s"], **metrics}
    print(json.dumps(summary))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    model, experiment, _ = load_model(args.checkpoint, device=check_device(args.device))
    metrics = evaluate(
        model, experiment, size=args.size, seed=args.seed, batch_size=args.batch_size, progress=True
    )
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
        budget=resolve_budget(args.budget, "auto"),
    )
    return 0


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Help with every default shown and the description's line breaks kept."""


def _plain(text: str) -> str:
    """A docstring as help text: no reST literal markup."""
    return text.replace("``", "").replace("::", ":")


def _train_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``mist train``."""
    p.add_argument("--task", choices=TASKS, default="reconstruct", help="§5.1 reconstruction or §5.2 classes")
    p.add_argument("--data", choices=list(DATASETS), default="mnist-hard", help="dataset of §7.1")
    p.add_argument("--method", choices=METHODS, default="mist", help="mist (lifting) or a baseline")
    p.add_argument(
        "--budget",
        choices=("auto", *BUDGETS),
        default="auto",
        help="recipe size: gpu (the paper's schedule), cpu (minutes on 2 cores); auto picks by device",
    )
    p.add_argument("--preset", choices=list(PRESETS), default=None, help="network size (the budget's own)")
    p.add_argument(
        "--init-heatmap",
        default=None,
        metavar="MODEL",
        help="start eta from a trained model (a .pt path or a checkpoint name; '' for none; the recipe's)",
    )
    p.add_argument("--steps", type=positive_int, default=None, help="optimisation steps (the recipe's)")
    p.add_argument("--batch-size", type=positive_int, default=None, help="images per step (the recipe's)")
    p.add_argument("--train-size", type=positive_int, default=None, help="generated training images (10000)")
    p.add_argument("--seed", type=int, default=0, help="seeds data, weights and batch order")
    p.add_argument("--device", choices=DEVICES, default="auto", help="auto: CUDA when present")
    p.add_argument(
        "--out", default=None, help=f"checkpoint to write (default: {RUNS}/<task>-<data>-<method>.pt)"
    )
    p.add_argument("--force", action="store_true", help="overwrite --out; discard an unfinished <out>.resume")
    p.add_argument("--resume", action="store_true", help="continue the run saved in <out>.resume")
    p.add_argument(
        "--save-every",
        type=save_every,
        default=None,
        help="save <out>.resume every N steps or Nm minutes (500)",
    )
    p.add_argument("--log", default=None, help="also write the lifting training log here (method mist)")
    p.add_argument(
        "--validate-every",
        type=int,
        default=250,
        help="measure 300 validation images every N steps into the checkpoint's learning curve (0: never)",
    )
    p.add_argument("--eval-size", type=positive_int, default=1000, help="test images evaluated at the end")
    p.set_defaults(run=_train)


def build_parser() -> argparse.ArgumentParser:
    """The ``mist`` argument parser (subcommands train, evaluate, reproduce).

    Example:
        >>> build_parser().parse_args(["evaluate", "model.pt"]).size
        1000
    """
    parser = argparse.ArgumentParser(prog="mist", description=_plain(__doc__), formatter_class=_Formatter)
    parser.add_argument(
        "--version", action="version", version=f"mistlib {__version__} (torch {torch.__version__})"
    )
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{train,evaluate,reproduce}")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help, formatter_class=_Formatter)
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
        return sub

    _train_arguments(command("train", "train one method on one dataset and write its checkpoint"))

    p = command("evaluate", "evaluate a checkpoint on fresh test images")
    p.add_argument("checkpoint", help="a checkpoint written by mist train")
    p.add_argument("--seed", type=int, default=1, help="seed of the fresh test images")
    p.add_argument("--size", type=positive_int, default=1000, help="number of test images")
    p.add_argument("--batch-size", type=positive_int, default=32, help="images per forward pass")
    p.add_argument("--device", choices=DEVICES, default="auto", help="auto: CUDA when present")
    p.set_defaults(run=_evaluate)

    p = command("reproduce", "rebuild Table 1 or Table 2 into results/")
    p.add_argument("table", choices=("table1", "table2"), help="which table of §7")
    p.add_argument("--checkpoints", default=str(CHECKPOINTS), help="folder of the rows' checkpoints")
    p.add_argument("--results", default="results", help="folder of the tables written")
    p.add_argument("--retrain", action="store_true", help="train every row even when its checkpoint exists")
    p.add_argument(
        "--budget", choices=("auto", *BUDGETS), default="auto", help="recipe of rows that are trained"
    )
    p.add_argument("--steps", type=positive_int, default=None, help="override the steps of trained rows")
    p.add_argument("--train-size", type=positive_int, default=None, help="override the training images")
    p.add_argument("--size", type=positive_int, default=1000, help="number of test images")
    p.set_defaults(run=_reproduce)
    return parser


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:400]


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0, 2 for an error, 130 for Ctrl-C).

    Example:
        >>> main(["evaluate", "no-such-file.pt"])  # doctest: +SKIP
        mist: error: checkpoint no-such-file.pt does not exist
        2
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        return args.run(args)
    except TrainingInterrupted as error:
        print(f"mist: {error}; run the same command with --resume to continue", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("mist: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError, FloatingPointError, ImportError) as error:
        if args.debug:
            raise
        print(f"mist: error: {_one_line(error)}", file=sys.stderr)
        return 2
