"""DVC stage `prepare`, the first: validate the whole params.yaml, then load the data source, write
the prepared arrays and one split manifest per seed (class order, the tasks of each stream, the
held-out classes), plus Fashion-MNIST as an auxiliary set for Tests 3-4 when it is installed."""

from __future__ import annotations

import _interpreter  # noqa: F401  (first: re-executes under the project's .venv if needed)
import argparse
import json
import sys
from pathlib import Path

import numpy as np

from dualmem.core import paths
from dualmem.core.cli import run_stage
from dualmem.core.errors import DataError
from dualmem.data.prepared import prepared_file, resize_codes, save_dataset
from dualmem.data.sources import FASHION_INSTALL, DataParams, Dataset, load_fashion_mnist, load_source
from dualmem.data.splits import ProtocolParams, make_manifest, stream_seeds, write_manifest
from dualmem.validate import validate_params

OUTPUTS = [paths.PREPARED_DIR]


def fashion_as_auxiliary(directory: str, main: Dataset) -> Dataset | None:
    try:
        fashion = load_fashion_mnist(directory)
    except DataError as exc:
        print(f"note: {exc} — Tests 3-4 will skip Fashion-MNIST ({FASHION_INSTALL})", file=sys.stderr)
        return None

    def resize(codes: np.ndarray) -> np.ndarray:
        return resize_codes(codes, fashion.scale, fashion.image_shape, main.image_shape, main.scale)

    return Dataset("fashion_mnist", resize(fashion.x_train), fashion.y_train, resize(fashion.x_test),
                   fashion.y_test, main.scale, main.image_shape)


def main(params: dict, args: argparse.Namespace) -> None:
    validate_params(params)  # the whole file, before any work: later stages never meet a bad value
    data = DataParams.from_params(params)
    seeds = sorted(set(stream_seeds(params, "continual")) | set(stream_seeds(params, "openworld")))
    dataset = load_source(data.source, data.fashion_mnist_dir)
    protocol = ProtocolParams.from_params(params, dataset.n_classes)

    save_dataset(dataset, prepared_file("main"))
    if data.source != "fashion_mnist" and (aux := fashion_as_auxiliary(data.fashion_mnist_dir, dataset)):
        save_dataset(aux, prepared_file("fashion_mnist"))
    for seed in seeds:
        write_manifest(make_manifest(seed, dataset.name, dataset.n_classes, protocol), paths.manifest_path(seed))
    summary = {
        "source": dataset.name,
        "n_train": len(dataset.y_train),
        "n_test": len(dataset.y_test),
        "n_features": dataset.n_features,
        "train_class_counts": np.bincount(dataset.y_train).tolist(),
        "test_class_counts": np.bincount(dataset.y_test).tolist(),
        "seeds": seeds,
    }
    (paths.PREPARED_DIR / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"prepared {dataset.name}: {summary['n_train']} train / {summary['n_test']} test, "
          f"{len(seeds)} manifests")


if __name__ == "__main__":
    run_stage(main, lambda args: [Path(p) for p in OUTPUTS])
