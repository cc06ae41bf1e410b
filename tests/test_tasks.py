"""Task networks (§5, §8): shapes, sizes, no bottleneck bypass, learning."""

from __future__ import annotations

import io

import pytest
import torch

from mistlib.tasks import PatchAutoencoder, PatchClassifier

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
