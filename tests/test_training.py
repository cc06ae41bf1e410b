"""The shared training loop: deterministic batches, checkpoints, and resume equivalence."""

from __future__ import annotations

import pytest
import torch

from mistlib.baselines import EndToEndConfig, EndToEndTrainer
from mistlib.checkpoint import CheckpointError
from mistlib.model import MIST, MISTConfig
from mistlib.training import batch_indices, step_generator

TINY = MISTConfig(
    image_size=32,
    k=2,
    patch_size=32,
    scales=(8.0, 12.0),
    reference_size=10.0,
    heatmap_channels=4,
    heatmap_blocks=1,
)


def test_batch_indices_cover_each_epoch_once_and_repeat_by_seed():
    epoch = torch.cat([batch_indices(10, 3, seed=1, step=t) for t in range(3)])  # 3 batches of 3 = 9 items
    assert sorted(epoch.tolist()) == sorted(set(epoch.tolist()))  # no repeats within an epoch
    assert torch.equal(batch_indices(10, 3, seed=1, step=2), batch_indices(10, 3, seed=1, step=2))
    assert not torch.equal(
        torch.cat([batch_indices(10, 3, seed=1, step=t) for t in range(3)]),
        torch.cat([batch_indices(10, 3, seed=2, step=t) for t in range(3)]),
    )
    # step 3 starts epoch 1, a fresh permutation
    assert batch_indices(10, 3, seed=1, step=3).shape == (3,)
    assert batch_indices(4, 32, seed=0, step=0).shape == (4,)  # batch capped at the set size


def test_step_generator_is_a_function_of_seed_and_step():
    a = torch.rand(4, generator=step_generator(3, 7))
    assert torch.equal(a, torch.rand(4, generator=step_generator(3, 7)))
    assert not torch.equal(a, torch.rand(4, generator=step_generator(3, 8)))


def _trainer(seed: int = 0, steps: int = 6) -> EndToEndTrainer:
    torch.manual_seed(seed)
    model = MIST(TINY)
    config = EndToEndConfig(
        steps=steps, batch_size=4, seed=seed, device="cpu", log_every=2, checkpoint_every=2
    )
    return EndToEndTrainer(model, "reconstruct", config)


def test_resume_reaches_the_same_weights_as_an_uninterrupted_run(tmp_path):
    images = torch.rand(12, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    straight = _trainer()
    straight.fit(images)

    killed = _trainer()
    path = tmp_path / "run.pt"
    killed.fit(images, checkpoint=path, steps=3)  # "killed" after 3 of 6 steps
    resumed = _trainer(seed=0)
    with torch.no_grad():  # scramble the fresh model so that only the checkpoint can restore it
        for parameter in resumed.model.parameters():
            parameter.add_(1.0)
    resumed.resume(path)
    assert resumed.step == 3
    resumed.fit(images)

    for (name, a), b in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), f"{name} differs after resuming"
    assert straight.history == resumed.history


def test_resume_refuses_a_foreign_checkpoint(tmp_path):
    path = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="foreign.pt"):
        _trainer().resume(path)


def test_training_stops_on_a_non_finite_loss():
    trainer = _trainer()
    images = torch.rand(8, 1, 32, 32)
    with torch.no_grad():
        next(trainer.model.task_net.parameters()).fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="task"):
        trainer.fit(images)
