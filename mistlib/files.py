"""Writing files so that nothing saved is lost: one atomic write for checkpoints, caches and downloads."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(handle)`` on a temporary file beside ``path``, fsync it, then rename it over ``path``.

    A reader sees either the old file or the complete new one: a crash or an exception inside ``write``
    leaves any previous file at ``path`` intact and no temporary file behind. Missing parent folders are
    created; the file is readable by everyone (0644), like a plain ``open(path, "wb")`` would make it.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> atomic_write(folder / "sub" / "a.bin", lambda handle: handle.write(b"data")).read_bytes()
        b'data'
        >>> def broken(handle):
        ...     handle.write(b"half")
        ...     raise RuntimeError("crash")
        >>> atomic_write(folder / "sub" / "a.bin", broken)
        Traceback (most recent call last):
        ...
        RuntimeError: crash
        >>> sorted(p.name for p in (folder / "sub").iterdir()), (folder / "sub" / "a.bin").read_bytes()
        (['a.bin'], b'data')
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable (POSIX); harmless where folders cannot be opened
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    except OSError:
        pass
    return path
