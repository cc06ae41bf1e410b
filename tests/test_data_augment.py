"""Elastic deformation: the field's statistics, the resampling direction, seeding and bad input."""

from __future__ import annotations

import math

import pytest
import torch

from mistlib.data import augment
from mistlib.data.augment import displacement_field, elastic_deform


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
