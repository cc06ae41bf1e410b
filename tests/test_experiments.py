"""Experiments and the command line: recipes, train -> checkpoint -> evaluate, reproduce, bad checkpoints."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mistlib.checkpoint import CheckpointError
from mistlib.cli import main
from mistlib.experiments import Experiment, load_model, pretrained, recipe
from mistlib.tables import load_references, render, reproduce

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _private_data_dir(tmp_path, monkeypatch):
    """Generated datasets go to a temporary cache, never into the repository's data/."""
    monkeypatch.setenv("MIST_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MIST_QUIET", "1")


def test_recipes_fit_their_data():
    gabor = recipe("reconstruct", "gabor", "mist")
    assert gabor.model.k == 25 and gabor.model.background == 0.5
    assert gabor.model.scales[0] < 16.28 < gabor.model.scales[-1]
    hard = recipe("classify", "mnist-hard", "channelwise", seed=3)
    assert (hard.name, hard.seed, hard.model.task) == ("classify-mnist-hard-channelwise", 3, "classify")
    assert type(recipe("reconstruct", "mnist-hard", "mist").trainer_config()).__name__ == "LiftingConfig"
    # top-K methods suppress non-maxima (5 x 5, as the authors' code: the default); Gabor impulses add up
    nms = {method: recipe("reconstruct", "gabor", method).model.nms for method in ("mist", "naive")}
    assert nms == {"mist": 5, "naive": 5}
    # on digits the cpu MIST recipe suppresses in 13 x 13 windows and lets stage 2 jump (research §11), on
    # MNIST easy's grid of digits in 19 x 19 windows (§22); on Gabor in 9 x 9 windows, without jumps (§18)
    cpu = {
        data: recipe("reconstruct", data, "mist", budget="cpu")
        for data in ("mnist-hard", "mnist-easy", "gabor")
    }
    assert (cpu["mnist-hard"].model.nms, cpu["mnist-hard"].train["refine_jumps"]) == (13, 4)
    assert (cpu["mnist-easy"].model.nms, cpu["mnist-easy"].train["refine_jumps"]) == (19, 4)
    assert recipe("classify", "mnist-easy", "mist", budget="cpu").model.nms == 13
    # on MNIST easy the auto-encoder alone trains on eta's picks for the last half of the steps (§24)
    polish = {data: cpu[data].trainer_config().polish_steps for data in cpu}
    assert polish == {"mnist-hard": 0, "mnist-easy": 1500, "gabor": 0}
    assert cpu["mnist-easy"].trainer_config().steps == 3000
    # classification polishes its classifier on eta's picks moved at random (§25); no other row jitters
    classify_row = recipe("classify", "mnist-hard", "mist", budget="cpu")
    classify = classify_row.trainer_config()
    assert (classify.steps, classify.polish_steps, classify.task_jitter) == (5500, 4500, 0.06)
    assert (classify_row.model.task_width, cpu["mnist-hard"].model.task_width) == (20, 16)  # research §28
    assert {cpu[data].trainer_config().task_jitter for data in cpu} == {0.0}
    # no row bends its training images (research §27: worse on MNIST easy and for the classifier)
    assert {config.trainer_config().deform for config in [*cpu.values(), classify_row]} == {0.0}
    assert (cpu["gabor"].model.nms, cpu["gabor"].train.get("refine_jumps", 0)) == (9, 0)
    assert recipe("classify", "mnist-hard", "naive", budget="cpu").model.nms == 5
    # eta learns 10x faster on MNIST reconstruction (research §13); classification and Gabor keep 1e-4
    rows = [("reconstruct", "mnist-hard"), ("classify", "mnist-hard"), ("reconstruct", "gabor")]
    rates = {row: recipe(*row, "mist", budget="cpu").trainer_config().lr_heatmap for row in rows}
    assert rates == {
        ("reconstruct", "mnist-hard"): 1e-3,
        ("classify", "mnist-hard"): 1e-4,
        ("reconstruct", "gabor"): 1e-4,
    }
    assert recipe("reconstruct", "mnist-hard", "mist").trainer_config().lr_heatmap == 1e-4  # gpu budget
    assert recipe("reconstruct", "gabor", "mist").model.composite == "sum"
    assert recipe("reconstruct", "mnist-easy", "grid").model.composite == "max"
    # every MIST auto-encoder warms up on the heatmap's picks (research §6, Gabor since §19); classification
    # does on the cpu budget only (§17), where eta starts from a trained reconstruction model
    windows = {
        (task, data, budget): recipe(task, data, "mist", budget=budget).trainer_config().warmup_windows
        for task, data in (
            ("reconstruct", "mnist-hard"),
            ("reconstruct", "gabor"),
            ("classify", "mnist-hard"),
        )
        for budget in ("gpu", "cpu")
    }
    assert windows == {
        key: "random" if key == ("classify", "mnist-hard", "gpu") else "heatmap" for key in windows
    }


def test_cpu_budget_is_smaller_but_the_same_method():
    full, small = (
        recipe("reconstruct", "mnist-hard", "mist"),
        recipe("reconstruct", "mnist-hard", "mist", budget="cpu"),
    )
    assert (small.model.heatmap_channels, small.model.heatmap_blocks) == (32, 2)  # research §14
    # the wider eta is MNIST hard's, for MIST and both heatmap baselines, and MNIST easy MIST's (§20);
    # elsewhere compact's 16
    widths = {
        (data, method): recipe("reconstruct", data, method, budget="cpu").model.heatmap_channels
        for data in ("mnist-hard", "mnist-easy", "gabor")
        for method in ("mist", "naive", "channelwise")
    }
    wide = {("mnist-hard", method) for method in ("mist", "naive", "channelwise")} | {("mnist-easy", "mist")}
    assert widths == {key: 32 if key in wide else 16 for key in widths}
    # research §17: MIST's compact classifier is one stride-1 convolution per level deeper; the auto-encoders
    # and the baselines' classifiers are not
    depths = {
        (task, method): recipe(task, "mnist-hard", method, budget="cpu").model.task_depth
        for task in ("reconstruct", "classify")
        for method in ("mist", "naive", "channelwise", "grid")
    }
    assert depths == {key: int(key == ("classify", "mist")) for key in depths}
    # research §20: the same classifier has a GroupNorm after each convolution; §21: so has the encoder of
    # MIST's auto-encoder on MNIST; nothing else
    norms = {
        (task, data, method): recipe(task, data, method, budget="cpu").model.task_norm
        for task, data in [("classify", "mnist-hard"), ("classify", "mnist-easy")]
        + [("reconstruct", data) for data in ("mnist-hard", "mnist-easy", "gabor")]
        for method in ("mist", "naive", "channelwise", "grid")
    }
    normed = {
        (task, data, "mist") for task in ("classify", "reconstruct") for data in ("mnist-hard", "mnist-easy")
    }
    assert norms == {key: key in normed for key in norms}
    assert not recipe("classify", "mnist-hard", "mist").model.task_norm  # the paper's networks
    # research §18 and §20: the 128-number code is MIST reconstruction's on MNIST (hard and easy)
    codes = {
        (task, data, method): recipe(task, data, method, budget="cpu").model.task_code
        for task in ("reconstruct", "classify")
        for data in ("mnist-hard", "mnist-easy")
        for method in ("mist", "naive", "channelwise", "grid")
    }
    big = {("reconstruct", "mnist-hard", "mist"), ("reconstruct", "mnist-easy", "mist")}
    assert codes == {key: 128 if key in big else 64 for key in codes}
    assert small.train["steps"] < full.train["steps"] and small.model.task_network == "compact"
    assert 0 < small.train["warmup_steps"] < small.train["steps"]  # lifting does run after the warm-up
    assert small.model.k == full.model.k
    # research §19: MNIST-hard MIST's and naive top-K's scales are a quarter larger on the CPU budget (both
    # tasks); every other row keeps the paper's (the Gabor rows their own, around the impulses' box)
    scales = {
        (task, data, method): recipe(task, data, method, budget="cpu").model.scales
        for task in ("reconstruct", "classify")
        for data in ("mnist-hard", "mnist-easy")
        for method in ("mist", "naive", "channelwise", "grid")
    }
    larger = {
        key: (20.0, 25.0, 31.0)
        for key in scales
        if key[1:] in (("mnist-hard", "mist"), ("mnist-hard", "naive"))
    }
    assert scales == {key: larger.get(key, full.model.scales) for key in scales}
    assert full.model.scales == (16.0, 20.0, 25.0)
    assert recipe("reconstruct", "gabor", "grid", budget="cpu").model.k == 25
    with pytest.raises(ValueError, match="budget"):
        recipe("reconstruct", "mnist-hard", "mist", budget="tpu")


@pytest.mark.parametrize(("field", "value"), [("task", "denoise"), ("data", "cifar"), ("method", "rnn")])
def test_unknown_choices_are_named(field, value):
    with pytest.raises(ValueError, match=field):
        Experiment(**{field: value})
    with pytest.raises(ValueError, match="gabor"):
        Experiment(task="classify", data="gabor")


def _last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_cli_train_then_evaluate_round_trip(tmp_path, capsys):
    out = tmp_path / "grid.pt"
    args = ["train", "--method", "grid", "--steps", "3", "--batch-size", "4", "--train-size", "16"]
    assert main([*args, "--eval-size", "8", "--out", str(out), "--device", "cpu"]) == 0
    trained = _last_json(capsys)
    assert trained["steps"] == 3 and 0 < trained["rmse"] < 1
    assert out.exists() and not out.with_name("grid.pt.resume").exists()
    assert out.stat().st_size < 8 * 2**20  # fp16, shippable
    assert main(["evaluate", str(out), "--size", "8", "--device", "cpu"]) == 0
    evaluated = _last_json(capsys)
    assert evaluated["rmse"] == pytest.approx(trained["rmse"], rel=1e-2)  # fp16 weights vs fp32: close
    model, experiment, meta = load_model(out)
    assert experiment.method == "grid" and meta["steps"] == 3 and not model.training
    assert meta["command"].startswith("python -m mistlib train --method grid --steps 3")  # tables cite it


def test_pretrained_loads_by_name_and_says_how_to_train_a_missing_one(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MIST_CHECKPOINTS", str(tmp_path))
    with pytest.raises(CheckpointError, match="--task classify --data mnist-hard --method naive"):
        pretrained("classify-mnist-hard-naive")
    args = ["train", "--method", "grid", "--budget", "cpu", "--steps", "1", "--batch-size", "2"]
    out = tmp_path / "reconstruct-mnist-hard-grid.pt"
    assert main([*args, "--train-size", "4", "--eval-size", "2", "--out", str(out), "--device", "cpu"]) == 0
    model, experiment, meta = pretrained("reconstruct-mnist-hard-grid")
    assert experiment.model.heatmap_channels == 16 and "--budget cpu" in meta["command"]
    assert next(model.parameters()).device.type == "cpu" and not model.training


def test_cli_classification_reports_table2_metrics(tmp_path, capsys):
    out = tmp_path / "cw.pt"
    args = ["train", "--task", "classify", "--method", "channelwise", "--steps", "2", "--batch-size", "4"]
    assert main([*args, "--train-size", "8", "--eval-size", "8", "--out", str(out), "--device", "cpu"]) == 0
    result = _last_json(capsys)
    assert set(result) >= {"iou50", "classification", "both"}
    assert all(0 <= result[k] <= 1 for k in ("iou50", "classification", "both"))


def test_evaluate_names_a_missing_or_corrupt_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="nope.pt"):
        load_model(tmp_path / "nope.pt")
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CheckpointError, match="broken.pt"):
        load_model(broken)


def test_reproduce_writes_both_numbers_and_provenance(tmp_path):
    rows = reproduce(
        "table2",
        checkpoints=tmp_path / "ckpt",
        results=tmp_path / "results",
        steps=1,
        eval_size=4,
        train_size=8,
    )
    assert [r.method for r in rows] == ["mist", "channelwise", "naive"]
    table = (tmp_path / "results" / "table2.md").read_text()
    assert "84.6%" in table and "--steps 1" in table  # the paper's number and the command
    data = json.loads((tmp_path / "results" / "table2.json").read_text())
    assert data["rows"][0]["ours"]["iou50"] is not None and data["rows"][0]["steps"] == 1
    references = load_references("table2", tmp_path / "results")
    assert [(r.data, r.method, r.steps) for r in references] == [("mnist-hard", "untrained", 0)]
    assert 0 <= references[0].ours["classification"] <= 1
    assert render("table2", rows + references) == table


def test_python_dash_m_entry_point_prints_help():
    done = subprocess.run(
        [sys.executable, "-m", "mistlib", "--help"], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 0 and "reproduce" in done.stdout


def test_tiny_resume_through_the_cli_matches_an_uninterrupted_run(tmp_path, capsys):
    base = ["train", "--method", "naive", "--batch-size", "2", "--train-size", "8", "--eval-size", "2"]
    straight, parted = tmp_path / "a.pt", tmp_path / "b.pt"
    assert main([*base, "--steps", "4", "--out", str(straight), "--device", "cpu"]) == 0
    # a run "killed" after 2 steps leaves its resumable checkpoint; --resume continues it to step 4
    from mistlib.experiments import build_model, build_trainer, dataset_tensors, make_dataset

    experiment = recipe("reconstruct", "mnist-hard", "naive", budget="cpu", train_size=8)
    experiment.train.update(steps=4, batch_size=2, device="cpu")
    trainer = build_trainer(experiment, build_model(experiment))
    trainer.fit(
        dataset_tensors(make_dataset(experiment, "train", 8))[0], checkpoint=tmp_path / "b.pt.resume", steps=2
    )
    assert main([*base, "--steps", "4", "--out", str(parted), "--device", "cpu", "--resume"]) == 0
    a = load_model(straight)[0].state_dict()
    b = load_model(parted)[0].state_dict()
    assert all(torch.equal(a[name], b[name]) for name in a)


def test_cli_trains_a_compact_preset_under_its_own_name(tmp_path, capsys):
    out = tmp_path / "compact.pt"
    args = ["train", "--method", "naive", "--preset", "compact", "--steps", "3", "--batch-size", "4"]
    assert main([*args, "--train-size", "8", "--eval-size", "4", "--out", str(out), "--device", "cpu"]) == 0
    assert 0 < _last_json(capsys)["rmse"] < 1
    model, experiment, meta = load_model(out)
    assert experiment.name == "reconstruct-mnist-hard-naive-compact" and experiment.preset == "compact"
    assert experiment.model.task_network == "compact" and model.task_net.encoder.latent_dim == 64
    assert "--preset compact" in meta["command"]
    with pytest.raises(ValueError, match="preset must be one of"):
        recipe("reconstruct", "mnist-hard", "mist", preset="huge")


def test_initial_heatmap_copies_eta_and_names_bad_sources(tmp_path):
    import dataclasses

    from mistlib.checkpoint import CheckpointError
    from mistlib.experiments import build_model, initial_heatmap, save_model
    from mistlib.model import MISTConfig

    tiny = MISTConfig(k=4, task_width=2, heatmap_channels=4, heatmap_blocks=1)
    source_experiment = Experiment(method="mist", model=tiny, seed=3)
    source = build_model(source_experiment)
    save_model(tmp_path / "source.pt", source_experiment, source, {"steps": 0})
    target = build_model(
        Experiment(task="classify", method="mist", model=dataclasses.replace(tiny, task="classify"))
    )
    initial_heatmap(target, str(tmp_path / "source.pt"))
    for a, b in zip(source.heatmap_net.parameters(), target.heatmap_net.parameters(), strict=True):
        assert torch.allclose(a.half().float(), b)  # the checkpoint stores fp16
    with pytest.raises(CheckpointError, match="no checkpoint"):
        initial_heatmap(target, str(tmp_path / "missing.pt"))
    wider = build_model(Experiment(method="mist", model=dataclasses.replace(tiny, heatmap_channels=8)))
    with pytest.raises(CheckpointError, match="another heatmap network"):
        initial_heatmap(wider, str(tmp_path / "source.pt"))


def test_reference_rows_score_an_untrained_model_and_a_blank_image():
    from mistlib.evaluation import TEST_SEED
    from mistlib.experiments import make_dataset
    from mistlib.tables import reference_rows

    rows = reference_rows("table1", eval_size=4, budget="cpu")
    assert [(r.data, r.method) for r in rows] == [
        (data, method) for data in ("mnist-easy", "mnist-hard", "gabor") for method in ("untrained", "blank")
    ]
    gabor = recipe("reconstruct", "gabor", "mist", budget="cpu")
    images = make_dataset(gabor, "test", 4, seed=TEST_SEED).images
    blank = ((images - 0.5) ** 2).mean().sqrt().item()  # Gabor noise sits on a grey background
    assert rows[-1].ours["rmse"] == pytest.approx(blank, rel=1e-6)
    assert all(r.steps == 0 and r.command == "" and r.paper == {} for r in rows)
