"""Where could a jump of stage 2 land? Candidate recall for the digits a trained model misses.

For a reconstruction checkpoint, on ``--val`` validation images (seed ``VALIDATION_SEED``), finds the
digits no pick reaches (no keypoint within 8 px of the centre, as ``evaluation.pick_coverage``) and asks,
for two sources of jump candidates, how many of those digits have a candidate within 4 px and within 8 px
of their centre:

- ``runner-up J``: E_K's next J picks (``LiftingConfig.refine_jumps``);
- ``residual M``: ``mistlib.refine.residual_jumps``, the M peaks of the ink the reconstruction leaves out
  (``LiftingConfig.jump_residual``), averaged over ``--blur`` px boxes.

    python research/jump_candidates.py data/checkpoints/reconstruct-mnist-hard-mist.pt --blur 17
"""

from __future__ import annotations

import argparse
import json

import torch

from mistlib.evaluation import NEAR_PX, VALIDATION_SEED
from mistlib.experiments import dataset_tensors, load_model, make_dataset
from mistlib.refine import RESIDUAL_BLUR, residual_jumps


def recall(candidates: torch.Tensor, centres: torch.Tensor, missed: torch.Tensor) -> list[float]:
    """Shares of missed digits with a candidate within 4 and 8 px. candidates (B, M, 3); centres (B, L, 2)."""
    distance = torch.cdist(centres, candidates[..., :2]).min(-1).values[missed]  # (number missed,)
    return [round(float((distance <= radius).float().mean()), 3) for radius in (NEAR_PX, 2 * NEAR_PX)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--val", type=int, default=300)
    parser.add_argument("--blur", type=int, default=RESIDUAL_BLUR)
    args = parser.parse_args(argv)
    model, experiment, _ = load_model(args.checkpoint, device="cpu")
    split = make_dataset(experiment, "test", args.val, seed=VALIDATION_SEED)
    images, boxes, _, valid = dataset_tensors(split)
    k = model.config.k
    with torch.no_grad():
        picks = model.extract(images, k + 16)[1]  # (B, K + 16, 3)
    centres = (boxes[..., :2] + boxes[..., 2:]) / 2  # (B, L, 2)
    missed = valid & (torch.cdist(centres, picks[:, :k, :2]).min(-1).values > 2 * NEAR_PX)  # (B, L)
    out = {
        "checkpoint": args.checkpoint,
        "blur": args.blur,
        "missed": round(float(missed.sum() / valid.sum()), 3),
    }
    for j in (4, 8, 16):
        out[f"runner-up {j}"] = recall(picks[:, k : k + j], centres, missed)
    for m in (1, 2, 4, 8):
        out[f"residual {m}"] = recall(
            residual_jumps(model, images, picks[:, :k], m, args.blur), centres, missed
        )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
