"""The speed switches of the one lifting step compute what the plain fp32 step computes.

Tolerances (short seeded CPU runs on real MNIST-hard images, warm-up then full lifting steps):
* checks off (``mistlib.checks.checks(False)``): bit-identical losses and weights: the checks only read;
* ``channels_last`` and fused Adam change the order of float sums only, which Adam's sign-like first
  steps amplify on near-zero gradients: 1e-2 relative for losses and weights (measured: 1.1e-3, 2.0e-3);
* bf16 autocast (``amp``): every logged loss within 10% of the reference and the run's mean within 3%.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F

import mistlib.heatmap as heatmap_module
from mistlib.checks import checks
from mistlib.data import MNISTHard
from mistlib.lifting import LiftingConfig, LiftingTrainer
from mistlib.model import MIST, MISTConfig

TINY = MISTConfig(heatmap_channels=4, heatmap_blocks=1, task_width=2)
RUN = {
    "steps": 8,
    "batch_size": 4,
    "device": "cpu",
    "log_every": 1,
    "warmup_steps": 3,
    "lift_weighting": 5.0,
    "refine_iterations": 2,
    "refine_step": 1.0,
}


@pytest.fixture(scope="module")
def images():
    return MNISTHard("train", size=16, seed=0, cache=False).images  # (16, 1, 80, 80)


@pytest.fixture(scope="module")
def initial():
    torch.manual_seed(0)
    return MIST(TINY)


def _fit(initial: MIST, images: torch.Tensor, task: str = "reconstruct", labels=None, **options):
    model = copy.deepcopy(initial)
    if task != model.config.task:
        torch.manual_seed(0)
        model = MIST(dataclasses.replace(TINY, task=task))
    trainer = LiftingTrainer(model, task, LiftingConfig(**{**RUN, **options}))
    return trainer, trainer.fit(images, labels)  # one {"step", losses...} entry per step


def _series(history: list[dict], names: tuple[str, ...] = ("warmup", "task", "lift", "moved_px")):
    """The logged values of ``names``, step by step, flattened: (n,) float64."""
    return torch.tensor([e[k] for e in history for k in names if k in e], dtype=torch.float64)


def _relative_errors(history, reference, names=("warmup", "task", "lift", "moved_px")) -> torch.Tensor:
    a, b = _series(history, names), _series(reference, names)
    assert a.shape == b.shape
    return (a - b).abs() / b.abs().clamp_min(1e-12)


@pytest.fixture(scope="module")
def reference(initial, images):
    return _fit(initial, images)


def test_layout_and_fused_adam_track_the_reference(initial, images, reference):
    ref_trainer, ref_history = reference
    assert len(ref_history) == RUN["steps"] and set(ref_history[-1]) == {"step", "task", "lift", "moved_px"}
    options, tolerance = {"channels_last": True, "fused_adam": True}, 1e-2
    trainer, history = _fit(initial, images, **options)
    assert _relative_errors(history, ref_history).max() < tolerance
    weights = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
    ref_weights = torch.cat([p.detach().flatten() for p in ref_trainer.model.parameters()])
    assert (weights - ref_weights).norm() / ref_weights.norm() < tolerance


def test_checks_off_change_nothing(initial, images, reference):
    ref_trainer, ref_history = reference
    with checks(False):
        trainer, history = _fit(initial, images)
    assert history == ref_history
    for a, b in zip(trainer.model.parameters(), ref_trainer.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_train_step_checks_its_batch_at_the_door(initial):
    trainer = LiftingTrainer(copy.deepcopy(initial), "reconstruct", LiftingConfig(**RUN))
    with pytest.raises(ValueError, match="images contains 1 NaN"):
        bad = torch.rand(2, 1, 80, 80)
        bad[0, 0, 0, 0] = float("nan")
        trainer.train_step(bad, None)


def test_bf16_autocast_tracks_the_fp32_loss_curve(initial, images, reference):
    _, ref_history = reference
    _, history = _fit(initial, images, amp=True, channels_last=True, fused_adam=True)
    for name in ("warmup", "task", "lift"):  # the losses (moved_px is a distance, not a loss)
        errors = _relative_errors(history, ref_history, (name,))
        assert errors.max() < 0.10, name
        mean_ref, mean_amp = _series(ref_history, (name,)).mean(), _series(history, (name,)).mean()
        assert abs(mean_amp - mean_ref) / mean_ref < 0.03, name
    assert _relative_errors(history, ref_history).max() > 0  # bf16 really ran: not an exact match


def test_classification_runs_every_stage_under_the_switches():
    dataset = MNISTHard("train", size=8, seed=0, cache=False)
    images, labels = dataset.images, dataset.labels  # (8, 1, 80, 80), (8, L) padded with -1
    torch.manual_seed(0)
    initial = MIST(dataclasses.replace(TINY, task="classify"))
    config = {**RUN, "steps": 4, "warmup_steps": 1}
    histories = []
    for options in ({}, {"channels_last": True, "fused_adam": True}):
        trainer = LiftingTrainer(copy.deepcopy(initial), "classify", LiftingConfig(**config, **options))
        histories.append(trainer.fit(images, labels))
    assert "task" in histories[0][-1]  # lifting steps ran after the warm-up
    assert _relative_errors(histories[1], histories[0]).max() < 1e-2


def test_compile_friendly_replicate_pad_equals_f_pad(monkeypatch):
    x = torch.rand(2, 3, 6, 7)
    expected = F.pad(x, (2, 2, 2, 2), mode="replicate")
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)  # take the torch.cat branch
    torch.testing.assert_close(heatmap_module._replicate_pad(x, 2), expected, rtol=0, atol=0)


def test_speed_switches_default_off():
    config = LiftingConfig()
    assert not (config.amp or config.compile or config.channels_last or config.fused_adam)
