"""Task losses (§5): eqs. (6) and (7) by hand, their gradients and their input checks."""

from __future__ import annotations

import math

import pytest
import torch

from mistlib.losses import histogram_loss_sq, multi_instance_loss, reconstruct, reconstruction_loss

# ---------------------------------------------------------------- eq. (6)


def test_reconstruction_of_an_aligned_crop_is_exact():
    g = torch.Generator().manual_seed(0)
    images = torch.zeros(1, 1, 40, 44)
    images[0, 0, 5:37, 3:35] = torch.rand(32, 32, generator=g)  # content only inside one 32 x 32 window
    patch = images[:, None, :, 5:37, 3:35]  # (1, 1, 1, 32, 32), the crop
    keypoints = torch.tensor([[[3 + 15.5, 5 + 15.5, 32.0]]])  # its window: centre and side
    assert torch.allclose(reconstruct(patch, keypoints, (40, 44)), images, atol=1e-6)
    assert float(reconstruction_loss(images, patch, keypoints)) < 1e-12


def test_reconstruction_sums_the_placed_patches():
    ones = torch.ones(1, 2, 1, 4, 4)
    keypoints = torch.tensor([[[1.5, 1.5, 4.0], [3.5, 1.5, 4.0]]])  # columns 0-3 and 2-5: overlap at 2-3
    row = reconstruct(ones, keypoints, (4, 8))[0, 0, 0]
    assert row.tolist() == [1, 1, 2, 2, 1, 1, 0, 0]


def test_max_composite_takes_the_brightest_placed_patch():
    patches = torch.stack([torch.full((1, 4, 4), 0.25), torch.full((1, 4, 4), 0.75)])[None]  # (1, 2, 1, 4, 4)
    keypoints = torch.tensor([[[1.5, 1.5, 4.0], [3.5, 1.5, 4.0]]])  # columns 0-3 and 2-5: overlap at 2-3
    row = reconstruct(patches, keypoints, (4, 8), composite="max")[0, 0, 0]
    assert row.tolist() == [0.25, 0.25, 0.75, 0.75, 0.75, 0.75, 0, 0]
    images = torch.zeros(1, 1, 4, 8)
    assert reconstruction_loss(images, patches, keypoints, composite="max").item() == pytest.approx(
        4 * (2 * 0.25**2 + 4 * 0.75**2) / 32  # 4 identical rows of 8 pixels
    )
    with pytest.raises(ValueError, match="composite must be one of"):
        reconstruct(patches, keypoints, (4, 8), composite="mean")


def test_reconstruction_loss_of_blank_patches_is_the_mean_square_of_the_image():
    images = torch.rand(3, 2, 20, 24)
    keypoints = torch.tensor([[10.0, 9.0, 12.0], [3.0, 4.0, 8.0]]).expand(3, 2, 3)
    blank = torch.zeros(3, 2, 2, 32, 32)
    assert torch.allclose(reconstruction_loss(images, blank, keypoints), images.square().mean())
    per_image = reconstruction_loss(images, blank, keypoints, reduction="none")
    assert torch.allclose(per_image, images.square().mean((1, 2, 3)))


def test_reconstruction_loss_is_differentiable_in_patches_and_keypoints():
    images = torch.rand(2, 1, 24, 24)
    patches = torch.rand(2, 3, 1, 8, 8, requires_grad=True)
    keypoints = torch.tensor([[6.3, 7.1, 9.0], [15.2, 12.7, 7.5], [10.0, 18.4, 8.0]]).repeat(2, 1, 1)
    keypoints.requires_grad_(True)
    reconstruction_loss(images, patches, keypoints).backward()
    for grad in (patches.grad, keypoints.grad):
        assert bool(torch.isfinite(grad).all()) and float(grad.abs().sum()) > 0


def test_reconstruction_loss_rejects_bad_input():
    images, patches = torch.rand(2, 1, 20, 20), torch.rand(2, 3, 1, 8, 8)
    keypoints = torch.full((2, 3, 3), 8.0)
    with pytest.raises(ValueError, match="images"):
        reconstruction_loss(images[0], patches, keypoints)
    with pytest.raises(ValueError, match="patches_out"):
        reconstruction_loss(images, torch.rand(2, 3, 3, 8, 8), keypoints)
    with pytest.raises(ValueError, match="keypoints"):
        reconstruction_loss(images, patches, keypoints[:, :2])
    with pytest.raises(ValueError, match="reduction"):
        reconstruction_loss(images, patches, keypoints, reduction="sum")


# ---------------------------------------------------------------- eq. (7)

# K = 2 patches, 3 classes: softmaxes (1/3, 1/3, 1/3) and (1/2, 1/4, 1/4), so p = (5/12, 7/24, 7/24)
LOGITS = torch.tensor([[[0.0, 0.0, 0.0], [math.log(2.0), 0.0, 0.0]]])


def test_multi_instance_loss_known_answer():
    labels = torch.tensor([[0, 1]])  # q = (1/2, 1/2, 0)
    expected = -(0.5 * math.log(5 / 12) + 0.5 * math.log(7 / 24))
    assert math.isclose(float(multi_instance_loss(LOGITS, labels)), expected, rel_tol=1e-6)


def test_multi_instance_loss_with_padding_and_varying_l():
    logits = torch.cat([LOGITS, LOGITS.flip(1)])  # the order of the patches does not matter
    labels = torch.tensor([[0, 1, -1, -1], [2, 2, 2, 1]])  # L = 2 and L = 4
    first = -(0.5 * math.log(5 / 12) + 0.5 * math.log(7 / 24))
    second = -(0.75 * math.log(7 / 24) + 0.25 * math.log(7 / 24))
    per_image = multi_instance_loss(logits, labels, reduction="none")
    assert torch.allclose(per_image, torch.tensor([first, second]), rtol=1e-6)
    assert math.isclose(float(multi_instance_loss(logits, labels)), (first + second) / 2, rel_tol=1e-6)
    padded = torch.cat([labels, torch.full((2, 3), -1)], dim=1)  # more padding changes nothing
    assert torch.equal(multi_instance_loss(logits, padded, reduction="none"), per_image)


def test_multi_instance_loss_floor_is_the_entropy_of_the_labels():
    labels = torch.tensor([[0, 1, 1, 2]])  # q = (1/4, 1/2, 1/4)
    q = torch.tensor([0.25, 0.5, 0.25])
    entropy = -(0.25 * math.log(0.25) * 2 + 0.5 * math.log(0.5))
    at_q = q.log().view(1, 1, 3).requires_grad_(True)  # K = 1 patch predicting p = q exactly
    loss = multi_instance_loss(at_q, labels)
    assert math.isclose(loss.item(), entropy, rel_tol=1e-6) and loss.item() > 0.5  # not zero
    loss.backward()
    assert float(at_q.grad.abs().max()) < 1e-6  # a stationary point ...
    g = torch.Generator().manual_seed(0)
    for _ in range(20):  # ... and the minimum: any other prediction costs more (Gibbs' inequality)
        other = at_q.detach() + torch.randn(1, 1, 3, generator=g)
        assert float(multi_instance_loss(other, labels)) > entropy


def test_multi_instance_loss_is_stable_for_extreme_logits():
    logits = torch.tensor([[[1000.0, 0.0], [1000.0, 0.0]]], requires_grad=True)  # p_1 = exp(-1000)
    loss = multi_instance_loss(logits, torch.tensor([[1]]))  # the naive log(mean(softmax)) gives inf
    assert math.isclose(loss.item(), 1000.0, rel_tol=1e-6)
    loss.backward()
    assert bool(torch.isfinite(logits.grad).all())


def test_multi_instance_loss_gradcheck():
    logits = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([[0, 3, -1], [1, 1, 2]])
    assert torch.autograd.gradcheck(lambda z: multi_instance_loss(z, labels), (logits,))
    assert torch.autograd.gradcheck(lambda z: histogram_loss_sq(z, labels), (logits,))


def test_histogram_loss_sq_known_answer():
    labels = torch.tensor([[0, 1, -1]])  # q = (1/2, 1/2, 0) against p = (5/12, 7/24, 7/24)
    expected = 0.5 * ((1 / 12) ** 2 + (5 / 24) ** 2 + (7 / 24) ** 2)
    assert math.isclose(float(histogram_loss_sq(LOGITS, labels)), expected, rel_tol=1e-6)
    exact = torch.tensor([[0.25, 0.5, 0.25]]).log().view(1, 1, 3)
    assert float(histogram_loss_sq(exact, torch.tensor([[0, 1, 1, 2]]))) < 1e-12  # zero at p = q


@pytest.mark.parametrize("loss", [multi_instance_loss, histogram_loss_sq])
def test_class_losses_reject_bad_input(loss):
    logits = torch.zeros(2, 3, 4)
    with pytest.raises(ValueError, match="labels"):
        loss(logits, torch.tensor([[0, 4], [1, -1]]))  # label >= num_classes
    with pytest.raises(ValueError, match="labels"):
        loss(logits, torch.tensor([[0, 1], [-1, -1]]))  # an image with no valid label
    with pytest.raises(ValueError, match="labels"):
        loss(logits, torch.tensor([[0, -2], [1, 1]]))  # only -1 pads
    with pytest.raises(ValueError, match="labels"):
        loss(logits, torch.tensor([[0.0], [1.0]]))  # float labels
    with pytest.raises(ValueError, match="labels"):
        loss(logits, torch.tensor([[0], [1], [2]]))  # batch mismatch
    with pytest.raises(ValueError, match="labels"):
        loss(logits, torch.zeros(2, 0, dtype=torch.int64))  # L = 0
    with pytest.raises(ValueError, match="logits"):
        loss(torch.zeros(3, 4), torch.tensor([[0], [1], [2]]))
    with pytest.raises(ValueError, match="logits"):
        loss(torch.zeros(2, 3, 4, dtype=torch.int64), torch.tensor([[0], [1]]))
    with pytest.raises(ValueError, match="reduction"):
        loss(logits, torch.tensor([[0], [1]]), reduction="sum")
