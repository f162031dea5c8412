"""The task stream: reveals one task's training data at a time, in a fixed order shared by learners.

Batch order depends only on (seed, stream, task, epoch), so every learner sees the same data in the
same order. Test data of any task is available for evaluation; training data only through `Task`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from dualmem.data.prepared import CodedImages
from dualmem.data.sources import Dataset
from dualmem.data.splits import STREAM_IDS, Manifest


@dataclass(frozen=True)
class Task:
    """One task of a stream: its classes and training data (inputs, labels, ids into train set)."""

    stream: str
    index: int
    classes: tuple[int, ...]
    x: torch.Tensor
    y: torch.Tensor
    ids: np.ndarray
    seed: int

    def __len__(self) -> int:
        return len(self.y)

    def order(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, STREAM_IDS[self.stream], self.index, epoch])
        return rng.permutation(len(self.y))

    def batches(self, batch_size: int, epoch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor, np.ndarray]]:
        order = self.order(epoch)
        for start in range(0, len(order), batch_size):
            rows = torch.from_numpy(order[start : start + batch_size])
            yield self.x[rows], self.y[rows], self.ids[rows.numpy()]


class Stream:
    """The tasks of one stream (from a seed's manifest) over a prepared dataset."""

    def __init__(self, dataset: Dataset, manifest: Manifest, name: str) -> None:
        self.dataset = dataset
        self.manifest = manifest
        self.name = name
        self.spec = manifest.stream(name)
        self.seed = manifest.seed
        self.x_train = CodedImages(dataset.x_train, dataset.scale)  # rows become float32 when indexed
        self.y_train = torch.from_numpy(dataset.y_train)
        self.x_test = CodedImages(dataset.x_test, dataset.scale)
        self.y_test = torch.from_numpy(dataset.y_test)

    @property
    def n_tasks(self) -> int:
        return len(self.spec.tasks)

    @property
    def n_classes(self) -> int:
        return self.manifest.n_classes

    @property
    def held_out(self) -> list[int]:
        return list(self.spec.held_out)

    def task_classes(self, index: int) -> tuple[int, ...]:
        return tuple(self.spec.tasks[index])

    def classes_up_to(self, index: int) -> list[int]:
        return [c for t in self.spec.tasks[: index + 1] for c in t]

    def task(self, index: int) -> Task:
        classes = self.task_classes(index)
        ids = np.flatnonzero(np.isin(self.dataset.y_train, classes))
        rows = torch.from_numpy(ids)
        return Task(self.name, index, classes, self.x_train[rows], self.y_train[rows], ids, self.seed)

    def tasks(self) -> Iterator[Task]:
        for index in range(self.n_tasks):
            yield self.task(index)

    def test_split(self, classes: list[int] | tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.from_numpy(np.flatnonzero(np.isin(self.dataset.y_test, list(classes))))
        return self.x_test[rows], self.y_test[rows]

    def train_split(self, classes: list[int] | tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """Training data of classes outside the stream (held-out classes), for post-stream tests."""
        if set(classes) & set(self.spec.classes):
            raise ValueError("train_split is for held-out classes; stream classes come through task()")
        rows = torch.from_numpy(np.flatnonzero(np.isin(self.dataset.y_train, list(classes))))
        return self.x_train[rows], self.y_train[rows]
