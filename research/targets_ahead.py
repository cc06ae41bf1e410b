"""How far ahead of the heatmap's picks are stage 2's targets? Picks before and after stage 2, measured.

For a reconstruction checkpoint, on ``--val`` validation images (seed ``VALIDATION_SEED``), runs the
recipe's three stages without updating a weight (``LiftingTrainer.inspect``) and measures the picks
x = E_K(H(I)) and the refined keypoints x* that stage 3 regresses the heatmap onto: IoU>=50% and
``evaluation.pick_coverage``. ``--rounds R`` applies stage 2 R times in a row (each round may jump again
to E_K's runner-ups): where the targets would lead if the heatmap followed them round after round.
``--jumps J`` offers J runner-ups instead of the recipe's ``refine_jumps``; ``--nms N`` overrides E_K's
suppression window at test time. ``breakdown`` sorts every digit by its best pick: matched at IoU>=50%,
a pick within 4 px of its centre but too far off in scale, a pick 4-8 px off, or none within 8 px.

    python research/targets_ahead.py data/checkpoints/reconstruct-mnist-hard-mist.pt --rounds 3
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import torch

from mistlib.evaluation import NEAR_PX, VALIDATION_SEED, pick_coverage
from mistlib.experiments import build_trainer, dataset_tensors, load_model, make_dataset
from mistlib.lifting import split_picks
from mistlib.metrics import DetectionMetrics, box_iou, keypoints_to_boxes


def summary(keypoints: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor) -> dict:
    """IoU>=50% and pick coverage of keypoints (N, K, 3) against boxes (N, L, 4), rounded to 0.1%."""
    detection = DetectionMetrics()
    detection.update(keypoints, None, boxes, labels, valid)
    measured = {"iou50": detection.compute()["iou50"], **pick_coverage(keypoints, boxes, valid)}
    return {name: round(100 * value, 1) for name, value in measured.items()}


def breakdown(keypoints: torch.Tensor, boxes: torch.Tensor, valid: torch.Tensor) -> dict:
    """Shares (in %) of the digits (N, L) by their best pick among keypoints (N, K, 3): see the module doc."""
    picked = keypoints_to_boxes(keypoints)  # (N, K, 4)
    iou = torch.stack([box_iou(boxes[n], picked[n]) for n in range(len(boxes))])  # (N, L, K)
    centres = (boxes[..., :2] + boxes[..., 2:]) / 2  # (N, L, 2)
    distance = torch.cdist(centres, keypoints[..., :2]).min(-1).values[valid]  # (M,) over real digits
    matched = (iou.amax(-1) >= 0.5)[valid]
    shares = {
        "matched": matched,
        "scale off": ~matched & (distance <= NEAR_PX),
        "4-8 px off": ~matched & (distance > NEAR_PX) & (distance <= 2 * NEAR_PX),
        "none within 8 px": distance > 2 * NEAR_PX,
    }
    return {name: round(100 * float(share.double().mean()), 1) for name, share in shares.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--val", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--batch", type=int, default=30)
    parser.add_argument("--jumps", type=int, default=None, help="runner-ups offered (the recipe's)")
    parser.add_argument("--nms", type=int, default=None, help="E_K's suppression window (the model's)")
    args = parser.parse_args(argv)
    model, experiment, _ = load_model(args.checkpoint, device="cpu")
    model.eval()
    if args.nms is not None:
        model.config = dataclasses.replace(model.config, nms=args.nms)
    images, boxes, labels, valid = dataset_tensors(
        make_dataset(experiment, "test", args.val, seed=VALIDATION_SEED)
    )
    trainer = build_trainer(experiment, model)
    jumps = trainer.config.refine_jumps if args.jumps is None else args.jumps
    picked, refined = [], [[] for _ in range(args.rounds)]
    for start in range(0, args.val, args.batch):
        batch = images[start : start + args.batch]
        with torch.no_grad():
            picks = model.extract(batch, model.config.k + jumps)[1]  # (b, K + J, 3)
        keypoints, alternatives = split_picks(picks, model.config.k)
        picked.append(keypoints)
        for r in range(args.rounds):
            keypoints = trainer.refine(batch, keypoints, None, alternatives)
            refined[r].append(keypoints)
    out = {"checkpoint": args.checkpoint, "jumps": jumps}
    out["picks"] = summary(torch.cat(picked), boxes, labels, valid)
    out["breakdown"] = breakdown(torch.cat(picked), boxes, valid)
    for r, rounds in enumerate(refined, 1):
        out[f"stage 2 x {r}"] = summary(torch.cat(rounds), boxes, labels, valid)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
