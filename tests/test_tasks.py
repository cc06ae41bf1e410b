"""Task networks and losses (§5, §8): shapes, sizes, no bottleneck bypass, learning, eqs. (6)-(7) by hand."""

from __future__ import annotations

import io
import math

import pytest
import torch

from mistlib.tasks import (
    PatchAutoencoder,
    PatchClassifier,
    histogram_loss_sq,
    multi_instance_loss,
    reconstruct,
    reconstruction_loss,
)

MIB = 2**20


@pytest.fixture(autouse=True)
def one_thread():
    """Small convolutions run 2-4x slower with 2 threads on a busy 2-core machine; restore afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def strokes(n: int, seed: int = 0) -> torch.Tensor:
    """(n, 1, 32, 32) digit-like patches: three 2-px-wide random strokes each, inside the central 20 x 20."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    out = torch.zeros(n, 1, 32, 32)
    for i in range(n):
        for _ in range(3):
            ax, ay, bx, by = (torch.rand(4, generator=g) * 20 + 6).tolist()
            dx, dy = bx - ax, by - ay
            t = (((xx - ax) * dx + (yy - ay) * dy) / (dx * dx + dy * dy + 1e-6)).clamp(0, 1)
            dist = ((xx - ax - t * dx) ** 2 + (yy - ay - t * dy) ** 2).sqrt()  # to the segment
            out[i, 0] = torch.maximum(out[i, 0], (2.0 - dist).clamp(0, 1))
    return out


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------- networks (§8)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("lead", [(5,), (2, 3)])
def test_autoencoder_shapes_and_range(channels, lead):
    net = PatchAutoencoder(channels=channels)
    x = torch.rand(*lead, channels, 32, 32)
    out = net(x)
    assert out.shape == x.shape
    assert bool(((out > 0) & (out < 1)).all())  # sigmoid output
    assert net.encode(x).shape == (*lead, 128)  # 128 x 1 x 1 bottleneck after 5 pools


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("lead", [(5,), (2, 3)])
def test_classifier_shapes(channels, lead):
    net = PatchClassifier(channels=channels, num_classes=7)
    assert net(torch.rand(*lead, channels, 32, 32)).shape == (*lead, 7)


def test_classifier_reuses_the_autoencoder_encoder():
    ae, clf = PatchAutoencoder(), PatchClassifier()
    assert type(ae.encoder) is type(clf.encoder)
    assert [p.shape for p in ae.encoder.parameters()] == [p.shape for p in clf.encoder.parameters()]
    assert n_params(clf) == n_params(clf.encoder) + 128 * 10 + 10  # encoder + one dense layer


def test_parameter_counts_match_the_docstrings_and_fit_8_mib_in_fp16():
    ae, clf = PatchAutoencoder(), PatchClassifier()
    counts = {
        "ae": n_params(ae),
        "enc": n_params(ae.encoder),
        "dec": n_params(ae.decoder),
        "clf": n_params(clf),
    }
    assert counts == {"ae": 2_487_489, "enc": 1_194_400, "dec": 1_293_089, "clf": 1_195_690}
    for number in ("2,487,489", "1,194,400", "1,293,089", "4.74 MiB"):
        assert number in PatchAutoencoder.__doc__
    assert "1,195,690" in PatchClassifier.__doc__ and "2.28 MiB" in PatchClassifier.__doc__
    assert n_params(PatchAutoencoder(channels=3)) == 2_487_779
    for net in (ae, clf):
        assert n_params(net) * 2 < 8 * MIB
        buffer = io.BytesIO()  # the real fp16 checkpoint, pickling overhead included
        torch.save({k: v.half() for k, v in net.state_dict().items()}, buffer)
        assert buffer.tell() < 8 * MIB
    assert n_params(PatchAutoencoder(base_width=16)) * 2 > 8 * MIB  # why base_width is 8


@pytest.mark.parametrize("cls", [PatchAutoencoder, PatchClassifier])
def test_gradients_reach_every_parameter(cls):
    torch.manual_seed(0)
    net = cls()
    x = strokes(4)
    # the last conv of each residual branch starts at zero, which blocks the gradient of the first one at
    # initialisation; one Adam step moves it, after which every parameter must receive a gradient
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(2):
        opt.zero_grad()
        net(x).square().mean().backward()
        opt.step()
    for name, p in net.named_parameters():
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()), name
        assert float(p.grad.abs().sum()) > 0, f"no gradient reaches {name}"


def test_autoencoder_has_no_encoder_to_decoder_skip():
    torch.manual_seed(0)
    net = PatchAutoencoder()
    x = strokes(3)
    seen = []
    net.decoder.register_forward_hook(lambda module, args, out: seen.append([a.shape for a in args]))
    out = net(x)
    assert seen == [[torch.Size([3, 128])]]  # the decoder receives the 128-number latent and nothing else
    assert torch.equal(net.decode(net.encode(x)), out)
    assert net.encoder.latent_shape == (128, 1, 1)


def test_encoder_sees_contrast():
    # no layer norm on the raw input: a faint copy of a patch must not encode like the patch itself
    torch.manual_seed(0)
    net = PatchAutoencoder()
    x = strokes(2)
    assert not torch.allclose(net.encode(x), net.encode(0.5 * x), atol=1e-4)


def test_autoencoder_overfits_a_handful_of_patches():
    """150 Adam steps on 8 digit-like patches: MSE at least 5x below its start and clearly below that of the
    best constant output (the mean patch), so the latent carries each patch. A slim instance of the same class
    (width 4, 1 block per level) keeps this at ~3 s on one CPU core; the full one needs ~10 s for it."""
    torch.manual_seed(0)
    net = PatchAutoencoder(base_width=4, blocks_per_level=1)
    x = strokes(8)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    with torch.no_grad():
        start = float((net(x) - x).square().mean())
    for _ in range(150):
        loss = (net(x) - x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        end = float((net(x) - x).square().mean())
    best_constant = float((x - x.mean(0)).square().mean())
    assert end < start / 5, (start, end)
    assert end < 0.7 * best_constant, (best_constant, end)  # 0.47 here, 0.38-0.58 over 5 seeds


def test_networks_reject_bad_input():
    ae = PatchAutoencoder()
    bad = {
        "wrong channels": torch.rand(2, 3, 32, 32),
        "wrong size": torch.rand(2, 1, 28, 28),
        "no batch dim": torch.rand(1, 32, 32),
        "integers": torch.ones(2, 1, 32, 32, dtype=torch.int64),
        "NaN": torch.full((2, 1, 32, 32), float("nan")),
    }
    for x in bad.values():
        with pytest.raises(ValueError, match="patches"):
            ae(x)
        with pytest.raises(ValueError, match="patches"):
            PatchClassifier()(x)
    with pytest.raises(ValueError, match="patches"):
        ae([[0.0]])
    with pytest.raises(ValueError, match="latent"):
        ae.decode(torch.rand(2, 64))
    with pytest.raises(ValueError, match="patch_size"):
        PatchAutoencoder(patch_size=24)
    with pytest.raises(ValueError, match="channels"):
        PatchAutoencoder(channels=0)
    with pytest.raises(ValueError, match="num_classes"):
        PatchClassifier(num_classes=0)


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
