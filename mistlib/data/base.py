"""What the datasets of §7.1 share: a seeded, cached ``Dataset`` of images with per-instance ground truth.

A dataset is fully determined by ``(split, size, seed, config)`` (and, for MNIST scenes, the MNIST source):
the same arguments give bit-identical images, in this process or from the cache. Train and test sets use
disjoint MNIST digits and different random streams. An item is a dict::

    image   float32 (C, H, W) in [0, 1]
    boxes   float32 (L, 4) as (x0, y0, x1, y1) in pixels (pixel (i, j) has centre x=j, y=i; x right, y down)
    labels  int64 (L,) class of each instance, -1 where there is none (Gabor)
    centers float32 (L, 2) as (x, y): the centre of each instance

plus dataset-specific per-instance fields. :func:`collate` batches items of varying ``L``.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset

from mistlib.checks import check_positive_int
from mistlib.data.cache import cache_key, cache_path, load_cached, save_cached

SPLITS = ("train", "test")
UINT16_SCALE = 65534  # uint16 images hold round(value * 65534): even, so 0.5 is exact; steps < 1e-5


def split_rng(name: str, split: str, seed: int) -> np.random.Generator:
    """The random stream of one dataset: seeded by ``seed`` and a fixed code for ``split`` and ``name``.

    ``np.random.SeedSequence`` mixes the three, so train and test (and the different datasets) draw from
    unrelated streams even with the same ``seed``.

    Example:
        >>> same = split_rng("gabor", "train", 0).random() == split_rng("gabor", "train", 0).random()
        >>> other = split_rng("gabor", "train", 0).random() != split_rng("gabor", "test", 0).random()
        >>> bool(same), bool(other)
        (True, True)
    """
    return np.random.default_rng([seed, SPLITS.index(split), zlib.crc32(name.encode())])


def check_range(
    name: str, value: tuple[float, float], low: float | None = None, high: float | None = None
) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is a pair ``low <= a <= b <= high``.

    Example:
        >>> check_range("weight_range", (0.5, 1.0), low=0.0)
        >>> check_range("weight_range", (1.0, 0.5))
        Traceback (most recent call last):
        ...
        ValueError: weight_range must be a finite pair with low <= high, got (1.0, 0.5)
    """
    if not isinstance(value, tuple | list) or len(value) != 2:
        raise ValueError(f"{name} must be a pair (low, high), got {value!r}")
    a, b = value
    if not (np.isfinite(a) and np.isfinite(b)) or a > b:
        raise ValueError(f"{name} must be a finite pair with low <= high, got {value!r}")
    if (low is not None and a < low) or (high is not None and b > high):
        raise ValueError(f"{name} must lie within [{low}, {high}], got {value!r}")


def check_number(
    name: str, value: float, low: float, high: float = float("inf"), open_low: bool = False
) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``low <= value <= high`` (``low < value`` if open_low).

    Example:
        >>> check_number("background", 0.5, 0.0, 1.0)
        >>> check_number("contrast", 0.0, 0.0, open_low=True)
        Traceback (most recent call last):
        ...
        ValueError: contrast must be in (0.0, inf], got 0.0
    """
    if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value < low or value > high or (open_low and value == low):
        bracket = "(" if open_low else "["
        raise ValueError(f"{name} must be in {bracket}{low}, {high}], got {value!r}")


def to_float(images: torch.Tensor) -> torch.Tensor:
    """Stored images to float32 in [0, 1]: uint8 is read as ``k / 255``, uint16 as ``k / UINT16_SCALE``.

    Any shape, e.g. ``(N, C, H, W)``; other dtypes are only cast to float32.

    Example:
        >>> to_float(torch.tensor([0, 51, 255], dtype=torch.uint8))
        tensor([0.0000, 0.2000, 1.0000])
    """
    scale = {torch.uint8: 255.0, torch.uint16: float(UINT16_SCALE)}.get(images.dtype, 1.0)
    return images.float() / scale


class InstanceDataset(Dataset):
    """Base class: ``Dataset(split="train"|"test", size=N, seed=0, config=None, cache=True)``.

    Subclasses set ``name`` and ``config_class`` and implement :meth:`generate` (all images at once, from a
    ``np.random.Generator``) and :meth:`instance_images`. With ``cache=True`` the generated tensors are read
    from / written to ``<data dir>/cache/`` (see :mod:`mistlib.data.cache`).

    Attributes:
        images: float32 ``(size, C, H, W)`` in [0, 1], for fast batched access.
        boxes: float32 ``(size, L, 4)`` xyxy pixels; rows past ``num_instances[n]`` are zeros.
        labels: int64 ``(size, L)``; -1 for no class and for padding.
        centers: float32 ``(size, L, 2)`` as (x, y) pixels.
        num_instances: int64 ``(size,)``: how many of the ``L`` rows are real instances.
        from_cache: whether the data were read from the cache.
        cache_file: the cache file (``None`` with ``cache=False``).

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass(frozen=True)
        ... class DotsConfig:
        ...     image_size: int = 8
        >>> class Dots(InstanceDataset):  # one bright pixel per image, its 2x2 box as ground truth
        ...     name, config_class = "dots", DotsConfig
        ...     def generate(self, rng):
        ...         n, side = self.size, self.config.image_size
        ...         xy = torch.from_numpy(rng.integers(1, side - 1, size=(n, 1, 2)))  # (N, L=1, 2)
        ...         images = torch.zeros(n, 1, side, side)  # (N, C, H, W)
        ...         images[torch.arange(n), 0, xy[:, 0, 1], xy[:, 0, 0]] = 1.0
        ...         return {"images": images, "boxes": torch.cat([xy - 1, xy + 1], -1).float(),
        ...                 "labels": torch.zeros(n, 1, dtype=torch.int64), "centers": xy.float(),
        ...                 "num_instances": torch.ones(n, dtype=torch.int64)}
        >>> dots = Dots("train", size=3, cache=False)
        >>> len(dots), dots.images.shape, dots[0]["boxes"].shape, dots[0]["image"].sum().item()
        (3, torch.Size([3, 1, 8, 8]), torch.Size([1, 4]), 1.0)
    """

    name: ClassVar[str]
    config_class: ClassVar[type]
    # Per-instance tensors of ``data`` (leading dims (size, L)), and those of them that items carry.
    instance_fields: ClassVar[tuple[str, ...]] = ("boxes", "labels", "centers")
    item_fields: ClassVar[tuple[str, ...]] = ("boxes", "labels", "centers")

    def __init__(
        self, split: str = "train", size: int = 1000, seed: int = 0, config: Any = None, cache: bool = True
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        check_positive_int("size", size)
        check_positive_int("seed", seed, minimum=0)
        config = self.config_class() if config is None else config
        if not isinstance(config, self.config_class):
            raise ValueError(f"config must be a {self.config_class.__name__}, got {type(config).__name__}")
        self.split, self.size, self.seed, self.config = split, size, seed, config
        self.from_cache = False
        self.cache_file: Path | None = None
        data = None
        if cache:
            key = cache_key(self.name, config, seed, split, size, self.source())
            self.cache_file = cache_path(self.name, split, size, seed, key)
            data = load_cached(self.cache_file, key, self._expected_shapes(), self._inconsistency)
            self.from_cache = data is not None
        if data is None:
            data = self.generate(split_rng(self.name, split, seed))
            if cache:
                save_cached(self.cache_file, key, data)
        self.data: dict[str, torch.Tensor] = data
        self.images = to_float(data["images"])  # (size, C, H, W)
        self.boxes, self.labels = data["boxes"], data["labels"]
        self.centers, self.num_instances = data["centers"], data["num_instances"]

    # --- to implement -------------------------------------------------------------------------------------
    def generate(self, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """All ``size`` images and their ground truth, drawn from ``rng`` only.

        Returns: ``images`` (size, C, H, W) as uint8, uint16 or float32 (see :func:`to_float`),
        ``num_instances`` (size,) and every field of ``instance_fields`` with leading dims ``(size, L)``,
        ``L = max num_instances``.
        """
        raise NotImplementedError

    def instance_images(self, index: int) -> torch.Tensor:
        """Each instance of image ``index`` rendered alone, before compositing: float32 ``(L_n, H, W)``."""
        raise NotImplementedError

    def source(self) -> str:
        """What else the content depends on (entered into the cache key); "" by default."""
        return ""

    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the images."""
        return (1, self.config.image_size, self.config.image_size)

    # --- Dataset protocol ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not -self.size <= index < self.size:
            raise IndexError(f"index {index} out of range for a dataset of size {self.size}")
        n = int(self.num_instances[index])
        item = {"image": self.images[index]}
        for field in self.item_fields:
            item[field] = self.data[field][index, :n]
        return item

    def __repr__(self) -> str:
        args = f"split={self.split!r}, size={self.size}, seed={self.seed}, config={self.config}"
        return f"{type(self).__name__}({args})"

    def _expected_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes = {"images": (self.size, *self.image_shape()), "num_instances": (self.size,)}
        for field in self.instance_fields:
            shapes[field] = (self.size,)
        return shapes

    def _inconsistency(self, data: dict[str, torch.Tensor]) -> str | None:
        """Why cached ``data`` cannot be this dataset's, beyond leading shapes (``None`` if it can)."""
        width = data["boxes"].shape[1] if data["boxes"].dim() == 3 else -1
        for field in self.instance_fields:
            if data[field].dim() < 2 or data[field].shape[1] != width:
                return f"tensor {field!r} has shape {tuple(data[field].shape)}, expected (size, {width}, ...)"
        if bool((data["num_instances"] > width).any()):
            return "num_instances exceeds the stored instances"
        return None


def collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Batch dataset items for a ``DataLoader``: stack the images, pad the per-instance fields.

    Returns: ``images`` (B, C, H, W); every per-instance field padded along its first dim to ``L = max L_n``
    (``boxes`` (B, L, 4) with zeros, ``labels`` (B, L) with -1, others with zeros); ``num_instances`` (B,).

    Example:
        >>> items = [
        ...     {"image": torch.zeros(1, 4, 4), "boxes": torch.ones(2, 4), "labels": torch.tensor([3, 5])},
        ...     {"image": torch.zeros(1, 4, 4), "boxes": torch.ones(1, 4), "labels": torch.tensor([7])},
        ... ]
        >>> batch = collate(items)
        >>> batch["images"].shape, batch["boxes"].shape
        (torch.Size([2, 1, 4, 4]), torch.Size([2, 2, 4]))
        >>> batch["labels"].tolist(), batch["num_instances"].tolist()  # padded with -1
        ([[3, 5], [7, -1]], [2, 1])
    """
    if not items:
        raise ValueError("items must be a non-empty list of dataset items")
    counts = torch.tensor([len(item["boxes"]) for item in items], dtype=torch.int64)
    batch = {"images": torch.stack([item["image"] for item in items])}  # (B, C, H, W)
    longest = int(counts.max())
    for field in items[0]:
        if field == "image":
            continue
        first = items[0][field]
        padded = torch.full(
            (len(items), longest, *first.shape[1:]), -1 if field == "labels" else 0, dtype=first.dtype
        )  # (B, L, ...)
        for row, item in enumerate(items):
            padded[row, : len(item[field])] = item[field]
        batch[field] = padded
    batch["num_instances"] = counts
    return batch
