"""Where data lives on disk, and the on-disk cache of generated datasets (the sets of §7.1).

A generated set is a dict of tensors. It is stored under ``<data dir>/cache/`` in a file whose name carries a
hash of everything that determines its content (dataset name, config, seed, split, size, MNIST source and the
generator version), written atomically (temporary file + ``os.replace``) and checked when read back: a file
that is unreadable, belongs to another key or has the wrong shapes is ignored, and the caller regenerates it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from mistlib.files import atomic_write

# Bump when a generator changes what it draws for a given seed: old cache files then stop matching.
GENERATOR_VERSION = 2


def data_dir() -> Path:
    """The data directory: ``$MIST_DATA_DIR`` if set, else the repository's ``data/`` (beside ``mistlib/``).

    It holds ``mnist/`` (the optional full MNIST IDX files), ``cache/`` (generated sets) and ``preview/``.
    Nothing is created here; writers create the sub-folder they need.

    Example:
        >>> from unittest import mock
        >>> with mock.patch.dict(os.environ, MIST_DATA_DIR="/srv/mist-data"):
        ...     print(data_dir().as_posix())
        /srv/mist-data
    """
    env = os.environ.get("MIST_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[2] / "data"


def cache_key(name: str, config: object, seed: int, split: str, size: int, source: str) -> str:
    """SHA-256 hex digest identifying one generated set.

    Args:
        name: dataset name, e.g. ``"mnist-hard"``.
        config: the dataset's config dataclass (all its fields enter the key).
        seed, split, size: the dataset's arguments.
        source: what else the content depends on, e.g. the MNIST digits' fingerprint ("" if nothing).

    Example:
        >>> from mistlib.data.gabor import GaborConfig
        >>> key = cache_key("gabor", GaborConfig(), seed=0, split="train", size=10, source="")
        >>> len(key), key == cache_key("gabor", GaborConfig(), seed=1, split="train", size=10, source="")
        (64, False)
    """
    identity = {
        "name": name,
        "config": dataclasses.asdict(config),  # type: ignore[arg-type]
        "seed": seed,
        "split": split,
        "size": size,
        "source": source,
        "version": GENERATOR_VERSION,
    }
    text = json.dumps(identity, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


def cache_path(name: str, split: str, size: int, seed: int, key: str) -> Path:
    """The cache file of a set: ``<data dir>/cache/<name>-<split>-n<size>-s<seed>-<key[:16]>.pt``.

    Example:
        >>> path = cache_path("gabor", "train", 10, 0, "0123456789abcdef" * 4)
        >>> path.parent.name, path.name
        ('cache', 'gabor-train-n10-s0-0123456789abcdef.pt')
    """
    return data_dir() / "cache" / f"{name}-{split}-n{size}-s{seed}-{key[:16]}.pt"


def save_cached(path: Path, key: str, tensors: dict[str, torch.Tensor]) -> None:
    """Write ``tensors`` (and ``key``) to ``path`` atomically: a reader never sees a half-written file.

    Missing parent folders are created. See :func:`load_cached` for reading it back.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = Path(tmp) / "cache" / "set.pt"
        ...     save_cached(path, "my-key", {"images": torch.zeros(2, 1, 4, 4)})
        ...     print(sorted(p.name for p in path.parent.iterdir()))
        ['set.pt']
    """
    atomic_write(path, lambda handle: torch.save({"key": key, "tensors": tensors}, handle))


def load_cached(
    path: Path,
    key: str,
    shapes: dict[str, tuple[int, ...]],
    check: Callable[[dict[str, torch.Tensor]], str | None] | None = None,
) -> dict[str, torch.Tensor] | None:
    """Read a set written by :func:`save_cached`, or return ``None`` when it must be regenerated.

    Args:
        path: the cache file.
        key: the expected :func:`cache_key`.
        shapes: for each required tensor, the leading dimensions it must have, e.g.
            ``{"images": (N, 1, 80, 80), "boxes": (N,)}``; further dimensions are not checked.
        check: optional further check of the tensors, returning what is wrong or ``None``.

    Returns ``None`` (with a ``RuntimeWarning`` for anything but a missing file) when the file is missing,
    unreadable, written for another key, or lacks a tensor / has a wrong shape.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = Path(tmp) / "set.pt"
        ...     print(load_cached(path, "my-key", {"images": (2,)}))  # missing: no warning
        ...     save_cached(path, "my-key", {"images": torch.zeros(2, 1, 4, 4)})  # (N, C, H, W)
        ...     print(load_cached(path, "my-key", {"images": (2, 1)})["images"].shape)
        ...     with warnings.catch_warnings(record=True) as caught:
        ...         warnings.simplefilter("always")
        ...         print(load_cached(path, "other-key", {"images": (2,)}), len(caught))
        None
        torch.Size([2, 1, 4, 4])
        None 1
    """
    if not path.exists():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        problem = _problem(payload, key, shapes)
        if problem is None and check is not None:
            problem = check(payload["tensors"])
    except Exception as error:  # any unreadable file means "regenerate"
        problem = f"unreadable ({type(error).__name__}: {error})"
    if problem is not None:
        warnings.warn(f"ignoring cache file {path}: {problem}; regenerating it", RuntimeWarning, stacklevel=3)
        return None
    return payload["tensors"]


def _problem(payload: object, key: str, shapes: dict[str, tuple[int, ...]]) -> str | None:
    """Why ``payload`` is not a valid cached set for ``key`` and ``shapes`` (``None`` if it is)."""
    if not isinstance(payload, dict) or not isinstance(payload.get("tensors"), dict):
        return "not a cached dataset"
    if payload.get("key") != key:
        return "written for another key"
    tensors = payload["tensors"]
    for name, lead in shapes.items():
        tensor = tensors.get(name)
        if not isinstance(tensor, torch.Tensor):
            return f"missing tensor {name!r}"
        if tuple(tensor.shape[: len(lead)]) != tuple(lead):
            return f"tensor {name!r} has shape {tuple(tensor.shape)}, expected leading dims {tuple(lead)}"
    return None
