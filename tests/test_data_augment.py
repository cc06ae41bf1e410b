"""Augmentations: the elastic field's statistics, the resampling direction, seeding and bad input; the
square's symmetries, exact, with the keypoints following the ink."""

from __future__ import annotations

import math

import pytest
import torch

from mistlib.data import augment
from mistlib.data.augment import dihedral, displacement_field, elastic_deform


def test_the_field_has_the_asked_spread_and_correlation_length():
    """Each component is N(0, amount^2) at every pixel, and blurred white noise correlates as
    exp(-d^2 / (4 length^2)) at a lag of d px: 0.37 at d = 2 length."""
    field = displacement_field((200, 48, 48), 2.0, 4.0, torch.Generator().manual_seed(0))  # (B, H, W, 2)
    assert field.shape == (200, 48, 48, 2)
    assert abs(float(field.std()) - 2.0) < 0.05 and abs(float(field.mean())) < 0.05
    corner, middle = field[:, :4, :4].std(), field[:, 22:26, 22:26].std()  # no weaker field at the borders
    assert abs(float(corner / middle) - 1) < 0.1
    for lag in (1, 4, 8):
        a, b = field[:, :, :-lag, 0].flatten(), field[:, :, lag:, 0].flatten()
        expected = math.exp(-(lag**2) / (4 * 4.0**2))  # 0.98, 0.78, 0.37
        assert abs(float(torch.corrcoef(torch.stack([a, b]))[0, 1]) - expected) < 0.04


def test_each_pixel_reads_the_image_at_its_displaced_position(monkeypatch):
    """A field of (dx, dy) = (1, 0) everywhere moves the picture one pixel left; the last column reads the
    border; (0, 0.5) averages each row with the next."""
    images = torch.arange(2 * 5 * 6, dtype=torch.float32).view(2, 1, 5, 6)
    for shift, expected in [
        ((1.0, 0.0), torch.cat([images[..., 1:], images[..., -1:]], -1)),
        ((0.0, 0.5), torch.cat([(images[..., :-1, :] + images[..., 1:, :]) / 2, images[..., -1:, :]], -2)),
    ]:
        constant = torch.tensor(shift).expand(2, 5, 6, 2)
        monkeypatch.setattr(augment, "displacement_field", lambda *args, c=constant: c)
        out = elastic_deform(images, 1.0, torch.Generator())
        assert torch.allclose(out, expected, atol=1e-5)


def test_a_seeded_generator_gives_the_same_images_and_bad_amounts_are_refused():
    images = torch.rand(3, 1, 20, 20, generator=torch.Generator().manual_seed(1))
    first = elastic_deform(images, 1.5, torch.Generator().manual_seed(7))
    assert torch.equal(first, elastic_deform(images, 1.5, torch.Generator().manual_seed(7)))
    assert not torch.equal(first, elastic_deform(images, 1.5, torch.Generator().manual_seed(8)))
    assert not torch.equal(first, images)
    assert elastic_deform(images, 0.0, torch.Generator()) is images
    with pytest.raises(ValueError, match="amount must be >= 0 pixels, got -1.0"):
        elastic_deform(images, -1.0, torch.Generator())


def _symmetries(image: torch.Tensor) -> list[torch.Tensor]:
    """The eight images of the square's symmetry group, by hand: (C, H, W) -> 8 x (C, H, W)."""
    out = []
    for turned in (image, image.rot90(1, (-2, -1))):
        out += [turned, turned.flip(-1), turned.flip(-2), turned.flip(-1).flip(-2)]
    return out


def test_dihedral_gives_each_image_one_of_the_eight_symmetries_exactly():
    """Every output is one of the eight transposes / flips of its input, no pixel interpolated; over 256
    images all eight occur, each about equally often; the same seed gives the same images."""
    images = torch.rand(256, 2, 7, 7, generator=torch.Generator().manual_seed(0))  # no two pixels equal
    moved, points = dihedral(images, torch.Generator().manual_seed(1))
    assert points is None and moved.shape == images.shape
    which = []
    for image, out in zip(images, moved, strict=True):
        matches = [i for i, candidate in enumerate(_symmetries(image)) if torch.equal(out, candidate)]
        assert len(matches) == 1
        which += matches
    counts = torch.bincount(torch.tensor(which), minlength=8)
    assert int(counts.min()) > 15 and int(counts.max()) < 50  # 32 expected of each
    assert torch.equal(moved, dihedral(images, torch.Generator().manual_seed(1))[0])


def test_dihedral_moves_the_keypoints_with_the_ink_and_keeps_their_sides():
    """A keypoint on a lit pixel lands on the same lit pixel after the move (x is the column, y the row;
    a flip maps x to W - 1 - x), at sub-pixel positions too; non-square images are refused."""
    generator = torch.Generator().manual_seed(2)
    images = torch.zeros(64, 1, 9, 9)
    where = torch.randint(0, 9, (64, 2), generator=generator)  # (x, y) of one lit pixel per image
    images[torch.arange(64), 0, where[:, 1], where[:, 0]] = 1.0
    keypoints = torch.cat([where.float(), torch.full((64, 1), 5.0)], -1)[:, None]  # (64, 1, 3)
    keypoints = torch.cat([keypoints, keypoints + torch.tensor([0.25, -0.5, 1.0])], 1)  # and a nearby one
    moved, points = dihedral(images, generator, keypoints)
    x, y = points[:, 0, 0].long(), points[:, 0, 1].long()
    assert torch.equal(points[:, 0], points[:, 0].round())
    assert bool((moved[torch.arange(64), 0, y, x] == 1).all())
    assert torch.equal(points[..., 2], keypoints[..., 2])
    offsets = (points[:, 1, :2] - points[:, 0, :2]).abs()  # the offset (0.25, 0.5) turns and flips with it
    turned = (offsets == torch.tensor([0.25, 0.5])).all(-1) | (offsets == torch.tensor([0.5, 0.25])).all(-1)
    assert bool(turned.all()) and bool((offsets[:, 0] == 0.5).any() and (offsets[:, 0] == 0.25).any())
    with pytest.raises(ValueError, match="dihedral needs square images, got 9 x 8"):
        dihedral(torch.zeros(1, 1, 9, 8), generator)
