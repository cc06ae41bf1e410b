"""How well does the compact classifier name a digit alone? A bound set by the digits, not the scenes.

A diagnostic with full supervision: the task network of the classification recipe (``recipe("classify",
"mnist-hard", "mist", budget="cpu")``) trained by a per-digit cross-entropy on the 4,000 training digits of
:func:`mistlib.data.mnist.mnist_digits`, each alone in a window a little larger than its ink (the central
24 x 24 pixels of the 28 x 28 frame, whose ink spans about 20), resampled to the patch side P. Every
``--every`` steps it prints the accuracy on the 1,000 test digits. Against ``task_capacity.py --loss patch``
(the same network, supervised the same way, at the true boxes of MNIST-hard scenes) the difference is what
the crowded scenes cost: neighbours that overlap the window, and the digits' random sizes.

    python research/isolated_digits.py --steps 1000 --every 250
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from mistlib.data.mnist import mnist_digits
from mistlib.experiments import build_model, recipe


def windows(split: str, patch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The digits of ``split`` as patches (N, 1, P, P) in [0, 1] and their labels (N,)."""
    images, labels = mnist_digits(split)
    digits = torch.as_tensor(images, dtype=torch.float32).reshape(-1, 1, 28, 28)
    digits = digits / 255 if digits.max() > 1 else digits
    patches = F.interpolate(digits[..., 2:26, 2:26], size=patch_size, mode="bilinear", align_corners=False)
    return patches, torch.as_tensor(labels).long()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument("--batch", type=int, default=288, help="digits a step (32 images x K = 9 windows)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    experiment = recipe("classify", "mnist-hard", "mist", budget="cpu", seed=args.seed)
    net = build_model(experiment).task_net
    size = experiment.model.patch_size
    (train, train_labels), (test, test_labels) = windows("train", size), windows("test", size)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(args.seed)
    start = time.time()
    for step in range(1, args.steps + 1):
        index = torch.randint(0, len(train), (args.batch,), generator=generator)
        loss = F.cross_entropy(net(train[index]), train_labels[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % args.every == 0:
            with torch.no_grad():
                accuracy = (net(test).argmax(-1) == test_labels).float().mean().item()
            wall = round(time.time() - start, 1)
            print(json.dumps({"step": step, "wall_s": wall, "test digits": len(test),
                              "accuracy": round(accuracy, 4)}), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
