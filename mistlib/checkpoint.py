"""Safe model checkpoints: atomic writes, ``weights_only`` loads, clear errors, and RNG state for resuming.

Serves the training of §6–§8 (Algorithm 1 runs for many steps and must survive interruption) and the shipped
models behind Tables 1–2. A checkpoint is one plain dict::

    {"format": "mistlib-checkpoint", "version": 2, "kind": "mist", "config": {...}, "state": {...},
     "meta": {...}, "created_with": {"mistlib": "0.1.0", "torch": "2.x"}}

It holds only tensors, numbers, strings and containers, so ``torch.load(weights_only=True)`` reads it without
running any pickled code. ``config`` is JSON-like (what built the model); ``state`` holds state dicts,
optimiser states and RNG states (:func:`rng_state`); ``meta`` is free-form (steps, wall time, losses).

Older versions are migrated on load (:data:`MIGRATIONS`), so every checkpoint ever written still loads.
"""

from __future__ import annotations

import dataclasses
import pickle
import random
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mistlib import __version__
from mistlib.files import atomic_write

FORMAT = "mistlib-checkpoint"  # the marker that tells our checkpoints from any other torch file
VERSION = 2  # bumped when the layout of the dict changes; MIGRATIONS brings older ones up to date
_JSON_LEAVES = (str, int, float, bool, type(None))
_WEIGHTS_ONLY_LEAVES = (*_JSON_LEAVES, bytes, complex, torch.dtype, torch.device, torch.Size)


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, not ours, or of another kind; the message names the path.

    A subclass of ``ValueError``, raised by :func:`load_checkpoint`.

    Example:
        >>> load_checkpoint("no-such-folder/model.pt")
        Traceback (most recent call last):
        ...
        mistlib.checkpoint.CheckpointError: checkpoint no-such-folder/model.pt does not exist
        >>> issubclass(CheckpointError, ValueError)
        True
    """


def _check_config(value: Any, where: str = "config") -> None:
    """Raise ``ValueError`` unless ``value`` is JSON-like: str/int/float/bool/None, lists, str-keyed dicts."""
    if type(value) in (dict, OrderedDict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where} keys must be strings, got {key!r}")
            _check_config(item, f"{where}[{key!r}]")
    elif type(value) in (list, tuple):
        for index, item in enumerate(value):
            _check_config(item, f"{where}[{index}]")
    elif type(value) not in _JSON_LEAVES:
        raise ValueError(
            f"{where} must be JSON-serialisable (str, int, float, bool, None, list, dict), got "
            f"{type(value).__name__}: {value!r:.80}"
        )


def _check_loadable(value: Any, where: str) -> None:
    """Raise ``ValueError`` unless ``torch.load(weights_only=True)`` can read ``value`` back."""
    if isinstance(value, torch.Tensor):
        return
    if type(value) in (dict, OrderedDict):
        for key, item in value.items():
            _check_loadable(key, f"{where} key")
            _check_loadable(item, f"{where}[{key!r}]")
    elif type(value) in (list, tuple, set):
        for index, item in enumerate(value):
            _check_loadable(item, f"{where}[{index}]")
    elif type(value) not in _WEIGHTS_ONLY_LEAVES:
        raise ValueError(
            f"{where} is a {type(value).__module__}.{type(value).__name__}, which "
            "torch.load(weights_only=True) cannot read; convert it to a tensor or a Python number"
        )


def _to_half(value: Any, key: Any = None) -> Any:
    """Copy of ``value`` with float32/float64 tensors as float16, except step counters (key ``"step"``),
    0-dim tensors and tensors whose values would overflow float16."""
    if isinstance(value, torch.Tensor):
        if value.dtype not in (torch.float32, torch.float64) or value.dim() == 0 or key == "step":
            return value
        half = value.detach().to(torch.float16)
        return half if bool(torch.isfinite(half).eq(torch.isfinite(value)).all()) else value
    if isinstance(value, dict):
        out = type(value)((k, _to_half(v, k)) for k, v in value.items())
        if hasattr(value, "_metadata"):  # nn.Module.state_dict() keeps per-module versions here
            out._metadata = value._metadata  # type: ignore[attr-defined]
        return out
    if type(value) in (list, tuple):
        return type(value)(_to_half(v) for v in value)
    return value


def save_checkpoint(
    path: str | Path,
    *,
    state: dict,
    config: dict | Any,
    kind: str,
    meta: dict | None = None,
    half: bool = False,
) -> None:
    """Write a checkpoint atomically: a temp file in the same folder, flushed and fsynced, then renamed.

    A crash mid-write leaves any previous file at ``path`` intact and no temp file behind. Missing parent
    folders are created.

    Args:
        path: where to write, e.g. ``data/checkpoints/reconstruct-mnist-hard-mist.pt``.
        state: state dicts, optimiser states, RNG states, ...: tensors, numbers, strings and containers.
        config: a JSON-like dict (or a dataclass, converted with :func:`dataclasses.asdict`).
        kind: what the checkpoint holds, e.g. ``"mist"``, ``"model"``, ``"lifting"``; checked on load.
        meta: free-form extras (steps, wall time, losses), same rules as ``state``.
        half: store float32/float64 tensors of ``state`` as float16 (about half the size), except step
            counters, 0-dim tensors and tensors that would overflow; integer tensors are never touched.

    Raises: ``ValueError`` if ``config`` is not JSON-serialisable or ``state``/``meta`` hold other objects.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "linear.pt"
        >>> state = {"model": torch.nn.Linear(2, 1).state_dict()}
        >>> save_checkpoint(path, state=state, config={"in": 2}, kind="linear", half=True)
    """
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"kind must be a non-empty string, got {kind!r}")
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    if not isinstance(config, dict):
        raise ValueError(f"config must be a dict or a dataclass instance, got {type(config).__name__}")
    if not isinstance(state, dict):
        raise ValueError(f"state must be a dict, got {type(state).__name__}")
    _check_config(config)
    _check_loadable(state, "state")
    _check_loadable(meta or {}, "meta")
    checkpoint = {
        "format": FORMAT,
        "version": VERSION,
        "kind": kind,
        "config": config,
        "state": _to_half(state) if half else state,
        "meta": dict(meta or {}),
        "created_with": {"mistlib": __version__, "torch": str(torch.__version__)},
    }
    atomic_write(path, lambda file: torch.save(checkpoint, file))


def load_checkpoint(
    path: str | Path, *, kind: str | None = None, map_location: str | torch.device | None = "cpu"
) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` with ``torch.load(weights_only=True)``.

    Float16 tensors (``half=True``) come back as float16; ``module.load_state_dict`` casts them to the
    module's dtype.

    Args:
        path: the file to read.
        kind: if given, the checkpoint's ``kind`` must equal it.
        map_location: passed to :func:`torch.load` (default: everything on the CPU).

    Returns: the dict with keys ``format, version, kind, config, state, meta, created_with``.

    Raises: :class:`CheckpointError` naming ``path`` when the file does not exist, cannot be read (truncated
        or corrupt), is not a mistlib checkpoint (e.g. a bare state dict), is newer than this library, or
        holds another ``kind``.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "empty.pt"
        >>> save_checkpoint(path, state={}, config={"in": 2}, kind="linear")
        >>> load_checkpoint(path, kind="linear")["config"]
        {'in': 2}
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is not a file")
    try:
        checkpoint = torch.load(path, weights_only=True, map_location=map_location)
    except pickle.UnpicklingError as error:
        if "weights only" not in str(error).lower():
            raise CheckpointError(f"checkpoint {path} is corrupt: {error!s:.300}") from error
        raise CheckpointError(
            f"{path} refused: {_unpickler_reason(error)}; weights_only loading forbids it"
        ) from error
    except Exception as error:  # truncated zip archive, empty file, unreadable bytes, ...
        raise CheckpointError(
            f"checkpoint {path} cannot be read (truncated or corrupt?): {type(error).__name__}: {error!s:.99}"
        ) from error
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        found = type(checkpoint).__name__ if not isinstance(checkpoint, dict) else "a dict without it"
        raise CheckpointError(
            f"{path} is not a mistlib checkpoint (no format marker {FORMAT!r}; found {found}), "
            "e.g. a bare state_dict saved with torch.save"
        )
    version = checkpoint.get("version")
    if not isinstance(version, int) or not 1 <= version <= VERSION:
        raise CheckpointError(
            f"checkpoint {path} has version {version!r}; this mistlib reads up to {VERSION}"
        )
    if kind is not None and checkpoint.get("kind") != kind:
        raise CheckpointError(f"checkpoint {path} holds kind {checkpoint.get('kind')!r}, expected {kind!r}")
    return migrate(checkpoint)


def _v1_to_v2(checkpoint: dict) -> dict:
    """Version 2 moved the task network inside the task object (``task_net.*`` -> ``task.net.*``), and
    fills the model-config fields that version-1 files could lack with the values they were trained with
    (``nms=1``: no suppression, ``composite="sum"``: eq. 6)."""
    state = checkpoint.get("state")
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state["model"] = _renamed(state["model"], "task_net.", "task.net.")
    config = checkpoint.get("config")
    model = config.get("model") if isinstance(config, dict) else None
    if isinstance(model, dict) and "k" in model:
        model.setdefault("nms", 1)
        model.setdefault("composite", "sum")
    checkpoint["version"] = 2
    return checkpoint


def _renamed(state_dict: dict, old: str, new: str) -> OrderedDict:
    """``state_dict`` with the prefix ``old`` of its keys (and of its per-module ``_metadata``) -> ``new``."""

    def rename(key: str) -> str:
        return new + key[len(old) :] if key.startswith(old) else key

    renamed = OrderedDict((rename(key), value) for key, value in state_dict.items())
    metadata = getattr(state_dict, "_metadata", None)
    if metadata is not None:
        renamed._metadata = OrderedDict(  # type: ignore[attr-defined]
            (new.rstrip(".") + key[len(old) - 1 :] if key.startswith(old.rstrip(".")) else key, value)
            for key, value in metadata.items()
        )
    return renamed


MIGRATIONS = {1: _v1_to_v2}  # version -> the function that brings a checkpoint dict one version up


def migrate(checkpoint: dict) -> dict:
    """Bring a checkpoint dict of any earlier version up to :data:`VERSION`, one migration at a time.

    Example:
        >>> old = {"version": 1, "config": {"model": {"k": 9}}, "state": {"model": {"task_net.w": 1}}}
        >>> new = migrate(old)
        >>> new["version"], list(new["state"]["model"]), new["config"]["model"]
        (2, ['task.net.w'], {'k': 9, 'nms': 1, 'composite': 'sum'})
    """
    while checkpoint["version"] < VERSION:
        checkpoint = MIGRATIONS[checkpoint["version"]](checkpoint)
    return checkpoint


def _unpickler_reason(error: Exception) -> str:
    """What torch's long weights-only error refused, in a few words.

    A ``GLOBAL module.name`` that the file asks for (a function to call while loading) becomes "the file asks
    to run code (module.name)"; otherwise the line that names the problem.

    Example:
        >>> _unpickler_reason(RuntimeError("Trying to load unsupported GLOBAL posix.system whose module ..."))
        'the file asks to run code (posix.system)'
    """
    text = str(error)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return f"the file asks to run code ({found.group(1)})"
    lines = [
        line.strip()
        for line in text.splitlines()
        if "WeightsUnpickler error" in line or "Unsupported" in line
    ]
    return (lines[0] if lines else text.splitlines()[0])[:300]


def rng_state() -> dict[str, Any]:
    """Every global random state, in a form ``torch.load(weights_only=True)`` reads back.

    Returns: ``{"torch": uint8 tensor, "numpy": {...}, "python": {...}}`` plus ``"cuda"`` (one uint8
    tensor per device) when CUDA is available. NumPy's MT19937 key and Python's ``random`` state are
    stored as int64 tensors.

    Example:
        >>> state = rng_state()
        >>> first = torch.rand(2)
        >>> set_rng_state(state)
        >>> bool((torch.rand(2) == first).all())
        True
    """
    _, keys, pos, has_gauss, cached_gaussian = np.random.get_state()  # noqa: NPY002 (the legacy global state is what we save)
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),  # (624,)
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": {
            "version": version,
            "state": torch.tensor(internal, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the random states captured by :func:`rng_state` (entries that are absent are left alone).

    Tensors may come back on any device (``map_location``); they are moved to the CPU first. CUDA states
    are restored for as many devices as both the saved state and this machine have.

    Example:
        >>> set_rng_state(rng_state())
    """
    if not isinstance(state, dict):
        raise ValueError(f"state must be a dict from rng_state(), got {type(state).__name__}")
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu().to(torch.uint8))
    if "numpy" in state:
        saved = state["numpy"]
        keys = saved["keys"].cpu().numpy().astype(np.uint32)
        numpy_state = ("MT19937", keys, saved["pos"], saved["has_gauss"], saved["cached_gaussian"])
        np.random.set_state(numpy_state)  # noqa: NPY002
    if "python" in state:
        saved = state["python"]
        internal = tuple(int(v) for v in saved["state"].cpu().tolist())
        random.setstate((saved["version"], internal, saved["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        for device, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state.cpu().to(torch.uint8), device)
