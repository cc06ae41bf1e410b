"""What does the sampler's round trip S^-1(S(I)) lose at the true boxes, by window side and sub-pixel phase?

No network: the windows of the digits' true boxes of ``--val`` validation images (seed VALIDATION_SEED) are
cut out at P x P (``sample_patches``) and put straight back (``losses.reconstruct``, the recipe's
composite), and the RMSE against the image is printed, one JSON line per window side and phase. Phase
``box`` keeps the boxes' own centres (an even-sided box has its centre on a pixel corner); ``grid`` moves
every centre by half a pixel onto a pixel centre, where E_K's picks sit. A side equal to P at a phase that
puts the samples on pixel centres is an exact crop (RMSE 0).

    python research/round_trip.py --data mnist-easy --sides 20 25 32 --val 300   # research/README.md §26
"""

from __future__ import annotations

import argparse
import json

import torch

from mistlib.evaluation import VALIDATION_SEED, box_keypoints
from mistlib.experiments import dataset_tensors, make_dataset, recipe
from mistlib.losses import reconstruct
from mistlib.metrics import rmse
from mistlib.sampler import sample_patches


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=("mnist-hard", "mnist-easy"), default="mnist-easy")
    parser.add_argument("--sides", type=float, nargs="+", default=[20.0, 25.0, 32.0])
    parser.add_argument("--patch", type=int, default=None, help="P (default: the recipe's patch size)")
    parser.add_argument("--val", type=int, default=300)
    args = parser.parse_args(argv)
    experiment = recipe("reconstruct", args.data, "mist", budget="cpu")
    patch = args.patch or experiment.model.patch_size
    validation = make_dataset(experiment, "test", args.val, seed=VALIDATION_SEED)
    images, boxes, _, valid = dataset_tensors(validation)
    centres = box_keypoints(boxes, valid, experiment.model.k, torch.tensor([1.0, 1e3]))  # (N, K, 3)
    for side in args.sides:
        for phase, shift in (("box", 0.0), ("grid", 0.5)):
            windows = centres.clone()
            windows[..., :2] += shift
            windows[..., 2] = side
            patches = sample_patches(images, windows, patch)  # (N, K, C, P, P)
            back = reconstruct(patches, windows, images.shape[-2:], composite=experiment.model.composite)
            point = {"data": args.data, "patch": patch, "side": side, "phase": phase}
            print(json.dumps({**point, "rmse": round(rmse(images, back), 4)}), flush=True)


if __name__ == "__main__":
    main()
