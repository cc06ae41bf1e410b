"""Short, seeded probes of lifting on MNIST hard: the measurements behind research/README.md.

Each probe prints one line per checkpoint of its run; the README quotes them. They use a slim heatmap
network (16 channels, 2 blocks) so that they fit a CPU budget; on a GPU pass ``--full`` for §4's network.

    python research/lifting_probe.py lifting '{"warmup_steps": 300, "refine_optimizer": "adam"}' --steps 500
    python research/lifting_probe.py warmup patch --steps 400
    python research/lifting_probe.py stage2 --warmup 400
    python research/lifting_probe.py naive --steps 500 --model '{"composite": "max"}'
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

import torch

from mistlib.baselines import EndToEndConfig, EndToEndTrainer
from mistlib.data import MNISTHard
from mistlib.experiments import dataset_tensors
from mistlib.lifting import LiftingConfig, LiftingTrainer
from mistlib.model import MIST, MISTConfig
from mistlib.refine import refine_keypoints
from mistlib.training import batch_indices, step_generator


def _data(train_size: int = 2048):
    images = dataset_tensors(MNISTHard("train", size=train_size, seed=0))[0]
    test_images, test_boxes = dataset_tensors(MNISTHard("test", size=64, seed=1))[:2]
    centres = (test_boxes[..., :2] + test_boxes[..., 2:]) / 2  # (B, L, 2)
    sides = test_boxes[..., 2] - test_boxes[..., 0]  # (B, L)
    ground_truth = torch.cat([centres, sides[..., None]], dim=-1)  # (B, L, 3): digit-centred windows
    return images, test_images, ground_truth


MODEL_OVERRIDES: dict = {}  # MISTConfig fields set by --model, e.g. {"composite": "max"}


def _model(full: bool) -> MIST:
    torch.manual_seed(0)
    config = MISTConfig() if full else MISTConfig(heatmap_channels=16, heatmap_blocks=2)
    return MIST(dataclasses.replace(config, **MODEL_OVERRIDES))


def _localisation(keypoints: torch.Tensor, ground_truth: torch.Tensor) -> tuple[float, float]:
    """Mean distance (px) to the nearest digit centre, and the share of digits with a keypoint within 4 px."""
    distance = torch.cdist(keypoints[..., :2], ground_truth[..., :2])  # (B, K, L)
    return distance.min(-1).values.mean().item(), (distance.min(1).values < 4).float().mean().item()


def probe_lifting(
    variant: dict, steps: int, full: bool, warmup: int = 0, cache: str | None = None, every: int = 25
) -> None:
    """Algorithm 1 with the given LiftingConfig overrides; test RMSE and localisation every ``every`` steps.

    With ``cache``, the run starts from the model that ``warmed_up(warmup, ...)`` saved there (its
    warm-up is not repeated, so ``variant`` should leave ``warmup_steps`` at 0).
    """
    model = warmed_up(warmup, full, 1e-3, "random", cache) if cache else _model(full)
    config = LiftingConfig(**{**_settings(steps, every), **variant})
    _track(LiftingTrainer(model, "reconstruct", config), steps, every)


def probe_naive(variant: dict, steps: int, full: bool, every: int = 25) -> None:
    """Naive top-K (plain back-propagation through the K picks, no lifting), reported like ``lifting``."""
    config = EndToEndConfig(**{**_settings(steps, every), **variant})
    _track(EndToEndTrainer(_model(full), "reconstruct", config), steps, every)


def _settings(steps: int, every: int) -> dict:
    """Trainer fields shared by every probe run (a variant may override any of them)."""
    return {"steps": steps, "batch_size": 16, "device": "cpu", "log_every": every}


def _track(trainer, steps: int, every: int) -> None:
    """Train in chunks of ``every`` steps; after each, one line of test RMSE and localisation."""
    images, test_images, ground_truth = _data()
    model = trainer.model
    start = time.time()
    for stop in range(every, steps + 1, every):
        trainer.fit(images, steps=stop)
        with torch.no_grad():
            heatmap, keypoints = model.extract(test_images)
            recon = model.run_task(test_images, keypoints).reconstruction.clamp(0, 1)
        rmse = (recon - test_images).square().mean().sqrt().item()
        distance, recall = _localisation(keypoints, ground_truth)
        entry = trainer.history[-1]
        task = entry.get("task", entry.get("warmup"))
        print(
            f"{stop:5d} {time.time() - start:5.0f}s task={task:.4f} lift={entry.get('lift', 0):.6f} "
            f"moved={entry.get('moved_px', 0):.2f}px test_rmse={rmse:.4f} dist={distance:.2f}px "
            f"recall4={recall:.2f} peak={heatmap.amax(1).flatten(1).topk(9).values.mean().item():.3f}",
            flush=True,
        )


def warm_up(
    model: MIST,
    images: torch.Tensor,
    steps: int,
    loss: str,
    lr: float = 1e-3,
    report=None,
    windows: str = "random",
) -> None:
    """Train the auto-encoder alone on 9 windows per image with a per-patch or an eq. (6) loss.

    windows: "random" (uniform centres and scales) or "heatmap" (E_K of the frozen, untrained heatmap
    network: stage 1 of Algorithm 1 without stages 2 and 3).
    """
    optimiser = torch.optim.Adam(model.task_net.parameters(), lr=lr)
    scales = model.scales
    for step in range(steps + 1):
        batch = images[batch_indices(len(images), 16, 0, step)]
        if windows == "heatmap":
            with torch.no_grad():
                keypoints = model.extract(batch)[1]
        else:
            uniform = torch.rand(16, 9, 3, generator=step_generator(0, step))
            keypoints = uniform * torch.tensor([79.0, 79.0, float(scales[-1] - scales[0])])
            keypoints[..., 2] += scales[0]
        out = model.run_task(batch, keypoints)
        if loss == "patch":
            value = (out.task_output - out.patches).square().mean()
        else:
            value = (out.reconstruction - batch).square().mean()
        optimiser.zero_grad()
        value.backward()
        optimiser.step()
        if report is not None and step % 100 == 0:
            report(step, value.item())


def probe_warmup(loss: str, steps: int, full: bool, lr: float, windows: str) -> None:
    """How well the warmed-up auto-encoder reconstructs digit-centred windows of test images."""
    images, test_images, ground_truth = _data()
    model = _model(full)

    def report(step: int, value: float) -> None:
        with torch.no_grad():
            out = model.run_task(test_images, ground_truth)
        error = (out.task_output - out.patches).square().mean().item()
        energy = out.patches.square().mean().item()
        print(
            f"{loss} lr={lr:g} {windows} step {step:4d}: loss={value:.4f} digit-window mse={error:.4f} "
            f"(energy {energy:.3f})",
            flush=True,
        )

    warm_up(model, images, steps, loss, lr, report, windows)


def warmed_up(warmup: int, full: bool, lr: float, windows: str, cache: str | None) -> MIST:
    """The model after ``warm_up``, loaded from ``cache`` when that file exists, else trained (and saved)."""
    model = _model(full)
    if cache and os.path.exists(cache):
        model.load_state_dict(torch.load(cache, weights_only=True))
        return model
    warm_up(model, _data()[0], warmup, "patch", lr, None, windows)
    if cache:
        torch.save(model.state_dict(), cache)
    return model


def probe_stage2(warmup: int, full: bool, lr: float, windows: str, cache: str | None) -> None:
    """Start from digit centres jittered by 2-6 px: does stage 2 bring the keypoints back?"""
    images, test_images, ground_truth = _data()
    model = warmed_up(warmup, full, lr, windows, cache)
    with torch.no_grad():
        out = model.run_task(test_images, ground_truth)
    error = (out.task_output - out.patches).square().mean().item()
    print(f"after {warmup} warm-up steps: digit-window mse={error:.4f}", flush=True)
    generator = torch.Generator().manual_seed(0)
    for jitter in (2.0, 4.0, 6.0):
        start = ground_truth.clone()
        start[..., :2] += jitter * torch.randn(start[..., :2].shape, generator=generator)
        for optimizer, step, iterations in (("scaled", 1.0, 4), ("adam", 1.0, 4), ("scaled", 0.5, 10)):
            refined = refine_keypoints(model, test_images, start, None, iterations, step, optimizer)
            before = (start[..., :2] - ground_truth[..., :2]).norm(dim=-1).mean().item()
            after = (refined[..., :2] - ground_truth[..., :2]).norm(dim=-1).mean().item()
            print(f"jitter {jitter} {optimizer} {step}px x{iterations}: {before:.2f} -> {after:.2f} px")


def probe_picks(warmup: int, full: bool, lr: float, windows: str, cache: str | None) -> None:
    """Stage 2 from the untrained heatmap's own picks, reconstructing by eq. (6)'s sum and by a max.

    Prints the per-image L_task before and after refinement, the share of images whose L_task rose, and
    the mean distance of the keypoints to the nearest digit centre; then the jittered-centre test of
    ``stage2`` with the max composite.
    """
    _, test_images, ground_truth = _data()
    model = warmed_up(warmup, full, lr, windows, cache)
    with torch.no_grad():
        picks = model.extract(test_images)[1]  # (B, K, 3)
    apart = torch.cdist(picks[..., :2], picks[..., :2]) + 1e9 * torch.eye(picks.shape[1])  # (B, K, K)
    print(
        f"picks: nearest other pick {apart.min(-1).values.mean().item():.1f} px away, windows "
        f"{picks[..., 2].mean().item():.1f} px wide; all-black MSE {test_images.square().mean().item():.3f}"
    )

    def loss(keypoints: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model.task_loss(test_images, model.run_task(test_images, keypoints), None, "none")

    def distance(keypoints: torch.Tensor) -> float:
        return torch.cdist(keypoints[..., :2], ground_truth[..., :2]).min(-1).values.mean().item()

    for composite in ("sum", "max"):
        model.config = dataclasses.replace(model.config, composite=composite)
        before = loss(picks)
        for iterations, step in ((2, 1.0), (4, 0.5), (10, 0.5)):
            refined = refine_keypoints(model, test_images, picks, None, iterations, step)
            after = loss(refined)
            print(
                f"{composite}: {iterations} x {step} px: L_task {before.mean():.4f} -> {after.mean():.4f}, "
                f"rose on {(after > before).float().mean().item():.0%} of images; distance "
                f"{distance(picks):.2f} -> {distance(refined):.2f} px",
                flush=True,
            )
    generator = torch.Generator().manual_seed(0)
    for jitter in (2.0, 4.0, 6.0):
        start = ground_truth.clone()
        start[..., :2] += jitter * torch.randn(start[..., :2].shape, generator=generator)
        for iterations, step in ((4, 1.0), (10, 0.5)):
            refined = refine_keypoints(model, test_images, start, None, iterations, step)
            before = (start[..., :2] - ground_truth[..., :2]).norm(dim=-1).mean().item()
            after = (refined[..., :2] - ground_truth[..., :2]).norm(dim=-1).mean().item()
            print(f"max: jitter {jitter} scaled {step}px x{iterations}: {before:.2f} -> {after:.2f} px")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("probe", choices=("lifting", "naive", "warmup", "stage2", "picks"))
    parser.add_argument(
        "arg", nargs="?", default="{}", help="lifting, naive: JSON trainer overrides; warmup: patch|image"
    )
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--every", type=int, default=25, help="lifting, naive: steps between test lines")
    parser.add_argument("--warmup", type=int, default=400)
    parser.add_argument("--full", action="store_true", help="use §4's full heatmap network")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-3, help="warm-up Adam lr of the auto-encoder")
    parser.add_argument("--windows", choices=("random", "heatmap"), default="random", help="warmup windows")
    parser.add_argument("--cache", help="warmed-up model file (load, or save)")
    parser.add_argument("--model", default="{}", help="JSON MISTConfig overrides, e.g. composite")
    args = parser.parse_args()
    MODEL_OVERRIDES.update(json.loads(args.model))
    torch.set_num_threads(args.threads)
    if args.probe == "lifting":
        probe_lifting(json.loads(args.arg), args.steps, args.full, args.warmup, args.cache, args.every)
    elif args.probe == "naive":
        probe_naive(json.loads(args.arg), args.steps, args.full, args.every)
    elif args.probe == "warmup":
        probe_warmup(args.arg, args.steps, args.full, args.lr, args.windows)
    elif args.probe == "stage2":
        probe_stage2(args.warmup, args.full, args.lr, args.windows, args.cache)
    else:
        probe_picks(args.warmup, args.full, args.lr, args.windows, args.cache)


if __name__ == "__main__":
    main()
