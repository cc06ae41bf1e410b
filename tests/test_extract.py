"""Tests of mistlib.extract: the top-K extractor E_K (eq. 2-4) and the target heatmap E_K^{-1} (§6)."""

from __future__ import annotations

import pytest
import torch

from mistlib.extract import lift_target, suppressed, target_heatmap, topk_extract

SCALES = torch.tensor([12.0, 16.0, 24.0, 30.0])


# ---------------------------------------------------------------- topk_extract


def test_topk_known_answer():
    h = torch.zeros(1, 2, 4, 5)
    h[0, :, 1, 3] = torch.tensor([0.9, 0.3])  # peak 0.9; moment (0.9 * 10 + 0.3 * 20) / 1.2 = 12.5
    h[0, :, 2, 0] = torch.tensor([0.0, 0.5])  # peak 0.5; all weight on scale 20
    h[0, :, 3, 4] = torch.tensor([0.2, 0.2])  # peak 0.2; moment 15
    out = topk_extract(h, 3, torch.tensor([10.0, 20.0]))
    expected = torch.tensor([[[3.0, 1.0, 12.5], [0.0, 2.0, 20.0], [4.0, 3.0, 15.0]]])
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=0)


def test_x_is_the_column_and_y_the_row():
    h = torch.zeros(2, 1, 3, 7)
    h[0, 0, 1, 5] = 1.0
    h[1, 0, 2, 0] = 1.0
    out = topk_extract(h, 1, torch.tensor([20.0]))
    assert out[:, 0, :2].tolist() == [[5.0, 1.0], [0.0, 2.0]]


def test_locations_come_from_the_raw_maximum_not_the_scale_normalised_one():
    # weak pixel: 1e-3 at one scale only -> scale-normalised by eq. (2) it would score 1e-3 / (1e-3 + 1e-6),
    # about 0.999, above the real peak's 0.6 / 1.2 = 0.5
    h = torch.zeros(1, 2, 5, 5)
    h[0, :, 2, 3] = torch.tensor([0.6, 0.6])
    h[0, 0, 4, 0] = 1e-3
    out = topk_extract(h, 1, torch.tensor([10.0, 20.0]))
    torch.testing.assert_close(out, torch.tensor([[[3.0, 2.0, 15.0]]]), rtol=1e-5, atol=0)


def test_topk_returns_distinct_pixels_in_decreasing_score_order():
    g = torch.Generator().manual_seed(0)
    h = torch.rand(3, 4, 9, 11, generator=g)
    k = 20
    out = topk_extract(h, k, SCALES)
    assert out.shape == (3, k, 3) and out.dtype == h.dtype
    x, y = out[..., 0].long(), out[..., 1].long()
    assert torch.equal(out[..., 0], x.float()) and torch.equal(out[..., 1], y.float())
    peak = h.amax(1)  # (B, H, W)
    picked = peak[torch.arange(3)[:, None], y, x]  # (B, K)
    torch.testing.assert_close(picked, peak.flatten(1).sort(1, descending=True).values[:, :k])
    assert bool((picked[:, 1:] <= picked[:, :-1]).all())
    assert all(len(set((y[b] * 11 + x[b]).tolist())) == k for b in range(3))
    # s is the scale moment of eq. (4) at each selected pixel
    weights = h[torch.arange(3)[:, None], :, y, x]  # (B, K, S)
    torch.testing.assert_close(out[..., 2], (weights * SCALES).sum(-1) / (weights.sum(-1) + 1e-6))
    assert bool((out[..., 2] >= SCALES[0] * 0.999).all()) and bool((out[..., 2] <= SCALES[-1]).all())


def test_k_equal_to_h_times_w_returns_every_pixel():
    h = torch.rand(1, 1, 3, 4, generator=torch.Generator().manual_seed(1))
    out = topk_extract(h, 12, torch.tensor([20.0]))
    assert sorted((out[0, :, 1] * 4 + out[0, :, 0]).long().tolist()) == list(range(12))


def test_scale_is_differentiable_at_the_selected_pixels_only():
    g = torch.Generator().manual_seed(2)
    h = torch.rand(1, 3, 6, 6, generator=g, dtype=torch.float64).requires_grad_(True)
    scales = torch.tensor([10.0, 20.0, 40.0], dtype=torch.float64)
    out = topk_extract(h, 2, scales)
    out[..., 2].sum().backward()
    x, y, s = out[0, :, 0].long(), out[0, :, 1].long(), out[0, :, 2].detach()
    mask = torch.zeros(6, 6, dtype=torch.bool)
    mask[y, x] = True
    assert bool((h.grad[0][:, ~mask] == 0).all())
    # ds/dh_s = (scale_s - s) / (sum_s h_s + eps) at a selected pixel
    total = h.detach()[0][:, y, x].sum(0)  # (K,)
    expected = (scales[:, None] - s[None]) / (total[None] + 1e-6)  # (S, K)
    torch.testing.assert_close(h.grad[0][:, y, x], expected)


def test_a_pick_where_the_heatmap_is_zero_gets_the_smallest_scale_not_zero():
    h = torch.zeros(1, 2, 6, 6)
    h[0, :, 1, 1] = torch.tensor([0.2, 0.6])  # one peak; every other pixel is exactly 0 at both scales
    picks = topk_extract(h, 3, torch.tensor([10.0, 20.0]), nms=3)
    assert picks[0, 0].tolist() == pytest.approx([1.0, 1.0, 17.5], abs=1e-4)
    assert picks[0, 1:, 2].tolist() == [10.0, 10.0]  # eq. (4)'s 0 / (0 + eps) would give 0


def test_scales_on_another_dtype_are_accepted():
    h = torch.rand(1, 2, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    assert topk_extract(h, 2, torch.tensor([10.0, 20.0])).dtype == torch.float64


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": 0}, r"k must be an integer in \[1, H \* W = 20\], got k = 0"),
        ({"k": 21}, r"k must be an integer in \[1, H \* W = 20\], got k = 21"),
        ({"k": 2.0}, r"k must be an integer .* got k = 2.0"),
        ({"heatmap": torch.zeros(2, 4, 5)}, r"heatmap must have shape \(B, S, H, W\), got shape \(2, 4, 5\)"),
        ({"heatmap": torch.zeros(1, 2, 4, 5, dtype=torch.int32)}, "heatmap must be a floating-point"),
        ({"heatmap": torch.full((1, 2, 4, 5), float("nan"))}, "heatmap contains 40 NaN"),
        ({"scales": torch.tensor([10.0, 20.0, 30.0])}, r"scales must have S = 2 entries .* got 3"),
        ({"scales": torch.tensor([20.0, 10.0])}, "scales must be strictly increasing"),
        ({"scales": torch.tensor([-1.0, 10.0])}, "scales must be positive"),
        ({"scales": torch.tensor([[10.0, 20.0]])}, r"scales must have shape \(S,\)"),
    ],
)
def test_topk_bad_input(kwargs, match):
    args = {"heatmap": torch.zeros(1, 2, 4, 5), "k": 3, "scales": torch.tensor([10.0, 20.0])} | kwargs
    with pytest.raises(ValueError, match=match):
        topk_extract(**args)


# ---------------------------------------------------------------- non-maximum suppression


def _two_blobs() -> torch.Tensor:
    """(1, 2, 12, 12): a broad, strong blob at (x=3, y=4) and a weak sharp peak at (x=9, y=8)."""
    yy, xx = torch.meshgrid(torch.arange(12.0), torch.arange(12.0), indexing="ij")
    broad = torch.exp(-((xx - 3) ** 2 + (yy - 4) ** 2) / 8)  # its neighbours exceed 0.5
    h = torch.stack([broad, 0.5 * broad])[None].clone()
    h[0, :, 8, 9] = torch.tensor([0.0, 0.4])  # the weak peak, on the larger scale only
    return h


def test_without_nms_a_broad_peak_takes_every_place():
    picks = topk_extract(_two_blobs(), 3, torch.tensor([10.0, 20.0]))
    assert picks[0, 0, :2].tolist() == [3.0, 4.0]
    assert (picks[0, :, :2] - torch.tensor([3.0, 4.0])).abs().max() <= 1  # all three on the broad blob


@pytest.mark.parametrize("nms", [3, 5])
def test_nms_gives_each_peak_one_pick_then_fills_with_the_best_other_pixels(nms):
    picks = topk_extract(_two_blobs(), 3, torch.tensor([10.0, 20.0]), nms=nms)
    assert picks[0, 0].tolist() == pytest.approx([3.0, 4.0, 10.0 * 2 / 3 + 20.0 / 3], abs=1e-4)
    assert picks[0, 1].tolist() == pytest.approx([9.0, 8.0, 20.0], abs=1e-4)  # the weak peak comes second
    # only two local maxima exist: the third place goes to the strongest remaining pixel, a neighbour
    assert (picks[0, 2, :2] - torch.tensor([3.0, 4.0])).abs().max() == 1


def test_nms_ranks_local_maxima_by_their_exact_scores():
    # a strong peak and two faint local maxima, 0 and 1e-16 (underflowed softmax): the second pick must be
    # the 1e-16 one, although adding a shift of about 1 to both would make them equal in float32
    h = torch.zeros(1, 1, 1, 9)
    h[0, 0, 0, 4], h[0, 0, 0, 8] = 1.0, 1e-16  # the 0 at column 0 is a local maximum too, and comes first
    picks = topk_extract(h, 2, torch.tensor([10.0]), nms=3)
    assert picks[0, :, 0].tolist() == [4.0, 8.0]


def test_nms_one_is_plain_top_k():
    h = torch.rand(3, 2, 9, 11, generator=torch.Generator().manual_seed(0))
    scales = torch.tensor([10.0, 20.0])
    picks = topk_extract(h, 7, scales, nms=1)
    flat = (picks[..., 1] * 11 + picks[..., 0]).long()  # (3, 7) flat pixel indices
    assert torch.equal(flat, h.amax(1).flatten(1).topk(7).indices)  # the 7 highest pixels, neighbours or not
    assert torch.equal(picks, topk_extract(h, 7, scales))  # and the default


def test_nms_keeps_e_k_an_inverse_of_the_target_for_keypoints_farther_apart_than_its_window():
    g = torch.Generator().manual_seed(1)
    cells = torch.stack([torch.randperm(16, generator=g)[:5] for _ in range(3)])  # (3, 5) of a 4x4 grid
    keypoints = torch.stack([(cells % 4) * 6.0 + 2, (cells // 4) * 6.0 + 3, torch.full((3, 5), 15.0)], -1)
    h = target_heatmap(keypoints, torch.tensor([10.0, 20.0]), (24, 24))
    out = topk_extract(h, 5, torch.tensor([10.0, 20.0]), nms=5)
    for b in range(3):
        order = (keypoints[b, :, 1] * 24 + keypoints[b, :, 0]).argsort()
        found = out[b][(out[b, :, 1] * 24 + out[b, :, 0]).argsort()]
        torch.testing.assert_close(found, keypoints[b][order], rtol=1e-5, atol=0)


@pytest.mark.parametrize("nms", [0, 2, 4.0, True, -3])
def test_nms_must_be_an_odd_positive_integer(nms):
    with pytest.raises(ValueError, match="nms must be an odd positive integer"):
        topk_extract(torch.rand(1, 2, 6, 6), 2, torch.tensor([10.0, 20.0]), nms=nms)


# ---------------------------------------------------------------- target_heatmap


def test_target_known_answers():
    scales = torch.tensor([10.0, 20.0, 25.0])
    keypoints = torch.tensor(
        [
            [
                [2.4, 0.6, 12.5],  # pixel (1, 2): 0.75 at 10, 0.25 at 20
                [2.5, 2.2, 22.5],  # x = 2.5 rounds up to 3; 0.5 at 20, 0.5 at 25
                [-3.0, 9.0, 5.0],  # clamped into the image at (2, 0); s clamped to 10
                [5.6, 0.0, 99.0],  # x clamped to column 4; s clamped to 25
            ]
        ]
    )
    h = target_heatmap(keypoints, scales, (3, 5))
    expected = torch.zeros(1, 3, 3, 5)
    expected[0, :, 1, 2] = torch.tensor([0.75, 0.25, 0.0])
    expected[0, :, 2, 3] = torch.tensor([0.0, 0.5, 0.5])
    expected[0, :, 2, 0] = torch.tensor([1.0, 0.0, 0.0])
    expected[0, :, 0, 4] = torch.tensor([0.0, 0.0, 1.0])
    torch.testing.assert_close(h, expected)


def test_target_with_a_single_scale_puts_all_mass_on_it():
    h = target_heatmap(torch.tensor([[[1.0, 1.0, 50.0], [0.0, 0.0, 3.0]]]), torch.tensor([20.0]), (2, 2))
    torch.testing.assert_close(h, torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]]))


def test_target_keypoints_on_the_same_pixel_add_up():
    keypoints = torch.tensor([[[1.2, 1.0, 10.0], [0.8, 1.4, 20.0]]])
    h = target_heatmap(keypoints, torch.tensor([10.0, 20.0]), (3, 3))
    assert h[0, :, 1, 1].tolist() == [1.0, 1.0] and float(h.sum()) == 2.0


def test_target_mass_scales_or_leaves_out_keypoints():
    keypoints = torch.tensor([[[1.0, 1.0, 10.0], [3.0, 2.0, 15.0]]])
    scales = torch.tensor([10.0, 20.0])
    h = target_heatmap(keypoints, scales, (4, 5), mass=torch.tensor([[0.0, 2.0]]))
    expected = torch.zeros(1, 2, 4, 5)
    expected[0, :, 2, 3] = torch.tensor([1.0, 1.0])  # mass 2 split half-half between 10 and 20
    torch.testing.assert_close(h, expected)


def test_suppressed_is_greedy_in_order_and_uses_the_rounded_chebyshev_distance():
    # 0 at (10, 10); 1 six px right (inside a 13 x 13 window); 2 at 6.6 px, which rounds to 7 (outside);
    # 3 is within the window of 1 only, which is itself suppressed, so 3 stays
    keypoints = torch.tensor(
        [[[10.0, 10.0, 20.0], [16.0, 10.0, 20.0], [10.0, 16.6, 20.0], [22.0, 10.0, 20.0]]]
    )
    assert suppressed(keypoints, 13).tolist() == [[False, True, False, False]]
    assert suppressed(keypoints, 1).tolist() == [[False, False, False, False]]
    middle_first = keypoints[:, [1, 0, 3]]  # (16, 10) first: both its neighbours 6 px away go
    assert suppressed(middle_first, 13).tolist() == [[False, True, True]]
    scales = torch.tensor([16.0, 24.0])
    thinned = lift_target(keypoints, scales, (32, 32), sigma=0.0, nms=13)
    assert float(thinned.sum()) == 3.0 and float(thinned[0, :, 10, 16].sum()) == 0.0
    # the thinned target is one E_K with the same suppression picks back in full
    picks = topk_extract(thinned, 3, scales, nms=13)
    assert sorted(map(tuple, picks[0, :, :2].tolist())) == [(10.0, 10.0), (10.0, 17.0), (22.0, 10.0)]


def test_extract_inverts_target_heatmap_on_random_keypoints():
    g = torch.Generator().manual_seed(4)
    batch, k, height, width = 4, 6, 20, 23
    pixel = torch.stack([torch.randperm(height * width, generator=g)[:k] for _ in range(batch)])  # distinct
    jitter = torch.rand(batch, k, 2, generator=g) * 0.98 - 0.49  # stays on the same pixel when rounded
    x = (pixel % width).float() + jitter[..., 0]
    y = (pixel // width).float() + jitter[..., 1]
    s = torch.rand(batch, k, generator=g) * 24 + 9  # [9, 33]: some below and above the scale range
    keypoints = torch.stack([x, y, s], dim=-1)
    h = target_heatmap(keypoints, SCALES, (height, width))
    assert h.shape == (batch, 4, height, width)
    torch.testing.assert_close(h.sum((1, 2, 3)), torch.full((batch,), float(k)))
    out = topk_extract(h, k, SCALES)
    expected_s = s.clamp(float(SCALES[0]), float(SCALES[-1]))
    for b in range(batch):
        found = {(int(px), int(py)): float(ps) for px, py, ps in out[b].tolist()}
        wanted = {
            (int(px), int(py)): float(ps)
            for px, py, ps in zip(pixel[b] % width, pixel[b] // width, expected_s[b], strict=True)
        }
        assert found.keys() == wanted.keys()
        for key, value in wanted.items():
            assert abs(found[key] - value) / value < 1e-5, (key, found[key], value)


def test_target_follows_dtype_and_device_of_keypoints():
    h = target_heatmap(
        torch.tensor([[[1.0, 1.0, 15.0]]], dtype=torch.float64), torch.tensor([10.0, 20.0]), [2, 3]
    )
    assert h.dtype == torch.float64 and h.shape == (1, 2, 2, 3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"keypoints": torch.zeros(1, 2, 2)},
            r"keypoints must have shape \(B, K, 3\).*got shape \(1, 2, 2\)",
        ),
        ({"keypoints": torch.zeros(2, 3)}, r"keypoints must have shape \(B, K, 3\).*got shape \(2, 3\)"),
        ({"keypoints": torch.tensor([[[1.0, 1.0, 0.0]]])}, "keypoints must have positive patch sides"),
        ({"keypoints": torch.tensor([[[1.0, float("nan"), 5.0]]])}, "keypoints contains 1 NaN"),
        ({"scales": torch.tensor([10.0, 10.0])}, "scales must be strictly increasing"),
        ({"size": (3,)}, r"size must be \(H, W\)"),
        ({"size": (0, 3)}, r"size\[0\] \(H\) must be >= 1, got 0"),
        ({"size": (3, 2.5)}, r"size\[1\] \(W\) must be an integer"),
    ],
)
def test_target_bad_input(kwargs, match):
    args = {
        "keypoints": torch.tensor([[[1.0, 1.0, 15.0]]]),
        "scales": torch.tensor([10.0, 20.0]),
        "size": (3, 3),
    }
    with pytest.raises(ValueError, match=match):
        target_heatmap(**(args | kwargs))
