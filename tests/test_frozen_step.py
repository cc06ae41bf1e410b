"""The frozen old lifting step (``bench/frozen_step.py``): it runs, it learns, and its pieces compute what
today's library computes (the same algorithm, only slower)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, where bench/ lives

from bench import frozen_step as frozen  # noqa: E402
from mistlib.extract import topk_extract  # noqa: E402
from mistlib.heatmap import HeatmapConfig, HeatmapNet  # noqa: E402
from mistlib.sampler import place_patches, sample_patches  # noqa: E402

TINY = {"heatmap_channels": 4, "heatmap_blocks": 1, "task_width": 2}


def random_keypoints(generator: torch.Generator, batch: int, k: int, size: int = 80) -> torch.Tensor:
    """(B, K, 3) windows anywhere in the image, some reaching over its border, s in [12, 30]."""
    xy = torch.rand(batch, k, 2, generator=generator) * (size + 10) - 5
    s = 12 + 18 * torch.rand(batch, k, 1, generator=generator)
    return torch.cat([xy, s], dim=-1)


def test_the_step_runs_and_updates_both_networks():
    step = frozen.FrozenStep(0, "cpu", **TINY)
    before = {name: p.detach().clone() for name, p in step.model.named_parameters()}
    images = torch.rand(2, 1, 80, 80, generator=torch.Generator().manual_seed(1))
    for _ in range(2):
        losses = step.step(images)
    assert set(losses) == {"task", "lift", "moved_px"} and all(math.isfinite(v) for v in losses.values())
    for net in ("heatmap_net", "task_net"):
        changed = [
            not torch.equal(p, before[n]) for n, p in step.model.named_parameters() if n.startswith(net)
        ]
        assert any(changed), f"{net} did not change"


def test_the_old_recipe_is_the_default_model():
    model = frozen.FrozenModel()
    assert model.heatmap_net.config.channels == 16 and len(model.heatmap_net.blocks) == 2
    assert type(model.task_net).__name__ == "PatchAutoencoder" and model.task_net.encoder.latent_dim == 128
    assert (model.k, model.composite, model.nms) == (9, "max", 5)


@pytest.mark.parametrize("nms", [1, 5])
def test_topk_equals_todays_extractor(nms):
    generator = torch.Generator().manual_seed(nms)
    heatmap = torch.rand(3, 3, 40, 48, generator=generator)  # (B, S, H, W)
    scales = torch.tensor([16.0, 20.0, 25.0])
    expected = topk_extract(heatmap, 9, scales, nms=nms)
    assert torch.equal(frozen.topk_extract(heatmap, 9, scales, nms), expected)


def test_sampler_equals_todays_sample_patches():
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, 1, 80, 80, generator=generator)
    keypoints = random_keypoints(generator, 2, 9)
    expected = sample_patches(images, keypoints, size=32)
    torch.testing.assert_close(frozen.sample_patches(images, keypoints, 32), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("composite", ["sum", "max"])
def test_full_canvas_placement_equals_todays_local_canvases(composite):
    generator = torch.Generator().manual_seed(2)
    patches = torch.rand(2, 9, 1, 32, 32, generator=generator)
    keypoints = random_keypoints(generator, 2, 9)
    expected = place_patches(patches, keypoints, (80, 80), composite)
    got = frozen.reconstruct(patches, keypoints, (80, 80), composite)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_heatmap_equals_todays_network_on_the_same_weights():
    torch.manual_seed(0)
    net = HeatmapNet(HeatmapConfig(channels=4, num_blocks=1))
    images = torch.rand(2, 1, 40, 40, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(frozen.scores(net, images), net.scores(images), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(frozen.heatmap_forward(net, images), net(images), atol=1e-5, rtol=1e-5)
