"""Tests of mistlib.sampler: the patch sampler S (eq. 5) and its inverse S^{-1} (§5.1)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mistlib.sampler import local_canvases, place_patches, sample_patches


def _affine_image(height: int, width: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """(1, 2, H, W): channels 0.3 + 0.02 x - 0.05 y and 1 - 0.01 x + 0.03 y, pixel centres at integers."""
    y, x = torch.meshgrid(torch.arange(height, dtype=dtype), torch.arange(width, dtype=dtype), indexing="ij")
    return torch.stack([0.3 + 0.02 * x - 0.05 * y, 1 - 0.01 * x + 0.03 * y])[None]


def _aligned_keypoints() -> tuple[torch.Tensor, list[list[tuple[int, int]]]]:
    """(2, 3, 3) windows of side 8 whose top-left pixels (x0, y0) are integers, and those corners."""
    corners = [[(3, 4), (20, 10), (40, 25)], [(0, 0), (45, 29), (12, 12)]]  # in a 37 x 53 image
    keypoints = torch.tensor([[[x0 + 3.5, y0 + 3.5, 8.0] for x0, y0 in row] for row in corners])
    return keypoints, corners


# ---------------------------------------------------------------- sample_patches


def test_sample_known_answer_bilinear():
    images = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])  # I(x, y) = x + 2 y at the pixel centres
    # window centred at (0.5, 0.5) of side 1 split in 2x2 cells: points x, y in {0.25, 0.75}
    patch = sample_patches(images, torch.tensor([[[0.5, 0.5, 1.0]]]), size=2)
    torch.testing.assert_close(patch, torch.tensor([[[[[0.75, 1.25], [1.75, 2.25]]]]]))
    # one cell of side 2 centred on the same point: its centre (0.5, 0.5) -> 1.5
    assert sample_patches(images, torch.tensor([[[0.5, 0.5, 2.0]]]), size=1).item() == pytest.approx(1.5)


def test_sample_zeros_outside_the_image():
    images = torch.ones(1, 1, 4, 4)
    # the outer edge of the image, x = -0.5: half the first pixel, half the zero padding
    assert sample_patches(images, torch.tensor([[[-0.5, 1.0, 1.0]]]), size=1).item() == pytest.approx(0.5)
    assert sample_patches(images, torch.tensor([[[-1.0, 1.0, 1.0]]]), size=1).item() == 0.0
    far = sample_patches(images, torch.tensor([[[30.0, -20.0, 8.0]]]), size=5)
    assert far.shape == (1, 1, 1, 5, 5) and bool((far == 0).all())


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_aligned_window_of_side_size_is_the_plain_crop(dtype, tol):
    # exact up to rounding: grid_sample normalises and unnormalises the coordinates (float32: ~1e-6)
    images = torch.rand(2, 3, 37, 53, generator=torch.Generator().manual_seed(0), dtype=dtype)
    keypoints, corners = _aligned_keypoints()
    patches = sample_patches(images, keypoints, size=8)
    assert patches.shape == (2, 3, 3, 8, 8) and patches.dtype == dtype
    for b, row in enumerate(corners):
        for k, (x0, y0) in enumerate(row):
            torch.testing.assert_close(
                patches[b, k], images[b, :, y0 : y0 + 8, x0 : x0 + 8], rtol=0, atol=tol
            )


def test_sample_points_follow_the_formula_on_an_affine_image():
    # bilinear interpolation is exact on affine images, so each patch pixel must equal the image's affine
    # function at x - s/2 + (j + 1/2) s / P (columns) and y - s/2 + (i + 1/2) s / P (rows)
    images = _affine_image(30, 40)
    keypoints = torch.tensor([[[14.3, 12.7, 9.6], [20.2, 15.1, 21.3]]], dtype=torch.float64)
    size = 7
    patches = sample_patches(images, keypoints, size=size)
    steps = (torch.arange(size, dtype=torch.float64) + 0.5) / size - 0.5
    for k, (x, y, s) in enumerate(keypoints[0].tolist()):
        u = x + steps * s  # (P,) columns
        v = (y + steps * s)[:, None]  # (P, 1) rows
        expected = torch.stack([0.3 + 0.02 * u - 0.05 * v, 1 - 0.01 * u + 0.03 * v])  # (C, P, P)
        torch.testing.assert_close(patches[0, k], expected, rtol=0, atol=1e-12)


def test_all_patches_in_one_call_equal_one_at_a_time():
    g = torch.Generator().manual_seed(1)
    images = torch.rand(2, 1, 20, 24, generator=g)
    keypoints = torch.rand(2, 4, 3, generator=g) * torch.tensor([24.0, 20.0, 10.0]) + torch.tensor(
        [0, 0, 3.0]
    )
    together = sample_patches(images, keypoints, size=6)
    for k in range(4):
        torch.testing.assert_close(
            together[:, k], sample_patches(images, keypoints[:, k : k + 1], size=6)[:, 0]
        )


def _away_from_kinks(points: torch.Tensor) -> bool:
    """True if no coordinate lies within 0.02 px of an integer, where bilinear interpolation has a kink."""
    return bool(((points - points.round()).abs() > 0.02).all())


def test_sample_gradcheck_images_and_keypoints():
    g = torch.Generator().manual_seed(2)
    images = torch.rand(1, 2, 6, 7, generator=g, dtype=torch.float64, requires_grad=True)
    keypoints = torch.tensor(
        [[[3.13, 2.41, 2.7], [1.37, 3.62, 3.3]]], dtype=torch.float64, requires_grad=True
    )
    size = 3
    steps = (torch.arange(size, dtype=torch.float64) + 0.5) / size - 0.5
    assert _away_from_kinks(
        keypoints[..., :2].detach()[..., None] + steps * keypoints[..., 2:].detach()[..., None]
    )
    assert torch.autograd.gradcheck(lambda i, x: sample_patches(i, x, size=size), (images, keypoints))


def test_sample_gradient_reaches_x_y_and_s():
    images = _affine_image(20, 20)
    keypoints = torch.tensor([[[9.3, 8.6, 6.2]]], dtype=torch.float64, requires_grad=True)
    (sample_patches(images, keypoints, size=4)[:, :, 0] * torch.arange(16.0).view(4, 4)).sum().backward()
    assert bool((keypoints.grad.abs() > 1e-3).all())


def test_sample_casts_keypoints_to_the_image_dtype():
    out = sample_patches(
        torch.rand(1, 1, 8, 8), torch.tensor([[[4.0, 4.0, 3.0]]], dtype=torch.float64), size=2
    )
    assert out.dtype == torch.float32


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"images": torch.zeros(1, 8, 8)}, r"images must have shape \(B, C, H, W\), got shape \(1, 8, 8\)"),
        ({"images": torch.zeros(1, 1, 8, 8, dtype=torch.uint8)}, "images must be a floating-point"),
        ({"images": torch.full((1, 1, 8, 8), float("nan"))}, "images contains 64 NaN"),
        (
            {"keypoints": torch.zeros(1, 2, 2)},
            r"keypoints must have shape \(B, K, 3\).*got shape \(1, 2, 2\)",
        ),
        ({"keypoints": torch.ones(2, 1, 3)}, "keypoints has batch size 2, expected 1"),
        ({"keypoints": torch.tensor([[[4.0, 4.0, -1.0]]])}, "keypoints must have positive patch sides"),
        ({"size": 0}, "size must be >= 1, got 0"),
        ({"size": 4.0}, "size must be an integer"),
    ],
)
def test_sample_bad_input(kwargs, match):
    args = {
        "images": torch.zeros(1, 1, 8, 8),
        "keypoints": torch.tensor([[[4.0, 4.0, 3.0]]]),
        "size": 4,
    } | kwargs
    with pytest.raises(ValueError, match=match):
        sample_patches(**args)


# ---------------------------------------------------------------- place_patches


def test_place_known_answer():
    patch = torch.tensor([[[[[1.0, 2.0], [3.0, 4.0]]]]])  # (1, 1, 1, 2, 2)
    canvas = place_patches(patch, torch.tensor([[[1.5, 0.5, 2.0]]]), (3, 4))  # window x in [0.5, 2.5]
    expected = torch.tensor([[0.0, 1.0, 2.0, 0.0], [0.0, 3.0, 4.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(canvas, expected.view(1, 1, 1, 3, 4))
    # twice as large: canvas pixel c reads the patch at (c - x + s/2) P / s - 1/2 = (c - 1.5 + 2) / 2 - 1/2
    wide = place_patches(patch, torch.tensor([[[1.5, 0.5, 4.0]]]), (1, 4))[0, 0, 0, 0]
    # row 0 reads patch row 0.25: rows mixed 3:1 -> [1.5, 2.5]; columns c read -0.25, 0.25, 0.75, 1.25,
    # with zero padding: .75 * 1.5, .75 * 1.5 + .25 * 2.5, .25 * 1.5 + .75 * 2.5, .75 * 2.5
    torch.testing.assert_close(wide, torch.tensor([1.125, 1.75, 2.25, 1.875]))


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_place_after_sample_reproduces_aligned_windows(dtype, tol):
    images = torch.rand(2, 3, 37, 53, generator=torch.Generator().manual_seed(3), dtype=dtype)
    keypoints, corners = _aligned_keypoints()
    canvas = place_patches(sample_patches(images, keypoints, size=8), keypoints, (37, 53))
    assert canvas.shape == (2, 3, 3, 37, 53) and canvas.dtype == dtype
    inside = torch.zeros(2, 1, 37, 53, dtype=torch.bool)
    for b, row in enumerate(corners):
        for x0, y0 in row:
            inside[b, :, y0 : y0 + 8, x0 : x0 + 8] = True
    total = canvas.sum(1)  # (B, C, H, W)
    torch.testing.assert_close(
        torch.where(inside, total, 0), torch.where(inside, images, 0), rtol=0, atol=tol
    )
    assert bool((total.masked_select(~inside).abs() <= tol).all()), "nothing may leak outside the windows"


def test_place_after_sample_reproduces_interior_of_unaligned_scaled_windows():
    # Tolerance: both steps are bilinear interpolations, which reproduce affine functions exactly, so on an
    # affine image the interior must match up to float64 rounding (1e-12). Interior = canvas pixels whose
    # patch-frame coordinate lies in [0, P - 1] on both axes (away from the half-pixel fade at the edges).
    height, width, size = 40, 50, 16
    images = _affine_image(height, width)
    keypoints = torch.tensor([[[12.3, 11.6, 13.7], [35.45, 25.2, 21.9]]], dtype=torch.float64)  # s != P
    canvas = place_patches(sample_patches(images, keypoints, size=size), keypoints, (height, width))
    total = canvas.sum(1)[0]  # (C, H, W)
    rows = torch.arange(height, dtype=torch.float64)[:, None]
    cols = torch.arange(width, dtype=torch.float64)[None]
    interior = torch.zeros(height, width, dtype=torch.bool)
    for k, (x, y, s) in enumerate(keypoints[0].tolist()):
        pu, pv = (cols - x + s / 2) * size / s - 0.5, (rows - y + s / 2) * size / s - 0.5
        interior |= (pu >= 0) & (pu <= size - 1) & (pv >= 0) & (pv <= size - 1)
        outside = (pu <= -1) | (pu >= size) | (pv <= -1) | (pv >= size)  # reads only zero padding
        assert bool((canvas[0, k][:, outside] == 0).all())
    assert int(interior.sum()) > 300
    torch.testing.assert_close(total[:, interior], images[0][:, interior], rtol=0, atol=1e-12)


def test_place_is_zero_outside_the_window():
    patch = torch.rand(1, 1, 2, 6, 6, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    x, y, s = 10.2, 7.9, 9.3
    canvas = place_patches(patch, torch.tensor([[[x, y, s]]], dtype=torch.float64), (20, 24))[0, 0]
    rows = torch.arange(20, dtype=torch.float64)[:, None]
    cols = torch.arange(24, dtype=torch.float64)[None]
    # a canvas pixel more than s/2 + half a patch pixel (s / 2P) from the centre reads only zero padding
    reach = s / 2 + s / (2 * 6)
    far = ((cols - x).abs() >= reach) | ((rows - y).abs() >= reach)
    assert bool((canvas[:, far] == 0).all())
    assert bool((canvas[:, ~far].abs().sum(0) > 0).all())


def test_place_lets_non_finite_patches_through_to_the_loss():
    patch = torch.full((1, 1, 1, 2, 2), float("nan"))
    canvas = place_patches(patch, torch.tensor([[[1.5, 1.5, 2.0]]]), (4, 4))[0, 0, 0]
    assert bool(canvas[1:3, 1:3].isnan().all())


def test_place_gradcheck_patches_and_keypoints():
    g = torch.Generator().manual_seed(5)
    patches = torch.rand(1, 2, 1, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    keypoints = torch.tensor(
        [[[2.41, 3.07, 3.4], [4.63, 2.29, 4.3]]], dtype=torch.float64, requires_grad=True
    )
    pixels = torch.arange(7, dtype=torch.float64)
    frames = pixels - keypoints[..., :2].detach()[..., None] + keypoints[..., 2:].detach()[..., None] / 2
    assert _away_from_kinks(frames * 3 / keypoints[..., 2:].detach()[..., None] - 0.5)
    assert torch.autograd.gradcheck(lambda p, x: place_patches(p, x, (6, 7)), (patches, keypoints))


def _place_on_full_canvases(patches: torch.Tensor, keypoints: torch.Tensor, size: tuple[int, int]):
    """Oracle: every patch resampled onto a whole H x W canvas by one grid_sample, (B, K, C, H, W)."""
    batch, k, channels, side, _ = patches.shape
    x, y, s = (t[..., None] for t in keypoints.unbind(-1))  # (B, K, 1)
    u = 2 * (torch.arange(size[1], dtype=patches.dtype) - x) / s  # (B, K, W)
    v = 2 * (torch.arange(size[0], dtype=patches.dtype) - y) / s  # (B, K, H)
    grid = torch.stack(torch.broadcast_tensors(u[:, :, None, :], v[:, :, :, None]), -1)
    flat = F.grid_sample(
        patches.reshape(batch * k, channels, side, side),
        grid.reshape(batch * k, *size, 2),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )
    return flat.view(batch, k, channels, *size)


@pytest.mark.parametrize("composite", [None, "sum", "max"])
def test_place_on_local_canvases_equals_full_canvases(composite):
    # windows inside, across the border and wholly outside the image, of several sizes and overlapping. Their
    # edges avoid pixel centres: there a sample is exactly 0 with a non-zero slope, and the max's gradient
    # at the tie with the zero background is split one way by amax over canvases and another by scatter.
    g = torch.Generator().manual_seed(6)
    patches = torch.rand(2, 5, 2, 8, 8, generator=g, requires_grad=True)
    keypoints = torch.tensor(
        [
            [[10.3, 12.7, 9.1], [0.4, 30.2, 14.0], [35.9, 1.2, 6.5], [-30.0, 12.0, 9.0], [20.3, 19.6, 15.4]],
            [[20.1, 20.6, 7.7], [21.3, 19.8, 12.2], [38.7, 25.5, 11.0], [5.7, 5.2, 8.3], [15.0, 60.0, 10.0]],
        ],
        requires_grad=True,
    )
    weights = torch.randn(2, 5, 2, 30, 40, generator=g)  # a loss that weights every pixel differently
    full = _place_on_full_canvases(patches, keypoints, (30, 40))  # (B, K, C, H, W)
    local = place_patches(patches, keypoints, (30, 40), composite)
    if composite is None:
        expected, weights = full, weights
    else:
        expected, weights = (full.sum(1) if composite == "sum" else full.amax(1).clamp_min(0)), weights[:, 0]
    torch.testing.assert_close(local, expected, rtol=0, atol=1e-5)
    grads = torch.autograd.grad((local * weights).sum(), (patches, keypoints))
    expected_grads = torch.autograd.grad((expected * weights).sum(), (patches, keypoints))
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert float(grads[1].abs().sum()) > 0


def test_local_canvases_hold_every_pixel_a_patch_reaches():
    patches = torch.ones(1, 3, 1, 4, 4)
    keypoints = torch.tensor([[[10.0, 10.0, 6.0], [10.49, 9.51, 8.0], [4.0, 4.0, 4.0]]])
    canvases, corner = local_canvases(patches, keypoints)
    side = canvases.shape[-1]
    assert side == math.ceil(8 * (1 + 1 / 4)) + 2  # from the largest window of the batch
    full = _place_on_full_canvases(patches, keypoints, (20, 20))
    for k in range(3):
        row, col = corner[0, k].tolist()
        reached = full[0, k, 0].nonzero() - torch.tensor([row, col])  # (n, 2) in the local frame
        assert bool((reached >= 0).all() and (reached < side).all()), k
        assert torch.allclose(full[0, k].sum(), canvases[0, k].sum())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"patches": torch.zeros(1, 1, 4, 4)},
            r"patches must have shape \(B, K, C, P, P\), got shape \(1, 1, 4, 4\)",
        ),
        ({"patches": torch.zeros(1, 1, 1, 4, 3)}, r"patches must be square.*got shape \(1, 1, 1, 4, 3\)"),
        ({"patches": torch.zeros(1, 1, 1, 4, 4, dtype=torch.int64)}, "patches must be a floating-point"),
        (
            {"keypoints": torch.zeros(1, 1, 4)},
            r"keypoints must have shape \(B, K, 3\).*got shape \(1, 1, 4\)",
        ),
        ({"keypoints": torch.ones(1, 2, 3)}, r"keypoints has K = 2 keypoints, expected K = 1"),
        ({"keypoints": torch.ones(3, 1, 3)}, "keypoints has batch size 3, expected 1"),
        ({"image_size": 8}, r"image_size must be \(H, W\)"),
        ({"image_size": (8, -1)}, r"image_size\[1\] \(W\) must be >= 1, got -1"),
    ],
)
def test_place_bad_input(kwargs, match):
    args = {
        "patches": torch.zeros(1, 1, 1, 4, 4),
        "keypoints": torch.tensor([[[4.0, 4.0, 3.0]]]),
        "image_size": (8, 8),
    }
    with pytest.raises(ValueError, match=match):
        place_patches(**(args | kwargs))
