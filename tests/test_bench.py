"""The benchmark suite of issue 6 (``bench/run.py``) on a tiny model: plumbing and schema, not timings."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, where bench/ lives

from bench import run as bench  # noqa: E402

REQUIRED = (
    "device",
    "torch",
    "train_step_images_per_s",
    "train_step_speedup",
    "inference_images_per_s",
    "peak_memory_bytes_per_image",
    "tflops_achieved",
    "time_to_quality_s",
)


@pytest.fixture(scope="module")
def results():
    return bench.run(bench.BenchConfig.tiny(), command="pytest")


def test_results_carry_the_issue_keys_and_survive_json(results, tmp_path):
    for key in REQUIRED:
        assert key in results, key
    assert results["errors"] == {}
    path = bench.save(results, tmp_path)
    assert path.name == f"cpu-quick-{results['date'][:10]}.json"
    loaded = json.loads(path.read_text())
    assert loaded["device"] == "cpu" and loaded["torch"] == results["torch"]
    assert loaded["train_step_images_per_s"] == results["train_step_images_per_s"]


def test_throughputs_are_positive_and_speedup_is_their_ratio(results):
    ips = results["train_step_images_per_s"]
    assert ips["reference"] > 0 and ips["optimized"] > 0
    assert results["train_step_speedup"] == pytest.approx(ips["optimized"] / ips["reference"])
    for name in ("reference", "optimized"):
        runs = results["train_step"][name]["images_per_s"]["runs"]
        assert len(runs) == bench.BenchConfig.tiny().repeats
        assert min(runs) <= ips[name] <= max(runs)  # the median of the repetitions
    assert all(v > 0 for v in results["inference_images_per_s"].values())
    # the ablation ran every CPU variant, each with its own settings
    assert {"fused_adam", "+channels_last"} <= set(results["train_step"])
    assert results["train_step"]["+channels_last"]["settings"] == {"fused_adam": True, "channels_last": True}


def test_flops_and_cpu_only_fields(results):
    flops, ips = results["flops_per_image"], results["train_step_images_per_s"]
    assert flops > 1e6  # convolutions of three stages, forward and backward
    assert results["tflops_achieved"]["optimized"] == pytest.approx(ips["optimized"] * flops / 1e12)
    assert results["peak_memory_bytes_per_image"] is None  # no GPU
    assert results["mfu"] is None and results["peak_tflops"] is None


def test_time_to_quality_is_never_faked(results):
    ttq = results["time_to_quality"]
    assert not ttq["reached"] and results["time_to_quality_s"] is None  # a tiny model in 6 steps
    assert ttq["rmse"] > ttq["target_rmse"] and ttq["steps"] == 6
    assert [h["step"] for h in ttq["history"]] == [2, 4, 6]
    assert any("NOT reached" in note for note in results["notes"])


def test_time_to_quality_reports_the_time_when_reached():
    config = bench.BenchConfig.tiny()
    config.ttq_target = 1.0  # any reconstruction of images in [0, 1] has RMSE <= 1
    ttq = bench.time_to_quality(config, {"fused_adam": True})
    assert ttq["reached"] and ttq["steps"] == config.ttq_eval_every
    assert ttq["time_to_quality_s"] == ttq["elapsed_s"] > 0 and math.isfinite(ttq["rmse"])


def test_peak_table_and_file_names():
    assert bench.peak_flops("NVIDIA H100 80GB HBM3") == 989.4e12
    assert bench.peak_flops("NVIDIA H100 PCIe") == 756e12
    assert bench.peak_flops("NVIDIA H200") == 989.4e12
    assert bench.peak_flops("cpu") is None
    assert bench.slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"


def test_readme_table_is_rendered_between_the_markers(results, tmp_path):
    bench.save(results, tmp_path / "results")
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:start -->\nold table\n<!-- results:end -->\noutro\n")
    bench.render_readme(tmp_path / "results", readme)
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "old table" not in text
    assert f"| {results['date'][:10]} | cpu | {results['torch']} | quick |" in text


def test_command_line_rejects_unknown_sections():
    with pytest.raises(SystemExit):
        bench.main(["--device", "cpu", "--sections", "train,bogus"])


def test_a_failing_section_is_reported_and_the_others_still_run(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("inference exploded")

    monkeypatch.setattr(bench, "measure_inference", broken)
    config = bench.BenchConfig.tiny()
    config.sections = ("inference", "ttq")
    saved = []
    results = bench.run(config, on_section=lambda r: saved.append(dict(r)))
    assert results["errors"] == {"inference": "RuntimeError: inference exploded"}
    assert results["inference_images_per_s"] is None and results["time_to_quality"]["steps"] == 6
    assert len(saved) == 2  # saved after each section


def test_presets_bench_writes_both_presets(tmp_path, capsys):
    from bench import presets

    assert presets.main(["--batch", "2", "--repeats", "1", "--out", str(tmp_path)]) == 0
    (path,) = tmp_path.glob("presets-cpu-*.json")
    result = json.loads(path.read_text())
    assert set(result["lifting_images_per_s"]) == {"paper", "compact"}
    assert all(value > 0 for value in result["inference_images_per_s"].values())
    assert len(result["lifting_step_s"]["compact"]) == 1 and "compact" in capsys.readouterr().out
