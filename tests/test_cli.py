"""The command line as users meet it: help, version, one-line errors, safe outputs, resume and Ctrl-C."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mistlib import __version__
from mistlib.checkpoint import load_checkpoint
from mistlib.cli import build_parser, main
from mistlib.experiments import load_model

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--method",
    "naive",
    "--preset",
    "compact",
    "--batch-size",
    "2",
    "--train-size",
    "8",
    "--eval-size",
    "2",
]
TINY += ["--device", "cpu"]


def _err(capsys) -> str:
    return capsys.readouterr().err.strip()


def test_help_shows_defaults_in_plain_text_and_version(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    text = capsys.readouterr().out
    assert "(default: mnist-hard)" in text and "(default: auto)" in text and "``" not in text
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--version"])
    assert __version__ in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["evaluate", "missing.pt"], "missing.pt does not exist"),
        (["evaluate", "README.md"], "README.md"),
        (["train", "--method", "mist", "--steps", "5", "--device", "cpu"], "warm-up steps"),
    ],
)
def test_bad_input_is_one_line_and_exit_status_2(argv, message, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    argv = [*argv, "--out", str(tmp_path / "x.pt")] if argv[0] == "train" else argv
    assert main(argv) == 2
    err = _err(capsys)
    assert err.startswith("mist: error:") and message in err and len(err.splitlines()) == 1


def test_cuda_without_cuda_is_a_one_line_error(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["evaluate", "x.pt", "--device", "cuda"]) == 2
    assert "sees no CUDA device" in _err(capsys)


@pytest.mark.parametrize(
    "flag, value", [("--steps", "0"), ("--steps", "-3"), ("--batch-size", "0"), ("--eval-size", "0")]
)
def test_non_positive_counts_are_refused_before_any_work(flag, value, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", *TINY, flag, value, "--out", str(tmp_path / "x.pt")])
    assert exit_info.value.code == 2 and "must be a positive integer" in _err(capsys)
    assert not any(tmp_path.iterdir())


def test_default_output_is_runs_and_an_existing_file_needs_force(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MIST_DATA_DIR", str(ROOT / "data"))
    assert main(["train", *TINY, "--steps", "2"]) == 0
    out = tmp_path / "runs" / "reconstruct-mnist-hard-naive-compact.pt"
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["checkpoint"] == str(
        out.relative_to(tmp_path)
    )
    before = out.read_bytes()
    assert main(["train", *TINY, "--steps", "3"]) == 2
    assert "exists: pass --force" in _err(capsys) and out.read_bytes() == before  # nothing lost
    assert main(["train", *TINY, "--steps", "3", "--force"]) == 0
    assert load_model(out)[2]["steps"] == 3


def test_resume_refuses_other_settings_and_a_stale_file_needs_a_decision(tmp_path, capsys):
    out = tmp_path / "run.pt"
    from mistlib.experiments import build_model, build_trainer, dataset_tensors, make_dataset, recipe

    experiment = recipe("reconstruct", "mnist-hard", "naive", budget="cpu", preset="compact", train_size=8)
    experiment.train.update(steps=4, batch_size=2, device="cpu")

    trainer = build_trainer(experiment, build_model(experiment))
    trainer.meta = {"experiment": dataclasses.asdict(experiment)}
    trainer.fit(dataset_tensors(make_dataset(experiment, "train", 8))[0], checkpoint=f"{out}.resume", steps=2)
    base = ["train", *TINY, "--steps", "4", "--out", str(out)]
    assert main([*base, "--resume", "--seed", "1"]) == 2
    assert "seed: 0 -> 1" in _err(capsys)
    assert main([*base, "--resume", "--data", "gabor"]) == 2
    assert "data: 'mnist-hard' -> 'gabor'" in _err(capsys)
    assert main(["train", *TINY, "--task", "classify", "--steps", "4", "--out", str(out), "--resume"]) == 2
    assert "task: 'reconstruct' -> 'classify'" in _err(capsys)
    assert main(base) == 2  # a stale .resume and no --resume: refused, the file kept
    assert "holds an unfinished run (step 2)" in _err(capsys) and Path(f"{out}.resume").exists()
    assert main([*base, "--resume"]) == 0
    assert load_model(out)[2]["steps"] == 4 and not Path(f"{out}.resume").exists()
    assert main([*base, "--resume", "--force"]) == 0
    assert "starting from step 0" in _err(capsys)


def test_a_second_run_on_the_same_output_is_refused(tmp_path, capsys):
    out = tmp_path / "run.pt"
    lock = Path(f"{out}.lock")
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock.write_text(str(holder.pid))
        assert main(["train", *TINY, "--steps", "2", "--out", str(out)]) == 2
        assert f"another run (process {holder.pid})" in _err(capsys) and not out.exists()
    finally:
        holder.kill()
        holder.wait()
    assert main(["train", *TINY, "--steps", "2", "--out", str(out)]) == 0  # its process is gone: stale
    assert not lock.exists()


def _spawn(tmp_path: Path, out: Path, *extra: str) -> subprocess.Popen:
    # the same thread count as this process, so that both runs add their floats in the same order
    env = {**os.environ, "MIST_DATA_DIR": str(ROOT / "data"), "OMP_NUM_THREADS": str(torch.get_num_threads())}
    argv = [sys.executable, "-m", "mistlib", "train", *TINY, "--steps", STEPS, "--out", str(out), *extra]
    return subprocess.Popen(
        argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


STEPS = "300"  # a few seconds: long enough to be killed half-way


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_killed_runs_resume_to_the_weights_of_an_uninterrupted_one(tmp_path, sig, capsys):
    straight = tmp_path / "straight.pt"
    assert main(["train", *TINY, "--steps", STEPS, "--out", str(straight)]) == 0
    out = tmp_path / "killed.pt"
    process = _spawn(tmp_path, out, "--save-every", "10")
    _wait_for(Path(f"{out}.resume"), process)
    process.send_signal(sig)
    _, err = process.communicate(timeout=120)
    if sig == signal.SIGINT:  # saved where it stopped, one line, exit 130
        assert process.returncode == 130, err
        assert err.strip().splitlines()[-1].startswith("mist: interrupted after step")
    else:
        assert process.returncode == -signal.SIGKILL
    assert Path(f"{out}.resume").exists() and not out.exists()
    stopped = load_checkpoint(f"{out}.resume")["state"]["step"]
    assert 0 < stopped < int(STEPS)  # really stopped half-way
    assert main(["train", *TINY, "--steps", STEPS, "--out", str(out), "--resume"]) == 0
    a, b = load_model(straight)[0].state_dict(), load_model(out)[0].state_dict()
    assert all(torch.equal(a[name], b[name]) for name in a)
    assert load_model(out)[2]["wall_time_s"] > 0
