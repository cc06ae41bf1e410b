"""The benchmark suite of issue 14 (``bench/run.py``) on tiny networks: plumbing and schema, not timings."""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, where bench/ lives

from bench import run as bench  # noqa: E402

REQUIRED = (
    "device",
    "torch",
    "lifting_images_per_s",
    "speedups",
    "inference_images_per_s",
    "peak_memory_bytes_per_image",
    "flops_per_image",
    "tflops_achieved",
    "time_to_quality_s",
    "targets",
    "targets_met",
)
VARIANTS = {"frozen", "frozen_paper", "paper", "compact", "compact_optimized"}
LEGACY = Path(__file__).resolve().parents[1] / "bench" / "results" / "cpu-quick-2026-11-24.json"


def tiny() -> bench.BenchConfig:
    config = bench.BenchConfig.tiny()
    config.ttq_target = 1.01  # unreachable (IoU <= 1): the run must report the miss, not a time
    return config


@pytest.fixture(scope="module")
def results():
    return bench.run(tiny(), command="pytest")


def test_results_carry_the_issue_keys_and_survive_json(results, tmp_path):
    for key in REQUIRED:
        assert key in results, key
    assert results["errors"] == {} and results["schema"] == bench.SCHEMA
    path = bench.save(results, tmp_path)
    assert path.name == f"cpu-quick-{results['date'][:10]}.json"
    loaded = json.loads(path.read_text())
    assert loaded["device"] == "cpu" and loaded["torch"] == results["torch"]
    assert loaded["lifting_images_per_s"] == results["lifting_images_per_s"]
    assert loaded["config"]["models"]["compact"]["task_network"] == "compact"


def test_every_variant_is_timed_in_turns_with_its_own_settings(results):
    ips = results["lifting_images_per_s"]
    assert VARIANTS <= set(ips) and all(ips[name] > 0 for name in ips)
    for name in ips:
        stats = results["lifting"][name]["images_per_s"]
        assert len(stats["runs"]) == tiny().repeats
        assert stats["min"] <= ips[name] <= stats["max"]  # the median of the repetitions
        # the json keeps every run rounded to 3 decimals (a slow machine measures 0.08 images/s)
        assert (min(stats["runs"]), max(stats["runs"])) == pytest.approx(
            (stats["min"], stats["max"]), abs=5e-4
        )
    lifting = results["lifting"]
    assert lifting["frozen"]["model"] == "frozen" and lifting["paper"]["settings"] == {}
    assert lifting["compact_optimized"]["settings"] == bench.optimized_settings("cpu")
    # the ablation: the switches added one at a time on compact
    assert lifting["compact+fused_adam+channels_last"]["settings"] == {
        "fused_adam": True,
        "channels_last": True,
    }


def test_speedups_are_ratios_of_the_medians(results):
    ips, speed = results["lifting_images_per_s"], results["speedups"]
    assert speed["compact_optimized_vs_frozen"] == pytest.approx(ips["compact_optimized"] / ips["frozen"])
    assert speed["paper_vs_frozen"] == pytest.approx(ips["paper"] / ips["frozen"])
    assert speed["paper_vs_frozen_paper"] == pytest.approx(ips["paper"] / ips["frozen_paper"])
    assert speed["compact_optimized_vs_compact"] == pytest.approx(ips["compact_optimized"] / ips["compact"])


def test_inference_of_both_presets_plain_and_optimised(results):
    # what bench/presets.py measured (paper and compact in turns), now a section of bench.run
    inference = results["inference_images_per_s"]
    assert set(inference) == set(bench.INFERENCE_RUNS) and all(v > 0 for v in inference.values())
    details = results["inference"]
    amp = bench.bf16_matrix_units()  # bf16 only where the CPU has matrix units for it (AMX)
    assert details["settings"] == {"channels_last": True, "checks_off": True, "compile": False, "amp": amp}
    assert len(details["compact_optimized"]["images_per_s"]["runs"]) == tiny().inference_repeats


def test_flops_and_cpu_only_fields(results):
    flops, ips = results["flops_per_image"], results["lifting_images_per_s"]
    assert set(flops) == {"frozen", "frozen_paper", "paper", "compact"} and all(
        v > 1e6 for v in flops.values()
    )
    expected = ips["compact_optimized"] * flops["compact"] / 1e12
    assert results["tflops_achieved"]["compact_optimized"] == pytest.approx(expected)
    assert results["peak_memory_bytes_per_image"] is None  # no GPU
    assert results["mfu"] is None and results["peak_tflops"] is None
    assert results["targets_met"] is None  # the targets are stated for a full run at batch 32


def test_time_to_quality_is_never_faked(results):
    ttq = results["time_to_quality"]
    assert not ttq["reached"] and results["time_to_quality_s"] is None
    assert ttq["iou50"] < ttq["target_iou50"] and ttq["steps"] == 6
    assert [h["step"] for h in ttq["history"]] == [2, 4, 6]
    assert set(ttq["history"][0]) == {"step", "elapsed_s", "iou50", "rmse"}
    assert ttq["settings"] == bench.optimized_settings("cpu")
    assert any("NOT reached" in note for note in results["notes"])


def test_time_to_quality_reports_the_time_when_reached():
    config = tiny()
    config.ttq_target = 0.0  # any model reaches IoU >= 0
    ttq = bench.time_to_quality(config, {"fused_adam": True})
    assert ttq["reached"] and ttq["steps"] == config.ttq_eval_every
    assert ttq["time_to_quality_s"] == ttq["elapsed_s"] > 0 and math.isfinite(ttq["iou50"])


def test_targets_are_checked_on_a_cpu_run_at_batch_32(results):
    measured = {**results, "quick": False, "config": {**results["config"], "batch_size": 32}}
    measured["lifting_images_per_s"] = {**results["lifting_images_per_s"], "compact_optimized": 151.0}
    measured["inference_images_per_s"] = {**results["inference_images_per_s"], "compact_optimized": 999.0}
    measured["speedups"] = {"paper_optimized_vs_frozen_paper": 2.1}
    met = bench.check_targets(measured)
    assert met["compact_lifting_images_per_s"] == {"target": 150.0, "measured": 151.0, "met": True}
    assert met["compact_inference_images_per_s"]["met"] is False
    assert met["paper_vs_frozen_paper"]["met"] is True
    measured["speedups"] = {}
    assert bench.check_targets(measured)["paper_vs_frozen_paper"]["met"] is None  # not measured: neither


def test_peak_table_and_file_names():
    assert bench.peak_flops("NVIDIA H100 80GB HBM3") == 989.4e12
    assert bench.peak_flops("NVIDIA H100 PCIe") == 756e12
    assert bench.peak_flops("NVIDIA H200") == 989.4e12
    assert bench.peak_flops("cpu") is None
    assert bench.slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"


def test_the_optimised_paper_step_is_timed_on_every_device():
    names = [v.name for v in bench.lifting_variants(torch.device("cuda"), ablation=True, frozen_paper=False)]
    assert names[:5] == ["frozen", "paper", "compact", "compact_optimized", "paper_optimized"]
    assert names[-1] == "compact+fused_adam+channels_last+amp"


def test_readme_tables_are_rendered_between_the_markers(results, tmp_path):
    bench.save(results, tmp_path / "results")
    shutil.copy(LEGACY, tmp_path / "results")  # a schema-1 file renders in the legacy table
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:start -->\nold table\n<!-- results:end -->\noutro\n")
    bench.render_readme(tmp_path / "results", readme)
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "old table" not in text
    assert f"| {results['date'][:10]} | cpu | {results['torch']} | quick | 2 |" in text
    assert (
        bench.LEGACY_INTRO in text and "| 2026-11-24 | cpu | 2.13.0+cpu | quick | 3.28 → 3.80 (4) |" in text
    )
    assert text.index(f"| {results['date'][:10]} |") < text.index(bench.LEGACY_INTRO)


def test_command_line_rejects_unknown_sections():
    with pytest.raises(SystemExit):
        bench.main(["--device", "cpu", "--sections", "train,bogus"])


def test_command_line_writes_the_results_and_the_table(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(bench.BenchConfig, "for_device", classmethod(lambda cls, device, quick: tiny()))
    monkeypatch.setattr(bench, "RESULTS_DIR", tmp_path / "results")
    monkeypatch.setattr(bench, "README", tmp_path / "README.md")
    (tmp_path / "README.md").write_text("<!-- results:start -->\n<!-- results:end -->\n")
    assert bench.main(["--device", "cpu", "--sections", "inference", "--out", str(tmp_path / "copy")]) == 0
    (path,) = (tmp_path / "results").glob("cpu-quick-*-inference.json")
    assert (tmp_path / "copy" / path.name).exists()
    result = json.loads(path.read_text())
    assert set(result["inference_images_per_s"]) == set(bench.INFERENCE_RUNS)
    assert result["lifting_images_per_s"] is None  # the train section did not run
    assert "compact → opt" in (tmp_path / "README.md").read_text() and "wrote" in capsys.readouterr().out


def test_a_failing_section_is_reported_and_the_others_still_run(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("inference exploded")

    monkeypatch.setattr(bench, "measure_inference", broken)
    config = tiny()
    config.sections = ("inference", "ttq")
    saved = []
    results = bench.run(config, on_section=lambda r: saved.append(dict(r)))
    assert results["errors"] == {"inference": "RuntimeError: inference exploded"}
    assert results["inference_images_per_s"] is None and results["time_to_quality"]["steps"] == 6
    assert len(saved) == 2  # saved after each section
