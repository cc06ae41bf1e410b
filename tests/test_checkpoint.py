"""Tests for mistlib.checkpoint: round trips, fp16 shipping, atomic writes, clear errors, RNG resume."""

from __future__ import annotations

import dataclasses
import os
import random

import numpy as np
import pytest
import torch
from torch import nn

from mistlib.checkpoint import (
    FORMAT,
    VERSION,
    CheckpointError,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


def small_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.Flatten(), nn.Linear(8 * 6 * 6, 10))


def trained_state(steps: int = 2) -> tuple[nn.Module, torch.optim.Optimizer]:
    model = small_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(steps):
        optimizer.zero_grad()
        model(torch.rand(4, 1, 8, 8)).square().mean().backward()
        optimizer.step()
    return model, optimizer


def test_round_trip_float32(tmp_path):
    model, optimizer = trained_state()
    path = tmp_path / "model.pt"
    config = {"k": 9, "scales": [20.0, 28.0], "name": "mist", "skip": None, "flag": True}
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": 2}
    save_checkpoint(path, state=state, config=config, kind="mist", meta={"wall_time_s": 1.5})
    checkpoint = load_checkpoint(path, kind="mist")
    assert (checkpoint["format"], checkpoint["version"], checkpoint["kind"]) == (FORMAT, VERSION, "mist")
    assert checkpoint["config"] == config and checkpoint["meta"] == {"wall_time_s": 1.5}
    fresh = small_model(seed=1)
    fresh.load_state_dict(checkpoint["state"]["model"])
    for name, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], value), name
    fresh_optimizer = torch.optim.Adam(fresh.parameters(), lr=1e-3)
    fresh_optimizer.load_state_dict(checkpoint["state"]["optimizer"])
    assert torch.equal(
        fresh_optimizer.state_dict()["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"]
    )
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)


def test_half_halves_the_size_and_loads_into_a_float32_model(tmp_path):
    model = nn.Linear(256, 256)
    full, half = tmp_path / "full.pt", tmp_path / "half.pt"
    save_checkpoint(full, state={"model": model.state_dict()}, config={}, kind="model")
    save_checkpoint(half, state={"model": model.state_dict()}, config={}, kind="model", half=True)
    assert half.stat().st_size < 0.55 * full.stat().st_size
    stored = load_checkpoint(half)["state"]["model"]
    assert stored["weight"].dtype == torch.float16
    fresh = nn.Linear(256, 256)
    fresh.load_state_dict(stored)  # casts float16 -> float32
    assert fresh.weight.dtype == torch.float32
    torch.testing.assert_close(fresh.weight, model.weight, rtol=1e-3, atol=1e-4)
    assert not torch.equal(fresh.weight, model.weight)  # it really went through float16


def test_half_keeps_step_counters_integers_and_overflowing_tensors(tmp_path):
    model, optimizer = trained_state()
    optimizer_state = optimizer.state_dict()
    optimizer_state["state"][0]["step"] = torch.tensor(3001.0)  # float16 would round it to 3000
    state = {
        "model": model.state_dict(),  # BatchNorm's num_batches_tracked is int64
        "optimizer": optimizer_state,
        "indices": torch.arange(5),
        "big": torch.tensor([1e6, 1.0]),  # beyond float16's 65504
        "counters": {"step": torch.tensor([3001.0, 5.0])},  # any tensor named "step" is a counter
        "rng": torch.get_rng_state(),
    }
    save_checkpoint(tmp_path / "t.pt", state=state, config={}, kind="trainer", half=True)
    loaded = load_checkpoint(tmp_path / "t.pt")["state"]
    assert loaded["optimizer"]["state"][0]["step"].dtype == torch.float32
    assert float(loaded["optimizer"]["state"][0]["step"]) == 3001.0
    assert loaded["optimizer"]["state"][0]["exp_avg"].dtype == torch.float16
    assert loaded["model"]["1.num_batches_tracked"].dtype == torch.int64
    assert torch.equal(loaded["indices"], torch.arange(5))
    assert torch.equal(loaded["counters"]["step"], torch.tensor([3001.0, 5.0]))
    assert loaded["big"].dtype == torch.float32 and float(loaded["big"][0]) == 1e6
    assert torch.equal(loaded["rng"], state["rng"])
    assert state["model"]["0.weight"].dtype == torch.float32  # the caller's state is not modified


def test_config_dataclass_is_converted(tmp_path):
    @dataclasses.dataclass
    class Config:
        k: int = 9
        sides: tuple = (20, 28)

    save_checkpoint(tmp_path / "c.pt", state={}, config=Config(), kind="mist")
    assert load_checkpoint(tmp_path / "c.pt")["config"] == {"k": 9, "sides": (20, 28)}


@pytest.mark.parametrize(
    "config", [{"f": object()}, {1: "int key"}, {"t": torch.zeros(2)}, {"x": np.float64(1.0)}, [1, 2]]
)
def test_non_serialisable_config_is_rejected(tmp_path, config):
    with pytest.raises(ValueError, match="config"):
        save_checkpoint(tmp_path / "c.pt", state={}, config=config, kind="mist")
    assert not any(tmp_path.iterdir())


def test_state_that_weights_only_cannot_load_is_rejected(tmp_path):
    with pytest.raises(ValueError, match=r"state\['x'\].*numpy"):
        save_checkpoint(tmp_path / "s.pt", state={"x": np.zeros(3)}, config={}, kind="mist")


@pytest.mark.parametrize("exception", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_crash_during_write_keeps_previous_checkpoint_and_leaves_no_temp_file(
    tmp_path, monkeypatch, exception
):
    path = tmp_path / "model.pt"
    save_checkpoint(path, state={"w": torch.ones(3)}, config={"run": 1}, kind="mist")
    before = path.read_bytes()

    def crashing_save(obj, file, *args, **kwargs):
        file.write(b"PK\x03\x04 partial bytes")
        raise exception

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(type(exception)):
        save_checkpoint(path, state={"w": torch.zeros(3)}, config={"run": 2}, kind="mist")
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["model.pt"]
    assert path.read_bytes() == before
    checkpoint = load_checkpoint(path)
    assert checkpoint["config"] == {"run": 1} and torch.equal(checkpoint["state"]["w"], torch.ones(3))


def test_save_creates_parent_folders_and_replaces_existing(tmp_path):
    path = tmp_path / "a" / "b" / "model.pt"
    save_checkpoint(path, state={"v": 1}, config={}, kind="mist")
    save_checkpoint(path, state={"v": 2}, config={}, kind="mist")
    assert load_checkpoint(path)["state"] == {"v": 2}
    assert os.listdir(path.parent) == ["model.pt"]


def test_truncated_file_raises_checkpoint_error_naming_the_path(tmp_path):
    path = tmp_path / "model.pt"
    save_checkpoint(path, state={"model": small_model().state_dict()}, config={}, kind="mist")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=str(path)):
        load_checkpoint(path)


def test_foreign_files_raise_checkpoint_error(tmp_path):
    bare = tmp_path / "bare.pt"
    torch.save(small_model().state_dict(), bare)
    with pytest.raises(CheckpointError, match="not a mistlib checkpoint") as info:
        load_checkpoint(bare)
    assert str(bare) in str(info.value)
    pickled = tmp_path / "pickled.pt"
    torch.save({"format": FORMAT, "model": small_model()}, pickled)  # a whole module: arbitrary code
    with pytest.raises(CheckpointError, match="weights_only") as info:
        load_checkpoint(pickled)
    assert str(pickled) in str(info.value)


def test_missing_file_and_wrong_kind_and_newer_version(tmp_path):
    missing = tmp_path / "reconstruct-mnist-hard-mist.pt"
    with pytest.raises(CheckpointError, match="does not exist") as info:
        load_checkpoint(missing)
    assert str(missing) in str(info.value) and isinstance(info.value, ValueError)
    path = tmp_path / "log.pt"
    save_checkpoint(path, state={}, config={}, kind="log")
    with pytest.raises(CheckpointError, match="'log', expected 'mist'"):
        load_checkpoint(path, kind="mist")
    newer = tmp_path / "newer.pt"
    torch.save({"format": FORMAT, "version": 99, "kind": "mist", "config": {}, "state": {}}, newer)
    with pytest.raises(CheckpointError, match="version 99"):
        load_checkpoint(newer)


def draw() -> tuple[torch.Tensor, list[float], list[float]]:
    """Numbers from every global generator, including the cached second Gaussians."""
    numpy_draws = [float(np.random.standard_normal()), float(np.random.rand())]  # noqa: NPY002
    python_draws = [random.gauss(0, 1), random.random()]
    return torch.randn(5), numpy_draws, python_draws


def test_rng_state_round_trip_through_a_checkpoint(tmp_path):
    torch.manual_seed(7)
    np.random.seed(7)  # noqa: NPY002
    random.seed(7)
    draw()  # leave a cached Gaussian in numpy and in python
    state = rng_state()
    expected = draw()
    save_checkpoint(tmp_path / "rng.pt", state={"rng": state}, config={}, kind="trainer", half=True)
    draw()  # move every generator on
    set_rng_state(load_checkpoint(tmp_path / "rng.pt")["state"]["rng"])
    again = draw()
    assert torch.equal(again[0], expected[0])
    assert again[1] == expected[1] and again[2] == expected[2]
    set_rng_state(state)  # the in-memory state works too, and keeps working
    assert torch.equal(draw()[0], expected[0])


def test_a_version_1_checkpoint_loads_into_todays_model(tmp_path):
    """Version 1 stored the task network as ``task_net.*`` and could lack ``nms``/``composite``: it must load
    (migrated) into the current MIST and give the same outputs as the model it was saved from."""
    from mistlib.experiments import Experiment, build_model, load_model
    from mistlib.model import MISTConfig

    config = MISTConfig(image_size=32, k=2, scales=(8.0, 12.0), reference_size=8.0, heatmap_channels=4)
    experiment = Experiment(method="mist", model=dataclasses.replace(config, task_width=2))
    model = build_model(experiment)
    state = {
        f"task_net.{k[len('task.net.') :]}" if k.startswith("task.net.") else k: v
        for k, v in model.state_dict().items()
    }
    assert any(k.startswith("task_net.") for k in state)
    experiment_dict = dataclasses.asdict(experiment)
    del experiment_dict["model"]["nms"], experiment_dict["model"]["composite"]  # as the oldest files
    path = tmp_path / "v1.pt"
    torch.save(
        {
            "format": FORMAT,
            "version": 1,
            "kind": "model",
            "config": experiment_dict,
            "state": {"model": state},
            "meta": {},
            "created_with": {},
        },
        path,
    )
    loaded, loaded_experiment, _ = load_model(path)
    images = torch.rand(2, 1, 32, 32)
    assert torch.equal(loaded(images).reconstruction, model.eval()(images).reconstruction)
    assert (loaded_experiment.model.nms, loaded_experiment.model.composite) == (1, "sum")
