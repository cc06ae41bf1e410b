"""Tests of mistlib.heatmap: the local spatial softmax and the multiscale heatmap network (§4)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from mistlib.heatmap import HeatmapConfig, HeatmapNet, local_spatial_softmax, window_max, window_sum


def _softmax_oracle(scores: torch.Tensor, kernel_size: int, strength: float) -> torch.Tensor:
    """Brute-force local softmax with Python loops; replicate border = clamp the indices into the image."""
    batch, num_scales, height, width = scores.shape
    r = kernel_size // 2

    def window(i: int, j: int) -> list[tuple[int, int]]:
        return [
            (min(max(a, 0), height - 1), min(max(b, 0), width - 1))
            for a in range(i - r, i + r + 1)
            for b in range(j - r, j + r + 1)
        ]

    out = torch.zeros_like(scores)
    for n in range(batch):
        for c in range(num_scales):
            v = scores[n, c].tolist()
            local_max = [[max(v[a][b] for a, b in window(i, j)) for j in range(width)] for i in range(height)]
            e = [
                [math.exp(strength * (v[i][j] - local_max[i][j])) for j in range(width)]
                for i in range(height)
            ]
            for i in range(height):
                for j in range(width):
                    out[n, c, i, j] = e[i][j] / (sum(e[a][b] for a, b in window(i, j)) + 1e-6)
    return out


# ---------------------------------------------------------------- local_spatial_softmax


@pytest.mark.parametrize("kernel_size", [1, 3, 5])
def test_local_softmax_matches_bruteforce_oracle(kernel_size):
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(2, 2, 7, 9, generator=g, dtype=torch.float64)
    out = local_spatial_softmax(scores, kernel_size=kernel_size, strength=3.0)
    torch.testing.assert_close(out, _softmax_oracle(scores, kernel_size, 3.0), rtol=1e-12, atol=1e-12)


def test_local_softmax_known_answer_on_one_row():
    # v = [0, 1, 0], 3x3 window, strength 1. Every window holds the peak, so M = 1 and e = [1/e, 1, 1/e].
    # H = 1: replication repeats the row above and below, so each window sum is 3 * (2/e + 1).
    scores = torch.tensor([[[[0.0, 1.0, 0.0]]]], dtype=torch.float64)
    out = local_spatial_softmax(scores, kernel_size=3, strength=1.0)
    denominator = 3 * (2 * math.exp(-1) + 1) + 1e-6
    expected = torch.tensor([[[[math.exp(-1), 1.0, math.exp(-1)]]]], dtype=torch.float64) / denominator
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=0)


def test_kernel_size_one_is_identity_up_to_eps():
    scores = torch.randn(1, 3, 4, 5, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(
        local_spatial_softmax(scores, kernel_size=1), torch.full_like(scores, 1 / (1 + 1e-6))
    )


def test_isolated_peak_survives_and_neighbours_of_a_stronger_peak_are_suppressed():
    scores = torch.zeros(1, 1, 40, 40)
    scores[0, 0, 10, 10] = 3.0  # strong peak
    scores[0, 0, 10, 17] = 2.0  # 7 px away: inside the 15x15 window of the strong peak -> suppressed
    scores[0, 0, 30, 22] = 2.0  # 8 rows and 12 columns from the others: isolated -> survives
    scores[0, 0, 30, 30] = 2.0  # 8 px from the previous one: just outside its window -> survives too
    out = local_spatial_softmax(scores, kernel_size=15, strength=10.0)[0, 0]
    assert out[10, 10] == pytest.approx(1.0, abs=1e-4)
    assert out[30, 22] == pytest.approx(1.0, abs=1e-4)
    assert out[30, 30] == pytest.approx(1.0, abs=1e-4)
    assert out[10, 17] < 1e-4  # exp(10 * (2 - 3)) = 4.5e-5
    assert out[10, 11] < 1e-12  # background next to the peak: exp(-30)
    assert (out > 0.5).sum() == 3


def test_constant_map_has_no_border_bias():
    scores = torch.full((2, 3, 20, 31), 0.7)
    out = local_spatial_softmax(scores, kernel_size=15, strength=10.0)
    # every window, border ones included, holds 225 values e = 1
    torch.testing.assert_close(out, torch.full_like(out, 1 / (225 + 1e-6)), rtol=1e-6, atol=0)


def test_border_pixel_of_a_ramp_is_not_favoured():
    # scores vary along x only, so every row sees the same values: with replication the top and bottom
    # rows must come out as the middle row (zero padding would make their window sums smaller).
    scores = torch.linspace(0, 1, 30).expand(1, 1, 30, 30)
    out = local_spatial_softmax(scores, kernel_size=15, strength=10.0)[0, 0]
    assert torch.allclose(out[0], out[15]), "rows at the border and in the middle must agree"


def test_local_softmax_gradcheck():
    scores = torch.randn(1, 1, 5, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    scores.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda v: local_spatial_softmax(v, kernel_size=3, strength=2.0), (scores,)
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"scores": torch.zeros(1, 5, 5)}, r"scores must have shape \(B, S, H, W\), got shape \(1, 5, 5\)"),
        ({"scores": torch.zeros(1, 1, 5, 5, dtype=torch.int64)}, "scores must be a floating-point"),
        ({"scores": torch.full((1, 1, 5, 5), float("nan"))}, "scores contains 25 NaN"),
        ({"kernel_size": 4}, "kernel_size must be odd.*got 4"),
        ({"kernel_size": 0}, "kernel_size must be >= 1, got 0"),
        ({"kernel_size": 3.0}, "kernel_size must be an integer"),
        ({"strength": 0.0}, "strength must be a positive number"),
    ],
)
def test_local_softmax_bad_input(kwargs, match):
    args = {"scores": torch.zeros(1, 1, 5, 5), "kernel_size": 3, "strength": 1.0} | kwargs
    with pytest.raises(ValueError, match=match):
        local_spatial_softmax(**args)


# ---------------------------------------------------------------- HeatmapConfig / HeatmapNet


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ({"scales": (20.0, 16.0)}, "scales must be .*strictly increasing"),
        ({"scales": ()}, "scales must be non-empty"),
        ({"scales": (0.0, 16.0)}, "scales must be .*positive"),
        ({"softmax_kernel": 14}, "kernel_size must be odd"),
        ({"reference_size": 0.0}, "reference_size must be positive"),
        ({"in_channels": 0}, "in_channels must be >= 1"),
    ],
)
def test_config_rejects_bad_values(override, match):
    with pytest.raises(ValueError, match=match):
        HeatmapConfig(**override)


@pytest.mark.parametrize("scales", [(20.0,), (16.0, 25.0), (16.0, 20.0, 25.0)])
@pytest.mark.parametrize("size", [(80, 80), (37, 53)])
def test_heatmapnet_shapes_and_range(scales, size):
    torch.manual_seed(0)
    net = HeatmapNet(HeatmapConfig(scales=scales))
    images = torch.rand(2, 1, *size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        heatmap, scores = net(images), net.scores(images)
    assert heatmap.shape == scores.shape == (2, len(scales), *size)
    assert heatmap.dtype == torch.float32
    assert bool((heatmap > 0).all()) and bool((heatmap <= 1).all())
    torch.testing.assert_close(heatmap, local_spatial_softmax(scores, 15, 10.0))


def test_heatmapnet_gradients_reach_every_parameter():
    torch.manual_seed(0)
    net = HeatmapNet(HeatmapConfig(in_channels=3))
    images = torch.rand(2, 3, 24, 30, generator=torch.Generator().manual_seed(1))
    weights = torch.randn(2, 3, 24, 30, generator=torch.Generator().manual_seed(2))
    (net(images) * weights).sum().backward()
    largest = max(float(p.grad.abs().max()) for p in net.parameters())
    for name, parameter in net.named_parameters():
        assert parameter.grad is not None, name
        if name == "head.bias":
            # the local softmax ignores a constant added to every score (up to its 1e-6 in the denominator),
            # so the head's bias has no gradient but rounding noise, which is exactly 0 on some processors
            assert float(parameter.grad.abs().max()) < 1e-4 * largest
        else:
            assert bool(parameter.grad.abs().sum() > 0), name


def test_heatmapnet_has_one_trunk_shared_by_all_scales():
    torch.manual_seed(0)
    one = HeatmapNet(HeatmapConfig(scales=(20.0,)))
    three = HeatmapNet(HeatmapConfig(scales=(16.0, 20.0, 25.0)))
    assert one.state_dict().keys() == three.state_dict().keys()
    assert sum(isinstance(m, torch.nn.Conv2d) for m in three.modules()) == 1 + 2 * 4 + 1
    three.load_state_dict(one.state_dict())
    images = torch.rand(1, 1, 40, 44, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        # scale 20 = reference_size: factor 1, the trunk on the image itself, in both networks
        torch.testing.assert_close(three.scores(images)[:, 1:2], one.scores(images))
        torch.testing.assert_close(one.scores(images), one.trunk(images))


def test_scale_maps_to_resize_factor_reference_over_scale():
    net = HeatmapNet(HeatmapConfig(scales=(10.0, 20.0, 40.0), reference_size=20.0))
    seen, trunk = [], net.trunk
    net.trunk = lambda images: seen.append(tuple(images.shape[-2:])) or trunk(images)  # record each call
    with torch.no_grad():
        net(torch.rand(1, 1, 80, 80))
        net(torch.rand(1, 1, 37, 53))
    # a small scale (10 px) enlarges the image by 2; a large one (40 px) shrinks it by 2
    assert seen == [(160, 160), (80, 80), (40, 40), (74, 106), (37, 53), (18, 26)]
    assert net.resize_factors() == [2.0, 1.0, 0.5]


def test_heatmapnet_has_no_border_bias_on_a_constant_image():
    torch.manual_seed(0)
    net = HeatmapNet()
    with torch.no_grad():
        scores = net.scores(torch.full((1, 1, 37, 53), 0.3))
        heatmap = net(torch.full((1, 1, 37, 53), 0.3))
    torch.testing.assert_close(scores, scores[..., :1, :1].expand_as(scores), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(heatmap, torch.full_like(heatmap, 1 / (225 + 1e-6)), rtol=1e-4, atol=0)


def test_scales_is_a_float_buffer_that_moves_with_the_module():
    net = HeatmapNet(dataclasses.replace(HeatmapConfig(), scales=(12.0, 24.0)))
    assert "scales" in dict(net.named_buffers())
    assert net.scales.dtype == torch.float32 and net.scales.tolist() == [12.0, 24.0]
    assert net.to(torch.float64).scales.dtype == torch.float64


@pytest.mark.parametrize(
    ("images", "match"),
    [
        (torch.zeros(1, 80, 80), r"images must have shape \(B, C, H, W\), got shape \(1, 80, 80\)"),
        (torch.zeros(1, 3, 20, 20), r"images must have 1 channel.*got shape \(1, 3, 20, 20\)"),
        (torch.zeros(1, 1, 20, 20, dtype=torch.uint8), "images must be a floating-point tensor"),
        (torch.full((1, 1, 20, 20), float("inf")), "images contains 400 NaN or infinite"),
    ],
)
def test_heatmapnet_bad_input(images, match):
    net = HeatmapNet()
    with pytest.raises(ValueError, match=match):
        net(images)
    with pytest.raises(ValueError, match=match):
        net.scores(images)


@pytest.mark.parametrize(("kernel", "padding"), [(15, 0), (5, 2), (1, 0), (3, 1), (16, 0), (6, 3)])
def test_window_max_is_max_pool(kernel, padding):
    x = torch.randn(2, 3, 20, 23, generator=torch.Generator().manual_seed(7))
    assert torch.equal(window_max(x, kernel, padding), F.max_pool2d(x, kernel, 1, padding))


@pytest.mark.parametrize("kernel", [1, 2, 3, 7, 15, 16])
def test_window_sum_is_a_box_filter(kernel):
    x = torch.rand(2, 3, 20, 23, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    torch.testing.assert_close(window_sum(x, kernel), F.avg_pool2d(x, kernel, 1) * kernel**2)


def test_window_max_gradient_goes_to_the_window_maxima():
    x = torch.randn(1, 2, 12, 13, generator=torch.Generator().manual_seed(9), requires_grad=True)
    weights = torch.rand(1, 2, 8, 9, generator=torch.Generator().manual_seed(10))
    (grad,) = torch.autograd.grad((window_max(x, 5) * weights).sum(), x)
    (expected,) = torch.autograd.grad((F.max_pool2d(x, 5, 1) * weights).sum(), x)
    torch.testing.assert_close(grad, expected)
    with torch.no_grad():
        assert torch.equal(window_max(x, 5), F.max_pool2d(x, 5, 1))  # the doubling path, same values
