"""Tests of mistlib/data/gabor.py: procedural Gabor noise (§7.1) and its impulse-process ground truth."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from mistlib.data import GaborConfig, GaborNoise, collate


@pytest.fixture(autouse=True)
def isolated_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MIST_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


@pytest.fixture(scope="module")
def noise():
    return GaborNoise("train", size=64, seed=0, cache=False)


def brute_force_kernel(config: GaborConfig, x0: float, y0: float, omega: float, weight: float) -> np.ndarray:
    """w exp(-pi a^2 |r|^2) cos(2 pi F0 (x cos w + y sin w)), r = (x - x0, y - y0), pixel by pixel."""
    out = np.zeros((config.image_size, config.image_size))
    for i in range(config.image_size):
        for j in range(config.image_size):
            x, y = j - x0, i - y0  # pixel (i, j) has centre x = j, y = i
            envelope = math.exp(-math.pi * config.bandwidth**2 * (x * x + y * y))
            out[i, j] = (
                weight
                * envelope
                * math.cos(2 * math.pi * config.frequency * (x * math.cos(omega) + y * math.sin(omega)))
            )
    return out


def test_one_impulse_matches_the_formula():
    config = GaborConfig(num_impulses=1, contrast=0.4)
    dataset = GaborNoise("test", 3, seed=1, config=config, cache=False)
    for index in range(3):
        (x0, y0), omega, weight = (
            dataset.centers[index, 0].tolist(),
            float(dataset.orientations[index, 0]),
            float(dataset.weights[index, 0]),
        )
        expected = np.clip(
            config.background + config.contrast * brute_force_kernel(config, x0, y0, omega, weight), 0, 1
        )
        np.testing.assert_allclose(dataset.images[index, 0].numpy(), expected, atol=1e-5)  # 16 bits


def test_image_is_background_plus_a_linear_sum_of_kernels(noise):
    config = noise.config
    for index in range(5):
        layers = noise.instance_images(index)  # (L, H, W)
        assert layers.shape == (25, 80, 80)
        expected = (config.background + layers.double().sum(0)).clamp(0, 1)
        torch.testing.assert_close(noise.images[index, 0].double(), expected, atol=1e-5, rtol=0)
    assert 0.0 <= float(noise.images.min()) and float(noise.images.max()) <= 1.0
    assert (noise.images == 0.5).float().mean() < 0.5  # textured, yet a fixed map: far pixels sit at 0.5
    lone = GaborNoise(
        "train", 2, config=dataclasses.replace(config, num_impulses=1, margin=35.0), cache=False
    )
    assert abs(float(lone.images[0, 0, 0, 0]) - config.background) < 1e-6  # far corner: background only


def test_determinism_and_seeds():
    a, b = GaborNoise("test", 4, seed=9, cache=False), GaborNoise("test", 4, seed=9, cache=False)
    assert a.images.numpy().tobytes() == b.images.numpy().tobytes()
    assert not torch.equal(a.images, GaborNoise("test", 4, seed=10, cache=False).images)
    assert not torch.equal(a.images, GaborNoise("train", 4, seed=9, cache=False).images)


def test_boxes_surround_the_impulses_at_the_envelope_level(noise):
    config = noise.config
    side = config.box_size
    assert math.isclose(math.exp(-math.pi * config.bandwidth**2 * (side / 2) ** 2), config.envelope_level)
    torch.testing.assert_close(noise.boxes[..., 2:] - noise.boxes[..., :2], torch.full((64, 25, 2), side))
    torch.testing.assert_close((noise.boxes[..., 2:] + noise.boxes[..., :2]) / 2, noise.centers)
    assert (noise.labels == -1).all()
    layers = noise.instance_images(0).abs()
    grid = torch.arange(80)
    for layer, box in zip(layers, noise.boxes[0], strict=True):
        if box.min() > -0.5 and box.max() < 79.5:  # kernel fully in view: most of its energy is in the box
            inside = ((grid >= box[1]) & (grid <= box[3]))[:, None] & ((grid >= box[0]) & (grid <= box[2]))
            assert float((layer * inside).sum() / layer.sum()) > 0.93


def test_random_parameters_follow_the_config(noise):
    config = noise.config
    assert noise.orientations.min() >= 0 and noise.orientations.max() <= math.pi
    assert noise.weights.min() >= 0.5 and noise.weights.max() <= 1.0
    assert noise.centers.min() >= -0.5 and noise.centers.max() <= 79.5
    assert abs(float(noise.centers.mean()) - 39.5) < 2  # uniform positions
    assert (noise.num_instances == config.num_impulses).all()
    discrete = GaborNoise("train", 8, config=GaborConfig(orientations=(0.0, math.pi / 2)), cache=False)
    torch.testing.assert_close(discrete.orientations.unique(), torch.tensor([0.0, math.pi / 2]))


def test_poisson_counts_and_collate_padding(isolated_data_dir):
    config = GaborConfig(count="poisson", num_impulses=6)
    dataset = GaborNoise("test", 40, seed=2, config=config)
    counts = dataset.num_instances
    assert len(counts.unique()) > 3 and abs(float(counts.float().mean()) - 6) < 1.5
    items = [dataset[i] for i in range(8)]
    assert [len(item["boxes"]) for item in items] == counts[:8].tolist()
    batch = collate(items)
    longest = int(counts[:8].max())
    assert batch["boxes"].shape == (8, longest, 4) and batch["orientations"].shape == (8, longest)
    for row, item in enumerate(items):
        n = len(item["boxes"])
        assert torch.equal(batch["boxes"][row, :n], item["boxes"]) and (batch["boxes"][row, n:] == 0).all()
        assert (batch["labels"][row] == -1).all() and torch.equal(batch["num_instances"], counts[:8])
    cached = GaborNoise("test", 40, seed=2, config=config)  # float images and ragged counts survive the cache
    assert cached.from_cache and cached.images.numpy().tobytes() == dataset.images.numpy().tobytes()
    assert torch.equal(cached.num_instances, counts)


def test_collate_pads_labels_with_minus_one():
    items = [
        {"image": torch.zeros(1, 4, 4), "boxes": torch.ones(2, 4), "labels": torch.tensor([3, 4])},
        {
            "image": torch.ones(1, 4, 4),
            "boxes": torch.ones(0, 4),
            "labels": torch.zeros(0, dtype=torch.int64),
        },
    ]
    batch = collate(items)
    assert batch["labels"].tolist() == [[3, 4], [-1, -1]] and batch["num_instances"].tolist() == [2, 0]
    assert batch["boxes"][1].abs().sum() == 0 and batch["images"].shape == (2, 1, 4, 4)
    with pytest.raises(ValueError, match="items"):
        collate([])


@pytest.mark.parametrize(
    "field, value",
    [
        ("num_impulses", 0),
        ("count", "binomial"),
        ("frequency", 0.8),
        ("bandwidth", 0.0),
        ("orientation_range", (2.0, 1.0)),
        ("weight_range", (1.0,)),
        ("background", 1.5),
        ("contrast", -0.1),
        ("envelope_level", 1.0),
        ("envelope_level", 0.0),
        ("margin", 50.0),
        ("image_size", 3),
    ],
)
def test_bad_config_names_the_parameter(field, value):
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(GaborConfig(), **{field: value})
