"""What can the compact task network do when every window sits on a digit's true box?

A diagnostic, not lifting: a fresh MIST of the cpu recipe (``--task classify`` or ``reconstruct``, ``--data``
``mnist-hard`` or ``mnist-easy``) trains only its task network tau on windows at the digits' true boxes
(``evaluation.box_keypoints``) of the training images. The loss is the one lifting uses (``task``: eq. (7) for
classification, eq. (6) with the recipe's composite for reconstruction) or one per window (``patch``: a
cross-entropy against the box's own label, or each patch against its own input), which needs location
supervision. Every ``--every`` steps it prints the multiset classification accuracy, or the RMSE, at the true
boxes of ``--val`` validation images (seed VALIDATION_SEED). A lifting-trained task network cannot beat what
its network reaches here.

    python research/task_capacity.py --loss task --steps 3000
    python research/task_capacity.py --loss patch --steps 3000
    python research/task_capacity.py --loss task --steps 3000 --model '{"task_depth": 0}'  # before §17
    python research/task_capacity.py --task reconstruct --loss patch --steps 3000 --model '{"task_code": 128}'
    python research/task_capacity.py --steps 600 --every 100 --seed 2 --model '{"task_norm": false}' \
        --out research/curves/capacity20-plain.jsonl  # §20: the classifier without its GroupNorm
    python research/task_capacity.py --steps 1500 --every 300 --seed 2 --jitter 0.06 --fresh  # §25

``--phase grid`` moves every window by half a pixel onto pixel centres, where E_K's picks sit (the
sampler's round trip depends on that phase, research/README.md §26); ``--whole-pixel`` rounds the jitter's
moves to whole pixels and keeps the side, so the windows keep their phase. ``--jitter`` moves the windows as
``LiftingConfig.task_jitter`` does; ``--fresh`` also measures on new scenes
of the *training* digits (seed FRESH_SEED), so the gap between the two is what the network memorised of the
4,000 digits it trains on.

``--deform a`` bends each training image by a smooth random field (``mistlib.data.augment``, std ``a``
px) before its windows are cut, as ``LiftingConfig.deform`` does; the windows stay at the true boxes.

``--device cuda`` trains and measures the network on a GPU (scenes and windows are still made on the CPU).

``--dihedral`` moves each training image and its windows by one of the square's eight symmetries
(``mistlib.data.augment.dihedral``: exact, reconstruction only).

``--digits N`` builds the training scenes (and ``--fresh``'s) from N of the 4,000 training digits only (a
seeded subset with as many of each class as the split has, in proportion), so a few runs give the task
network's error as a function of how many distinct digits it trains on; ``--digits`` equal to the split's
size gives the default scenes exactly.

``--out`` also writes the measurements as a curve file (a header line, then one line per measurement) that
``mistlib.evaluation.read_curve`` reads.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from mistlib.data import DATASETS
from mistlib.data.augment import dihedral, elastic_deform
from mistlib.data.mnist import stratified_split
from mistlib.evaluation import VALIDATION_SEED, box_keypoints
from mistlib.experiments import build_model, dataset_tensors, make_dataset, recipe
from mistlib.files import atomic_write
from mistlib.lifting import jitter_windows
from mistlib.metrics import DetectionMetrics, rmse
from mistlib.sampler import sample_patches

FRESH_SEED = 777  # the seed of --fresh's scenes (training digits), neither the training nor validation seed
SUBSET_SEED = 0  # the seed of --digits's choice of training digits


def training_scenes(data: str, size: int, seed: int, digits: int | None):
    """``size`` training scenes of ``data`` (seed ``seed``) made of ``digits`` training digits (None: all).

    The subset keeps each class's share of the split (``stratified_split``); it is not cached, so the
    cache of the full-digit scenes stays what it is.
    """
    base = DATASETS[data]
    if digits is None:
        return base(split="train", size=size, seed=seed)
    images, labels = base(split="train", size=1, seed=seed, cache=False).digits()
    if not 0 < digits <= len(labels):
        raise ValueError(f"--digits must be in 1..{len(labels)}, got {digits}")
    keep, _ = stratified_split(labels, 1 - digits / len(labels), SUBSET_SEED)
    chosen = images[keep], labels[keep]

    class Subset(base):
        def digits(self) -> tuple[np.ndarray, np.ndarray]:
            return chosen

    return Subset(split="train", size=size, seed=seed, cache=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=("classify", "reconstruct"), default="classify")
    parser.add_argument("--data", choices=("mnist-hard", "mnist-easy"), default="mnist-hard")
    parser.add_argument("--loss", choices=("task", "patch"), default="task")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument("--val", type=int, default=300)
    parser.add_argument("--train", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jitter", type=float, default=0.0, help="LiftingConfig.task_jitter of the windows")
    parser.add_argument(
        "--fresh", action="store_true", help="also measure on new scenes made of the training digits"
    )
    parser.add_argument(
        "--phase",
        choices=("box", "grid"),
        default="box",
        help="windows at the boxes' own centres, or moved by half a pixel onto pixel centres as E_K's picks",
    )
    parser.add_argument(
        "--whole-pixel", action="store_true", help="jitter by whole-pixel moves only, the side kept"
    )
    parser.add_argument(
        "--deform", type=float, default=0.0, help="LiftingConfig.deform: elastic deformation, std in px"
    )
    parser.add_argument(
        "--model", type=json.loads, default={}, help='MISTConfig overrides, e.g. {"task_width": 32}'
    )
    parser.add_argument(
        "--dihedral", action="store_true", help="each training image transposed / flipped at random"
    )
    parser.add_argument("--device", default="cpu", help="where the task network trains (cpu, cuda)")
    parser.add_argument("--digits", type=int, help="train on scenes of only this many training digits")
    parser.add_argument("--out", help="also write the measurements here, as a curve file")
    args = parser.parse_args(argv)
    if args.dihedral and args.task == "classify":
        parser.error("--dihedral mirrors digits into other shapes (a mirrored 2 is no 2): reconstruct only")
    torch.manual_seed(args.seed)
    experiment = recipe(args.task, args.data, "mist", budget="cpu", seed=args.seed)
    experiment.model = dataclasses.replace(experiment.model, **args.model)
    device = torch.device(args.device)
    model = build_model(experiment).to(device)  # the scenes and windows are made on the CPU, then moved
    k, scales = model.config.k, model.scales
    train = dataset_tensors(training_scenes(args.data, args.train, experiment.seed, args.digits))
    val = dataset_tensors(make_dataset(experiment, "test", args.val, seed=VALIDATION_SEED))
    # scenes the network never saw, of digits it did: the gap to `val` is what it memorised of its digits
    fresh = None
    if args.fresh:
        fresh = dataset_tensors(training_scenes(args.data, args.val, FRESH_SEED, args.digits))
    optimizer = torch.optim.Adam(model.task.parameters(), lr=1e-3)
    start = time.time()
    points: list[dict] = []

    name = "rmse" if args.task == "reconstruct" else "classification"

    shift = 0.5 if args.phase == "grid" else 0.0  # box centres of even-sided boxes sit on pixel corners

    def windows_at(boxes: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """(N, K, 3) windows on the true boxes, at the chosen phase."""
        windows = box_keypoints(boxes, valid, k, scales)
        return torch.cat([windows[..., :2] + shift, windows[..., 2:]], -1)

    def jittered(windows: torch.Tensor) -> torch.Tensor:
        """``jitter_windows``; with ``--whole-pixel`` its moves rounded to whole pixels, the side kept."""
        return jitter_windows(windows, args.jitter, generator, args.whole_pixel)

    def at_true_boxes(data: tuple[torch.Tensor, ...]) -> float:
        images, boxes, labels, valid = data
        with torch.no_grad():
            out = model.run_task(images.to(device), windows_at(boxes, valid).to(device))
        if args.task == "reconstruct":
            return rmse(images, out.reconstruction.clamp(0, 1).cpu())
        metrics = DetectionMetrics()
        metrics.update(out.keypoints.cpu(), out.logits.cpu(), boxes, labels, valid)
        return metrics.compute()["classification"]

    def measure(step: int) -> None:
        point = {"step": step, "wall_s": round(time.time() - start, 1), name: at_true_boxes(val)}
        if fresh is not None:
            point[f"{name}_fresh"] = at_true_boxes(fresh)
        rounded = {
            key: round(value, 4) if isinstance(value, float) else value for key, value in point.items()
        }
        print(json.dumps({"task": args.task, "loss": args.loss, "model": args.model, **rounded}), flush=True)
        points.append(point)

    generator = torch.Generator().manual_seed(args.seed)
    deform_generator = torch.Generator().manual_seed(args.seed + 1)
    dihedral_generator = torch.Generator().manual_seed(args.seed + 3)
    for step in range(1, args.steps + 1):
        index = torch.randint(0, args.train, (32,), generator=generator)
        images, boxes, labels, valid = (t[index] for t in train)
        images = elastic_deform(images, args.deform, deform_generator)  # the windows stay on the boxes
        keypoints = jittered(windows_at(boxes, valid))
        if args.dihedral:
            images, keypoints = dihedral(images, dihedral_generator, keypoints)
        images, keypoints, labels, valid = (t.to(device) for t in (images, keypoints, labels, valid))
        if args.loss == "task":
            loss = model.task_loss(images, model.run_task(images, keypoints), labels)
        elif args.task == "reconstruct":  # each patch against the window it was given
            patches = sample_patches(images, keypoints, model.config.patch_size)  # (B, K, C, P, P)
            loss = F.mse_loss(model.task_net(patches), patches)
        else:  # each window against its own box's label (padding windows repeat box 0, so its label)
            own = torch.where(valid, labels, labels[:, :1])[:, :k]  # (B, K)
            logits = model.run_task(images, keypoints).logits
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), own.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % args.every == 0:
            measure(step)
    if args.out:
        given = sys.argv[1:] if argv is None else argv
        command = shlex.join(["python", "research/task_capacity.py", *given])
        title = f"task capacity, {args.task}, loss {args.loss}, model {args.model}"
        title += f", jitter {args.jitter}" if args.jitter else ""
        title += f", deform {args.deform}" if args.deform else ""
        title += ", dihedral" if args.dihedral else ""
        title += f", on {args.device}" if args.device != "cpu" else ""
        header = {"name": title + (f", {args.digits} digits" if args.digits else ""), "argv": command}
        lines = [json.dumps(header)] + [json.dumps(point) for point in points]
        text = ("\n".join(lines) + "\n").encode()
        atomic_write(args.out, lambda handle: handle.write(text))


if __name__ == "__main__":
    main()
