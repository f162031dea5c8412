"""The prepared arrays written by the `prepare` stage and read by every later stage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dualmem.core import paths
from dualmem.core.errors import DataError
from dualmem.core.integrity import read_checked, rerun_fix, write_checked
from dualmem.data.sources import CODE_ROWS, Dataset


def prepared_file(name: str) -> Path:
    return paths.PREPARED_DIR / f"{name}.npz"


def save_dataset(dataset: Dataset, path: Path) -> None:
    """`path` (an .npz) and its sha256 beside it."""
    arrays = {
        "name": np.array(dataset.name),
        "x_train": dataset.x_train,
        "y_train": dataset.y_train,
        "x_test": dataset.x_test,
        "y_test": dataset.y_test,
        "scale": np.array(dataset.scale),
        "image_shape": np.array(dataset.image_shape),
    }
    write_checked(path, lambda out: np.savez_compressed(out, **arrays))


def load_dataset(path: Path) -> Dataset:
    if not path.exists():
        raise DataError(f"prepared data {path} is missing; fix: run `dvc repro prepare`")
    with np.load(read_checked(path, rerun_fix("prepare"))) as npz:
        return Dataset(
            str(npz["name"]),
            npz["x_train"],
            npz["y_train"],
            npz["x_test"],
            npz["y_test"],
            float(npz["scale"]),
            tuple(int(v) for v in npz["image_shape"]),
        )


def as_float(codes: np.ndarray, scale: float) -> torch.Tensor:
    """uint8 codes -> float32 tensor in [0, 1]."""
    return torch.from_numpy(codes.astype(np.float32) * np.float32(scale))


class CodedImages:
    """A dataset's images held as their uint8 codes (1 byte a pixel, not float32's 4): indexing returns
    the selected rows as float32 (`as_float`), bitwise equal to those rows of the whole converted array,
    since the conversion is elementwise."""

    def __init__(self, codes: np.ndarray, scale: float) -> None:
        self.codes = codes
        self.scale = scale

    def __len__(self) -> int:
        return len(self.codes)

    @property
    def shape(self) -> torch.Size:
        return torch.Size(self.codes.shape)

    def __getitem__(self, index: int | slice | np.ndarray | torch.Tensor) -> torch.Tensor:
        if isinstance(index, torch.Tensor):
            index = index.numpy()
        return as_float(self.codes[index], self.scale)


Images = torch.Tensor | CodedImages  # what a learner may index for stored items' inputs


def resize_codes(codes: np.ndarray, scale: float, src: tuple[int, int], dst: tuple[int, int],
                 dst_scale: float) -> np.ndarray:
    """Area-resize flat uint8 images from shape `src` to `dst` and re-quantise to dst's code scale,
    CODE_ROWS images at a time (each image alone: the same codes as one pass, less memory)."""
    out = np.empty((len(codes), dst[0] * dst[1]), dtype=np.uint8)
    for start in range(0, len(codes), CODE_ROWS):
        block = codes[start : start + CODE_ROWS]
        images = torch.from_numpy(block.reshape(-1, 1, *src).astype(np.float32) * scale)
        if tuple(src) != tuple(dst):
            images = torch.nn.functional.interpolate(images, size=dst, mode="area")
        out[start : start + len(block)] = np.clip(np.rint(images.reshape(len(block), -1).numpy() / dst_scale), 0, 255)
    return out


def load_auxiliary(name: str) -> Dataset | None:
    """An auxiliary dataset prepared alongside the main one (e.g. fashion_mnist), or None when its
    source was not installed at prepare time. Already resized to the main dataset's image shape."""
    path = prepared_file(name)
    return load_dataset(path) if path.exists() else None
