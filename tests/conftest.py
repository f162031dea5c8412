from __future__ import annotations

import copy
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from filelock import FileLock

from dualmem.data.sources import Dataset, load_digits_dataset
from dualmem.data.splits import ProtocolParams, make_manifest
from dualmem.data.stream import Stream
from dualmem.tiny import git_env, make_tiny_copy, project_root, run_tiny_pipeline

TINY_PARAMS = project_root() / "profiles" / "tiny.yaml"


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Tiny tensors: one thread avoids oversubscription slow-downs on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# Small learner configs for unit tests on synthetic data.
SMALL_LEARNERS = {
    "finetune": {"epochs": 1, "lr": 0.001, "batch_size": 32},
    "joint": {"epochs": 1, "lr": 0.001, "batch_size": 32, "warm_start": True},
    "dualmem": {
        "batch_size": 32,
        "encoder": {"mode": "frozen"},  # a float32 feature memory on the given encoder (the modes that
        "episodic": {"k": 3, "temperature": 0.05, "key": "features", "storage": "float32"},  # train it:
        # tests/test_dualmem.py)
        "semantic": {"hidden": 0, "input_scale": 16.0, "steps": 5, "batch_size": 16, "lr": 0.001,
                     "distill_weight": 1.0, "distill_temperature": 2.0},
        "readout": {"threshold_quantile": 0.05, "sharpness": 200.0},
    },
}


@pytest.fixture(scope="session")
def tiny_params() -> dict:
    return yaml.safe_load(TINY_PARAMS.read_text())


@pytest.fixture(scope="session")
def default_params() -> dict:
    return yaml.safe_load((project_root() / "params.yaml").read_text())


@pytest.fixture(scope="session")
def digits() -> Dataset:
    return load_digits_dataset()


def digits_stream(dataset: Dataset, name: str = "continual", seed: int = 0) -> Stream:
    protocol = ProtocolParams("shuffled", [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]], 4, 2)
    return Stream(dataset, make_manifest(seed, dataset.name, dataset.n_classes, protocol), name)


def perturb_classes(dataset: Dataset, classes: list[int], seed: int = 123) -> Dataset:
    """A copy of the dataset whose training images of `classes` are replaced by noise."""
    x = dataset.x_train.copy()
    rows = np.isin(dataset.y_train, classes)
    x[rows] = np.random.default_rng(seed).integers(0, 17, size=(rows.sum(), x.shape[1]), dtype=np.uint8)
    return Dataset(dataset.name, x, dataset.y_train, dataset.x_test, dataset.y_test, dataset.scale,
                   dataset.image_shape)


def with_overrides(params: dict, **dotted: object) -> dict:
    out = copy.deepcopy(params)
    for key, value in dotted.items():
        node = out
        parts = key.split("__")
        for part in parts[:-1]:
            node = node[part]
        node[parts[-1]] = value
    return out


@pytest.fixture(scope="session")
def tiny_baseline(tmp_path_factory) -> Path:
    """The tiny profile's whole DAG, run once per test session and committed; tests work on copies.
    Under pytest-xdist the workers share one: the first to ask builds it under a file lock, the others
    wait for it instead of building their own."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the folder every worker's basetemp lies in
    repo, built = root / "tiny-baseline", root / "tiny-baseline.built"
    with FileLock(root / "tiny-baseline.lock"):
        if not built.exists():
            shutil.rmtree(repo, ignore_errors=True)  # a build that failed in another worker
            make_tiny_copy(repo)
            result = run_tiny_pipeline(repo)
            assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
            env = git_env()
            for cmd in (["git", "add", "-A"], ["git", "commit", "-qm", "baseline run"]):
                subprocess.run(cmd, cwd=repo, env=env, check=True, capture_output=True)
            built.touch()
    return repo


def copy_of(repo: Path, dest: Path) -> Path:
    shutil.copytree(repo, dest, symlinks=True)
    return dest


# The module that builds the tiny baseline first, the unit tests while it builds, then the two long end-to-end
# modules last with test_clone.py between them. xdist runs a worker's last pending test only once it holds the
# next one, so the worker that takes the one-test server module at once takes the next module too: were that the
# README's, one worker would run both long modules while the other sat idle (measured: the baseline's worker idle
# from 394 s to 557 s). With test_clone.py (two tests, ~40 s) there, the README module is still queued when the
# baseline's worker frees up and goes there, and the server's worker takes the clone tests off that path.
END_TO_END_ORDER = {"test_pipeline.py": 0, "test_server.py": 2, "test_clone.py": 3, "test_readme.py": 4}  # rest: 1


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files in END_TO_END_ORDER's order, so that `make test`'s two workers (--dist loadfile) take one long
    end-to-end module each."""
    items.sort(key=lambda item: END_TO_END_ORDER.get(item.path.name, 1))
