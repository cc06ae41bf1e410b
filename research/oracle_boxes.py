"""How much of a model's error is localisation? Its task metric at its picks and at the true boxes.

For each checkpoint, on ``--val`` validation images (seed ``VALIDATION_SEED``), measures the RMSE
(reconstruction) or the multiset classification accuracy (classification) of the model as it runs (its own
picks, E_K of its heatmap) and of the same task network placed on the digits' true boxes (centre and side, the
side clamped to the model's scale range; an image with fewer than K digits repeats its first box, which the
max composite ignores). The second number is what perfect localisation would give this task network: a bound
that better picks alone cannot pass. ``--shifts 2 4`` also places the windows on the true boxes moved by
that many pixels, each in its own random direction (reconstruction): how much the task network's loss
rewards a window on an instance's centre at all. ``--sides`` compares the picks' sides with the true sides of
the digits they sit on (`evaluation.pick_sides`), by true side, and measures the RMSE with the
picks' centres and those true sides, and with the picks' sides times 1.1 and 1.2 (reconstruction).
``--snap`` splits the gap between the picks and the true boxes (either task): the task metric with each
pick moved onto the centre of its nearest digit (its own side kept), then onto that digit's whole box. Picks
snapped to the same digit stay doubled, so what is left between "snapped" and "true boxes" is the cost of
the digits no pick sits on. ``--nms 13 17`` evaluates the picks with other suppression windows of E_K.

    python research/oracle_boxes.py data/checkpoints/reconstruct-gabor-mist.pt --shifts 1 2 4 8
    python research/oracle_boxes.py data/checkpoints/reconstruct-mnist-hard-mist.pt \
        data/checkpoints/reconstruct-mnist-hard-grid.pt data/checkpoints/classify-mnist-hard-mist.pt
    python research/oracle_boxes.py data/checkpoints/classify-mnist-hard-mist.pt --val 300 --snap --nms 11 15
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math

import torch

from mistlib.evaluation import VALIDATION_SEED, box_keypoints, pick_sides, with_true_sides
from mistlib.experiments import dataset_tensors, load_model, make_dataset
from mistlib.metrics import DetectionMetrics, rmse


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--val", type=int, default=100)
    parser.add_argument("--shifts", type=float, nargs="*", default=[], help="px off the true centres")
    parser.add_argument("--sides", action="store_true", help="the picks' sides against the true sides")
    parser.add_argument("--snap", action="store_true", help="picks moved onto their nearest digits")
    parser.add_argument("--nms", type=int, nargs="*", default=[], help="other suppression windows of E_K")
    args = parser.parse_args(argv)
    for path in args.checkpoints:
        model, experiment, _ = load_model(path, device="cpu")
        model.eval()
        images, boxes, labels, valid = dataset_tensors(
            make_dataset(experiment, "test", args.val, seed=VALIDATION_SEED)
        )
        keypoints = box_keypoints(boxes, valid, model.config.k, model.scales)
        with torch.no_grad():
            picked, placed = model(images), model.run_task(images, keypoints)
        out = {"checkpoint": path}
        if picked.reconstruction is not None:
            out["picks"] = round(rmse(images, picked.reconstruction.clamp(0, 1)), 4)
            out["true boxes"] = round(rmse(images, placed.reconstruction.clamp(0, 1)), 4)
            angle = torch.rand(keypoints.shape[:2], generator=torch.Generator().manual_seed(0)) * 2 * math.pi
            for shift in args.shifts:
                moved = keypoints.clone()
                moved[..., 0] += shift * angle.cos()
                moved[..., 1] += shift * angle.sin()
                with torch.no_grad():
                    shifted = model.run_task(images, moved).reconstruction.clamp(0, 1)
                out[f"true boxes moved {shift:g} px"] = round(rmse(images, shifted), 4)
            if args.sides:
                out |= side_errors(model, images, boxes, valid, picked.keypoints, keypoints)
        else:  # classification: an image with fewer than K digits gets extra labels of its first box
            for name, run in (("picks", picked), ("true boxes", placed)):
                out[name] = classification(run, boxes, labels, valid)
        if args.snap:
            nearest = torch.cdist(picked.keypoints[..., :2], keypoints[..., :2]).argmin(-1)  # (N, K)
            snapped = torch.gather(keypoints, 1, nearest[..., None].expand(-1, -1, 3))  # (N, K, 3)
            centred = torch.cat([snapped[..., :2], picked.keypoints[..., 2:]], -1)
            for name, moved in (("picks on true centres", centred), ("picks snapped to true boxes", snapped)):
                out[name] = task_metric(model, images, moved, boxes, labels, valid)
        for nms in args.nms:
            model.config = dataclasses.replace(model.config, nms=nms)
            with torch.no_grad():
                suppressed = model(images).keypoints  # (N, K, 3)
            out[f"picks with nms {nms}"] = task_metric(model, images, suppressed, boxes, labels, valid)
        print(json.dumps(out))


def classification(run, boxes, labels, valid) -> dict[str, float]:
    """IoU>=50%, classification and both of a classification run (rounded), as in Table 2."""
    pooled = DetectionMetrics()
    pooled.update(run.keypoints, run.logits, boxes, labels, valid)
    result = pooled.compute()
    return {name: round(result[name], 4) for name in ("iou50", "classification", "both")}


def task_metric(model, images, keypoints, boxes, labels, valid) -> float | dict[str, float]:
    """The RMSE (reconstruction) or the Table-2 numbers (classification) with the task network at
    ``keypoints`` (N, K, 3)."""
    with torch.no_grad():
        run = model.run_task(images, keypoints)
    if run.reconstruction is not None:
        return round(rmse(images, run.reconstruction.clamp(0, 1)), 4)
    return classification(run, boxes, labels, valid)


def side_errors(model, images, boxes, valid, picks, true) -> dict[str, object]:
    """The picks' sides against the true sides of their digits; RMSE with other sides.

    Args: images (N, C, H, W); boxes (N, L, 4); valid (N, L); picks, true: (N, K, 3) keypoints (the
    model's, on the true boxes).
    """
    picked, truth = pick_sides(picks, boxes, valid)  # (M,) each, over the picks on a digit
    out: dict[str, object] = {"picks on a digit": len(picked)}
    out |= {"mean true side": round(float(truth.mean()), 2), "mean pick side": round(float(picked.mean()), 2)}
    for low, high in ((16, 18), (18, 20), (20, 22), (22, 26)):
        inside = (truth >= low) & (truth < high)
        out[f"mean pick side, true side {low}-{high}"] = round(float(picked[inside].mean()), 2)
    true_sides = with_true_sides(picks, true)[..., 2]  # (N, K): the nearest true box's, clamped to the scales
    sides = {"true sides": true_sides, "x1.1": picks[..., 2] * 1.1, "x1.2": picks[..., 2] * 1.2}
    for name, side in sides.items():
        moved = torch.cat([picks[..., :2], side[..., None]], -1)
        with torch.no_grad():
            reconstruction = model.run_task(images, moved).reconstruction.clamp(0, 1)
        out[f"picks with {name}"] = round(rmse(images, reconstruction), 4)
    return out


if __name__ == "__main__":
    main()
