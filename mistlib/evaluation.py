"""Measuring a trained model: the metrics of Tables 1–2 on the test split, and on the validation split.

Test images are drawn with ``TEST_SEED`` and are only used for the tables. Every training decision (a
recipe, a learning curve, when a run collapsed) is made on the validation split: fresh images of the same
distribution drawn with ``VALIDATION_SEED``. Both are the ``"test"`` split of a dataset (MNIST scenes built
from the MNIST test digits), so neither shares a digit image with training.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from tqdm.auto import tqdm

from mistlib.experiments import Experiment, dataset_tensors, make_dataset
from mistlib.metrics import RMSE, DetectionMetrics
from mistlib.model import MIST

TEST_SEED = 1  # the tables' test images
VALIDATION_SEED = 2  # learning curves and recipe decisions
NEAR_PX = 4.0  # a digit counts as found "within 4 px" when a keypoint lies this close to its centre


@torch.no_grad()
def measure(
    model: MIST,
    experiment: Experiment,
    images: torch.Tensor,
    boxes: torch.Tensor,
    labels: torch.Tensor,
    valid: torch.Tensor,
    batch_size: int = 32,
    progress: bool = False,
) -> dict[str, float | None]:
    """All metrics of one model on given images, batch by batch (memory stays flat as N grows).

    Args:
        images: (N, C, H, W); boxes: (N, L, 4) xyxy; labels: (N, L) padded with -1; valid: (N, L) bool.
        batch_size: images per forward pass; progress: a progress bar on stderr (only on a terminal).

    Returns: ``iou50`` (share of instances matched at IoU >= 50%), ``near4`` (share of instances with a
    keypoint within :data:`NEAR_PX` of their box centre), and ``rmse`` (reconstruction) or
    ``classification`` and ``both`` (classification); floats, ``None`` where undefined.

    Example:
        >>> from mistlib.model import MISTConfig
        >>> from mistlib.experiments import build_model
        >>> experiment = Experiment(data="gabor", method="grid", model=MISTConfig(k=4, task_width=2))
        >>> images, boxes = torch.rand(2, 1, 80, 80), torch.tensor([[[0.0, 0, 16, 16]]] * 2)
        >>> labels, valid = torch.zeros(2, 1, dtype=torch.long), torch.ones(2, 1, dtype=torch.bool)
        >>> metrics = measure(build_model(experiment), experiment, images, boxes, labels, valid)
        >>> sorted(metrics)
        ['iou50', 'near4', 'rmse']
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    rmse, detection = RMSE(), DetectionMetrics()
    near, instances = 0, 0
    quiet = not progress or not sys.stderr.isatty() or os.environ.get("MIST_QUIET") == "1"
    for start in tqdm(range(0, images.shape[0], batch_size), desc="evaluate", unit="batch", disable=quiet):
        window = slice(start, start + batch_size)
        batch = images[window].to(device)
        out = model(batch)
        keypoints = out.keypoints.cpu()
        if out.reconstruction is not None:
            rmse.update(batch, out.reconstruction.clamp(0, 1))
        logits = None if out.logits is None else out.logits.cpu()
        detection.update(keypoints, logits, boxes[window], labels[window], valid[window])
        centres = (boxes[window, :, :2] + boxes[window, :, 2:]) / 2  # (b, L, 2)
        distance = torch.cdist(keypoints[..., :2].double(), centres.double()).min(1).values  # (b, L)
        near += int(((distance <= NEAR_PX) & valid[window]).sum())
        instances += int(valid[window].sum())
    model.train(was_training)
    results = detection.compute()
    metrics: dict[str, float | None] = {"iou50": results["iou50"]}
    metrics["near4"] = near / instances if instances else None
    if "rmse" in model.task.metrics:
        metrics["rmse"] = rmse.compute()
    else:
        metrics.update(classification=results["classification"], both=results["both"])
    return metrics


def evaluate(
    model: MIST,
    experiment: Experiment,
    size: int = 1000,
    seed: int = TEST_SEED,
    batch_size: int = 32,
    progress: bool = False,
) -> dict:
    """Metrics of Tables 1–2 on ``size`` fresh test images drawn with ``seed``.

    Returns ``{"rmse", "iou50"}`` for reconstruction (``iou50`` shows localisation; for Gabor noise it is
    measured against the impulses' boxes) and ``{"iou50", "classification", "both"}`` for classification:
    floats (``None`` where undefined). The test images ``(size, C, H, W)`` are cached under the data
    directory (:func:`mistlib.data.data_dir`); the example points that at a temporary folder.

    Example:
        >>> import os, tempfile
        >>> from unittest import mock
        >>> from mistlib.model import MISTConfig
        >>> from mistlib.experiments import build_model
        >>> experiment = Experiment(data="gabor", method="grid", model=MISTConfig(k=4, task_width=2))
        >>> with tempfile.TemporaryDirectory() as tmp, mock.patch.dict(os.environ, MIST_DATA_DIR=tmp):
        ...     metrics = evaluate(build_model(experiment), experiment, size=2, batch_size=2)
        >>> sorted(metrics), 0 <= metrics["rmse"] <= 1
        (['iou50', 'rmse'], True)
    """
    tensors = dataset_tensors(make_dataset(experiment, "test", size, seed=seed))
    metrics = measure(model, experiment, *tensors, batch_size=batch_size, progress=progress)
    return {key: metrics[key] for key in model.task.metrics}


def validation_metrics(model: MIST, experiment: Experiment, size: int = 300) -> dict[str, float | None]:
    """:func:`measure` on ``size`` validation images (``VALIDATION_SEED``): what learning curves log.

    Example:
        >>> VALIDATION_SEED != TEST_SEED
        True
    """
    tensors = dataset_tensors(make_dataset(experiment, "test", size, seed=VALIDATION_SEED))
    return measure(model, experiment, *tensors)


def read_curve(path: str | Path) -> tuple[dict, list[dict]]:
    """A learning curve written by ``research/curves.py``: its header and one dict per measurement.

    Each measurement has ``step``, ``iou50``, ``near4`` and ``rmse`` or ``classification`` (fractions),
    ``wall_s``, and the training losses of that stretch. A model checkpoint written by
    :func:`mistlib.runs.train` keeps the same measurements in ``meta["validation"]``.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "run.jsonl"
        >>> lines = ['{"name": "run"}', '{"step": 0, "iou50": 0.35}', '{"step": 250, "iou50": 0.4}']
        >>> _ = path.write_text("\\n".join(lines))
        >>> header, points = read_curve(path)
        >>> header["name"], [p["step"] for p in points]
        ('run', [0, 250])
    """
    lines = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    if not lines or "step" in lines[0]:
        raise ValueError(f"{path}: not a learning curve (no header line)")
    return lines[0], lines[1:]


def best_and_last(points: list[dict], metric: str = "iou50") -> tuple[int, float, float]:
    """``(step of the best value, best value, last value)`` of one learning curve (higher is better).

    Example:
        >>> curve = [{"step": 0, "iou50": 0.3}, {"step": 250, "iou50": 0.5}, {"step": 500, "iou50": 0.4}]
        >>> best_and_last(curve)
        (250, 0.5, 0.4)
    """
    if not points:
        raise ValueError("the curve has no measurements")
    best = max(points, key=lambda point: point[metric])
    return best["step"], best[metric], points[-1][metric]


def pick_coverage(keypoints: torch.Tensor, boxes: torch.Tensor, valid: torch.Tensor) -> dict[str, float]:
    """Where the K picks go wrong: how many double up on an instance, and how many instances none reaches.

    Each pick is assigned to the instance whose box centre is nearest. ``doubled``: the share of picks whose
    instance already has a nearer pick (so some other instance goes without); ``missed``: the share of
    instances with no pick within ``2 * NEAR_PX`` of their centre; ``near``: the share of picks within
    ``NEAR_PX`` of their instance's centre.

    Args: keypoints (N, K, 3); boxes (N, L, 4) xyxy; valid (N, L) bool, the real instances among padding.

    Example:
        >>> boxes = torch.tensor([[[0.0, 0, 10, 10], [20, 0, 30, 10]]])  # centres (5, 5) and (25, 5)
        >>> picks = torch.tensor([[[5.0, 5, 10], [7, 5, 10]]])  # both on the first instance
        >>> pick_coverage(picks, boxes, torch.ones(1, 2, dtype=torch.bool))
        {'doubled': 0.5, 'missed': 0.5, 'near': 1.0}
    """
    centres = (boxes[..., :2] + boxes[..., 2:]) / 2  # (N, L, 2) (x, y)
    distance = torch.cdist(keypoints[..., :2].double(), centres.double())  # (N, K, L)
    distance = distance.masked_fill(~valid[:, None], float("inf"))
    nearest, instance = distance.min(-1)  # (N, K) each
    same = instance[:, :, None] == instance[:, None, :]  # (N, K, K): picks on the same instance
    closer = (nearest[:, None, :] < nearest[:, :, None]) | (
        (nearest[:, None, :] == nearest[:, :, None]) & torch.ones_like(same).triu(1).transpose(1, 2)
    )  # pick j is nearer to the instance than pick i (ties: the earlier pick counts as nearer)
    doubled = (same & closer).any(-1)  # (N, K)
    missed = (distance.min(1).values > 2 * NEAR_PX)[valid]  # (M,) over the real instances
    return {
        "doubled": float(doubled.double().mean()),
        "missed": float(missed.double().mean()),
        "near": float((nearest < NEAR_PX).double().mean()),
    }


def pick_sides(
    keypoints: torch.Tensor, boxes: torch.Tensor, valid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The scale of each pick that sits on an instance, beside that instance's true side.

    A pick sits on the instance whose box centre is nearest when it lies within ``NEAR_PX`` of that centre;
    the true side is the box's longer side (unclamped, unlike :func:`box_keypoints`). Comparing the two
    shows whether eq. (4)'s scales follow the instances' sizes.

    Args: keypoints (N, K, 3); boxes (N, L, 4) xyxy; valid (N, L) bool.

    Returns: picked (M,) and true (M,) sides in pixels, over the M picks that sit on an instance.

    Example:
        >>> boxes = torch.tensor([[[0.0, 0, 20, 10], [40, 40, 62, 60]]])  # sides 20 and 22
        >>> picks = torch.tensor([[[11.0, 5, 18.5], [51, 50, 21], [30, 30, 25]]])  # the third on neither
        >>> [t.tolist() for t in pick_sides(picks, boxes, torch.ones(1, 2, dtype=torch.bool))]
        [[18.5, 21.0], [20.0, 22.0]]
    """
    centres = (boxes[..., :2] + boxes[..., 2:]) / 2  # (N, L, 2)
    distance = torch.cdist(keypoints[..., :2].double(), centres.double())  # (N, K, L)
    nearest, instance = distance.masked_fill(~valid[:, None], float("inf")).min(-1)  # (N, K) each
    sides = (boxes[..., 2:] - boxes[..., :2]).amax(-1)  # (N, L)
    on_instance = nearest < NEAR_PX  # (N, K)
    return keypoints[..., 2][on_instance], torch.gather(sides, 1, instance)[on_instance]


def with_true_sides(keypoints: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """The keypoints with each side replaced by the side of the nearest true keypoint (a diagnostic).

    What the task loss would be if eq. (4) gave every pick its instance's size and changed nothing else.

    Args: keypoints (N, K, 3); true (N, L, 3), e.g. :func:`box_keypoints`. Returns: (N, K, 3).

    Example:
        >>> true = torch.tensor([[[10.0, 10, 24], [50, 50, 16]]])
        >>> with_true_sides(torch.tensor([[[48.0, 51, 20], [11, 9, 20]]]), true).tolist()
        [[[48.0, 51.0, 16.0], [11.0, 9.0, 24.0]]]
    """
    nearest = torch.cdist(keypoints[..., :2], true[..., :2]).argmin(-1)  # (N, K)
    return torch.cat([keypoints[..., :2], torch.gather(true[..., 2], 1, nearest)[..., None]], -1)


def box_keypoints(boxes: torch.Tensor, valid: torch.Tensor, k: int, scales: torch.Tensor) -> torch.Tensor:
    """Keypoints on the true boxes: each box's centre and longer side, the side clamped to ``scales``.

    A diagnostic (what a task network gives with perfect localisation), never a training target. Images
    with fewer than K instances repeat their first box in the padding places.

    Args: boxes (N, L, 4) xyxy; valid (N, L) bool; k: K; scales (S,) increasing.

    Returns: (N, K, 3) as (x, y, s).

    Example:
        >>> boxes = torch.tensor([[[0.0, 0, 20, 10], [40, 40, 50, 50]]])
        >>> box_keypoints(boxes, torch.tensor([[True, False]]), 2, torch.tensor([12.0, 25.0])).tolist()
        [[[10.0, 5.0, 20.0], [10.0, 5.0, 20.0]]]
    """
    centres = (boxes[..., :2] + boxes[..., 2:]) / 2  # (N, L, 2)
    sides = (boxes[..., 2:] - boxes[..., :2]).amax(-1, keepdim=True)  # (N, L, 1)
    keypoints = torch.cat([centres, sides.clamp(float(scales.min()), float(scales.max()))], -1)
    keypoints = torch.where(valid[..., None], keypoints, keypoints[:, :1])
    return keypoints[:, :k]
