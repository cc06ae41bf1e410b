"""Datasets of §7.1: MNIST easy, MNIST hard and Gabor noise, made from a config, a seed and real MNIST digits.

Every dataset is ``Dataset(split="train"|"test", size=N, seed=0, config=None, cache=True)``; items are dicts
(``image`` (C, H, W), ``boxes`` (L, 4) xyxy pixels, ``labels`` (L,), ``centers`` (L, 2), ...) and
:func:`collate` batches them. ``python -m mistlib.data download`` fetches the full MNIST, ``... preview``
draws a few images of each dataset into ``data/preview/``. :mod:`mistlib.data.augment` bends training images
by a smooth random field (elastic deformation; ``LiftingConfig.deform``).
"""

from mistlib.data.base import InstanceDataset, collate
from mistlib.data.cache import data_dir
from mistlib.data.gabor import GaborConfig, GaborNoise
from mistlib.data.mnist import DownloadError, download_mnist, mnist_digits, mnist_source, read_idx, write_idx
from mistlib.data.scenes import MNISTEasy, MNISTEasyConfig, MNISTHard, MNISTHardConfig

DATASETS: dict[str, type[InstanceDataset]] = {
    "mnist-easy": MNISTEasy,
    "mnist-hard": MNISTHard,
    "gabor": GaborNoise,
}

__all__ = [
    "DATASETS",
    "DownloadError",
    "GaborConfig",
    "GaborNoise",
    "InstanceDataset",
    "MNISTEasy",
    "MNISTEasyConfig",
    "MNISTHard",
    "MNISTHardConfig",
    "collate",
    "data_dir",
    "download_mnist",
    "mnist_digits",
    "mnist_source",
    "read_idx",
    "write_idx",
]
