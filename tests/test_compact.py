"""Tests of mistlib.compact and mistlib.presets: the CPU-sized task networks and the named presets."""

from __future__ import annotations

import pytest
import torch

from mistlib.compact import CompactDecoder, CompactEncoder, compact_autoencoder, compact_classifier
from mistlib.data import MNISTHard
from mistlib.model import MIST, MISTConfig, build_task_network
from mistlib.presets import PRESETS, preset
from mistlib.sampler import sample_patches
from mistlib.tasks import PatchAutoencoder, PatchClassifier


def test_compact_shapes_and_sizes():
    encoder = CompactEncoder(channels=2, width=4, levels=3, code=10, patch_size=16)
    decoder = CompactDecoder(channels=2, width=4, levels=3, code=10, patch_size=16)
    codes = encoder(torch.rand(5, 2, 16, 16))
    assert codes.shape == (5, 10) and encoder.latent_dim == 10
    out = decoder(codes)
    assert out.shape == (5, 2, 16, 16) and bool(((out > 0) & (out < 1)).all())
    net = compact_autoencoder()
    assert isinstance(net, PatchAutoencoder) and net(torch.rand(2, 9, 1, 32, 32)).shape == (2, 9, 1, 32, 32)
    # 16-32-64 channels, 64-number code: an order of magnitude smaller than the §8 auto-encoder
    assert sum(p.numel() for p in net.parameters()) == 196_721
    classifier = compact_classifier(num_classes=7)
    assert isinstance(classifier, PatchClassifier) and classifier(torch.rand(3, 1, 32, 32)).shape == (3, 7)


def test_depth_adds_same_size_convolutions_on_both_sides():
    # depth d adds d stride-1 3x3 convs (c -> c) per level: 3 levels of the encoder, 2 of the decoder
    plain, deeper = compact_autoencoder(), compact_autoencoder(depth=1)
    added = sum(p.numel() for p in deeper.parameters()) - sum(p.numel() for p in plain.parameters())
    per_level = {c: c * c * 9 + c for c in (16, 32, 64)}
    assert added == 2 * per_level[16] + 2 * per_level[32] + per_level[64]
    assert deeper(torch.rand(2, 3, 1, 32, 32)).shape == (2, 3, 1, 32, 32)
    classifier = build_task_network(MISTConfig(task="classify", task_network="compact", task_width=16))
    deep_classifier = build_task_network(
        MISTConfig(task="classify", task_network="compact", task_width=16, task_depth=2)
    )
    convs = [sum(isinstance(m, torch.nn.Conv2d) for m in c.modules()) for c in (classifier, deep_classifier)]
    assert convs == [3, 9] and deep_classifier(torch.rand(4, 1, 32, 32)).shape == (4, 10)


def test_norm_puts_a_groupnorm_between_every_encoder_conv_and_its_relu():
    plain = CompactEncoder(channels=1, width=16, levels=3, code=8, patch_size=32, depth=1)
    normed = CompactEncoder(channels=1, width=16, levels=3, code=8, patch_size=32, depth=1, norm=True)
    # without the switch the layer indices (the checkpoints' state-dict keys) are those of before it
    assert [type(m).__name__ for m in plain.layers][:4] == ["Conv2d", "ReLU", "Conv2d", "ReLU"]
    kinds = [type(m).__name__ for m in normed.layers]
    assert kinds[:6] == ["Conv2d", "GroupNorm", "ReLU"] * 2 and kinds.count("GroupNorm") == 6
    groups = [(m.num_groups, m.num_channels) for m in normed.layers if isinstance(m, torch.nn.GroupNorm)]
    assert groups == [(8, 16), (8, 16), (8, 32), (8, 32), (8, 64), (8, 64)]
    # each patch's features are normalised on their own: scaling one patch does not change its code
    # (up to GroupNorm's eps), and the other patches' codes do not depend on it
    patches = torch.rand(3, 1, 32, 32)
    brighter = patches.clone()
    brighter[0] *= 4.0
    torch.nn.init.zeros_(normed.layers[0].bias)  # a conv bias would not scale with the patch
    codes, codes_brighter = normed(patches), normed(brighter)
    assert torch.allclose(codes[1:], codes_brighter[1:], atol=1e-6)
    assert torch.allclose(codes[0], codes_brighter[0], atol=1e-3)
    assert not torch.allclose(plain(patches)[0], plain(brighter)[0], atol=1e-3)
    # the config switch reaches the encoder of both compact task networks, never the decoder
    for task in ("classify", "reconstruct"):
        net = build_task_network(MISTConfig(task=task, task_network="compact", task_width=16, task_norm=True))
        assert sum(isinstance(m, torch.nn.GroupNorm) for m in net.encoder.modules()) == 3
        assert sum(isinstance(m, torch.nn.GroupNorm) for m in net.modules()) == 3
    with pytest.raises(ValueError, match="task_norm must be True or False"):
        MISTConfig(task_norm=1)


def test_compact_autoencoder_learns_mnist_patches():
    torch.manual_seed(0)
    scenes = MNISTHard("train", size=32, seed=0)
    centres = scenes.centers  # (B, L, 2) digit centres as (x, y)
    keypoints = torch.cat([centres, torch.full_like(centres[..., :1], 24.0)], -1)  # (B, L, 3)
    patches = sample_patches(scenes.images, keypoints, size=32)[scenes.labels >= 0]  # (N, 1, 32, 32)
    net = compact_autoencoder()
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss = ((net(patches) - patches) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::10]


def test_build_task_network_follows_the_config():
    assert build_task_network(MISTConfig()).encoder.latent_dim == 128  # §8
    compact = build_task_network(MISTConfig(task_network="compact", task_code=32))
    assert isinstance(compact.encoder, CompactEncoder) and compact.encoder.latent_dim == 32
    with pytest.raises(ValueError, match="task_network must be one of"):
        MISTConfig(task_network="tiny")


def test_presets_are_data_and_build_models():
    assert set(PRESETS) >= {"paper", "compact"}
    assert preset("paper") == MISTConfig()  # the paper's networks are the config defaults
    config = preset("compact", task="classify", k=4)
    assert (config.task, config.k, config.task_network, config.heatmap_channels) == (
        "classify",
        4,
        "compact",
        16,
    )
    model = MIST(preset("compact", composite="max", nms=5))
    out = model(torch.rand(2, 1, 80, 80))
    assert out.reconstruction.shape == (2, 1, 80, 80) and out.keypoints.shape == (2, 9, 3)
    # the trunk sees the image at 8 / s of its size: 40, 32 and 26 pixels for the three scales
    assert model.heatmap_net.scale_sizes(80, 80) == [(40, 40), (32, 32), (26, 26)]
    with pytest.raises(ValueError, match="preset must be one of"):
        preset("huge")
