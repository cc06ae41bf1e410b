"""Replay a diverged research run step by step from a kept state, and name the first non-finite tensor.

Rebuilds the run of a ``research/curves.py`` curve (the arguments in its header line), loads a state that
``curves.py --state`` kept, and runs the same batches one step at a time. After every step it reads the
losses, the smallest scale among the picks the step started from (E_K gives 0 where the heatmap is 0 at
every scale), the largest value and the share of exact zeros of eta's output on the batch after the step,
and the largest |weight| and the gradient norm of eta and of tau; the first step that leaves any of them
non-finite is reported, and the state just before it is kept (``runs/research/<name>.before<step>.pt``).

    python research/replay_nan.py eta32x4-replay runs/research/eta32x4-replay.state1250.pt --until 1500
"""

from __future__ import annotations

import argparse
import copy
import json
import math

import torch
from curves import ROOT, parse, setup

from mistlib.training import batch_indices


def size(module: torch.nn.Module) -> dict[str, float]:
    """The largest |weight| and the norm of the gradients (0 when none) of a module's parameters."""
    params = list(module.parameters())
    grads = [p.grad for p in params if p.grad is not None]
    weight = max(float(p.detach().abs().max()) for p in params)
    grad = float(torch.stack([g.norm() for g in grads]).norm()) if grads else 0.0
    return {"max_w": weight, "grad": grad}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="the curve research/curves/<name>.jsonl whose run is replayed")
    parser.add_argument("state", help="a state kept by curves.py --state")
    parser.add_argument("--until", type=int, required=True, help="the last step to replay")
    args = parser.parse_args(argv)
    header = json.loads((ROOT / "research" / "curves" / f"{args.name}.jsonl").open().readline())
    _, trainer, images, labels, _ = setup(parse(header["argv"]))
    trainer.load_state_dict(torch.load(args.state, weights_only=False))
    model, config = trainer.model, trainer.config
    while trainer.step < args.until:
        before = copy.deepcopy(trainer.state_dict())  # Adam updates its moments in place
        index = batch_indices(images.shape[0], config.batch_size, config.seed, trainer.step)
        batch, batch_labels = images[index], None if labels is None else labels[index]
        with torch.no_grad():  # the windows and runner-ups this step starts from (trainer.pick's choice)
            _, keypoints, alternatives = trainer.pick(batch, trainer.step < config.warmup_steps)
        picked = keypoints if alternatives is None else torch.cat([keypoints, alternatives], 1)  # (B, K+J, 3)
        losses = trainer.train_step(batch, batch_labels)
        with torch.no_grad():
            heatmap = model.heatmap_net(batch)  # (B, S, H, W) after the local softmax
        row = {"step": trainer.step, **losses, "min_pick_scale": float(picked[..., 2].min())}
        row |= {"heatmap_max": float(heatmap.max()), "heatmap_zero": float((heatmap == 0).float().mean())}
        row |= {f"eta_{k}": v for k, v in size(model.heatmap_net).items()}
        row |= {f"tau_{k}": v for k, v in size(model.task_net).items()}
        print(json.dumps({k: round(v, 6) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
        if not all(math.isfinite(v) for v in row.values()):
            kept = ROOT / "runs" / "research" / f"{args.name}.before{trainer.step}.pt"
            torch.save(before, kept)
            bad = [k for k, v in row.items() if not math.isfinite(v)]
            print(f"first non-finite at step {trainer.step}: {', '.join(bad)}; the state before it in {kept}")
            return
        trainer.step += 1
    print(f"no non-finite value up to step {args.until}")


if __name__ == "__main__":
    main()
