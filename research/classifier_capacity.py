"""How well can the compact classifier name digits when every window sits on a digit's true box?

A diagnostic, not lifting: a fresh classification MIST of the cpu recipe trains only its task network tau on
windows at the digits' true boxes (``oracle_boxes.box_keypoints``) of the training images, with eq. (7)'s
image-level loss (the loss lifting uses) or a per-window cross-entropy against the box's own label (location
supervision, to separate the loss from the network's capacity). Every ``--every`` steps it prints the
multiset classification accuracy at the true boxes of ``--val`` validation images (seed VALIDATION_SEED).
A lifting-trained classifier cannot beat what its network reaches here.

    python research/classifier_capacity.py --loss eq7 --steps 1500
    python research/classifier_capacity.py --loss patch --steps 1500
    python research/classifier_capacity.py --loss eq7 --steps 1500 --model '{"task_width": 32}'
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch
import torch.nn.functional as F
from oracle_boxes import box_keypoints

from mistlib.evaluation import VALIDATION_SEED
from mistlib.experiments import build_model, dataset_tensors, make_dataset, recipe
from mistlib.metrics import DetectionMetrics


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loss", choices=("eq7", "patch"), default="eq7")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument("--val", type=int, default=300)
    parser.add_argument("--train", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--model", type=json.loads, default={}, help='MISTConfig overrides, e.g. {"task_width": 32}'
    )
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    experiment = recipe("classify", "mnist-hard", "mist", budget="cpu", seed=args.seed)
    experiment.model = dataclasses.replace(experiment.model, **args.model)
    model = build_model(experiment)
    k, scales = model.config.k, model.scales
    train = dataset_tensors(make_dataset(experiment, "train", args.train))
    val = dataset_tensors(make_dataset(experiment, "test", args.val, seed=VALIDATION_SEED))
    optimizer = torch.optim.Adam(model.task.parameters(), lr=1e-3)
    start = time.time()

    def measure(step: int) -> None:
        images, boxes, labels, valid = val
        with torch.no_grad():
            out = model.run_task(images, box_keypoints(boxes, valid, k, scales))
        metrics = DetectionMetrics()
        metrics.update(out.keypoints, out.logits, boxes, labels, valid)
        result = metrics.compute()
        wall = round(time.time() - start, 1)
        accuracy = round(result["classification"], 4)
        print(json.dumps({"loss": args.loss, "model": args.model, "step": step, "wall_s": wall,
                          "classification": accuracy}), flush=True)  # fmt: skip

    generator = torch.Generator().manual_seed(args.seed)
    for step in range(1, args.steps + 1):
        index = torch.randint(0, args.train, (32,), generator=generator)
        images, boxes, labels, valid = (t[index] for t in train)
        out = model.run_task(images, box_keypoints(boxes, valid, k, scales))
        if args.loss == "eq7":
            loss = model.task_loss(images, out, labels)
        else:  # each window against its own box's label (padding windows repeat box 0, so its label)
            own = torch.where(valid, labels, labels[:, :1])[:, :k]  # (B, K)
            loss = F.cross_entropy(out.logits.reshape(-1, out.logits.shape[-1]), own.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % args.every == 0:
            measure(step)


if __name__ == "__main__":
    main()
