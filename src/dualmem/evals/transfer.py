"""Test 4 — feature transfer: a linear probe on frozen features after the stream.

For each seed, every learner's post-stream representation (`learner.features`; for the dual memory
its frozen encoder) and a randomly initialised encoder of the same architecture (the `random`
column) are probed on targets the learners never saw:
- `novel`: the held-out classes U of the openworld stream (U's train split -> U's test split);
- `fashion`: Fashion-MNIST train -> test, when it was prepared alongside the main data.
The probe is a standardised (scaler fit on the probe's train split only) multinomial logistic
regression with a fixed budget (max_iter, C, a cap on train and test items per target). Items are
subsampled deterministically per seed. Nothing is written to any learner: features are read only.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from tqdm import tqdm

from dualmem.core.params import Section
from dualmem.core.results import Row, TestResults
from dualmem.core.seeding import derive_seed
from dualmem.data.prepared import CodedImages, Images, load_auxiliary
from dualmem.data.sources import Dataset
from dualmem.data.stream import Stream
from dualmem.encoders import EncoderParams, new_encoder
from dualmem.runner import open_stream, post_stream_learner, stream_seeds

STREAM = "openworld"
RANDOM = "random"
TEST_NAME = "4 Feature transfer (linear probe)"
FeatureFn = Callable[[torch.Tensor], torch.Tensor]
Labels = torch.Tensor | np.ndarray


@dataclass(frozen=True)
class TransferParams:
    max_iter: int
    C: float
    max_train: int  # cap on probe training items per target
    max_test: int  # cap on probe test items per target
    fashion: bool  # probe Fashion-MNIST when it was prepared
    batch_size: int  # feature extraction batch

    @classmethod
    def from_params(cls, params: dict) -> TransferParams:
        s = Section.of(params, "evaluate_transfer")
        return cls(
            max_iter=s.integer("max_iter", minimum=1),
            C=s.number("C", minimum=1e-12),
            max_train=s.integer("max_train", minimum=2),
            max_test=s.integer("max_test", minimum=1),
            fashion=s.boolean("fashion"),
            batch_size=s.integer("batch_size", minimum=1),
        )

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Target:
    """One probe task: train and test inputs with labels (subsampled)."""

    name: str
    x_train: torch.Tensor
    y_train: np.ndarray
    x_test: torch.Tensor
    y_test: np.ndarray


def subsample(n: int, cap: int, seed: int, *parts: object) -> np.ndarray:
    """Up to `cap` of n row indices, sorted; deterministic in (seed, parts)."""
    if n <= cap:
        return np.arange(n)
    rng = np.random.default_rng(derive_seed("subsample", seed, *parts))
    return np.sort(rng.choice(n, size=cap, replace=False))


def make_target(name: str, train: tuple[Images, Labels], test: tuple[Images, Labels],
                cfg: TransferParams, seed: int) -> Target:
    """The probe task `name`, subsampled to the caps, deterministically per seed."""
    y_train, y_test = np.asarray(train[1]), np.asarray(test[1])
    tr = subsample(len(y_train), cfg.max_train, seed, "transfer", name, "train")
    te = subsample(len(y_test), cfg.max_test, seed, "transfer", name, "test")
    return Target(name, train[0][torch.from_numpy(tr)], y_train[tr],
                  test[0][torch.from_numpy(te)], y_test[te])


def make_code_target(name: str, data: Dataset, cfg: TransferParams, seed: int) -> Target:
    """`make_target` on a prepared dataset's uint8 codes: only the subsampled rows become floats."""
    return make_target(name, (CodedImages(data.x_train, data.scale), data.y_train),
                       (CodedImages(data.x_test, data.scale), data.y_test), cfg, seed)


def probe_accuracy(f_train: np.ndarray, y_train: np.ndarray, f_test: np.ndarray, y_test: np.ndarray,
                   cfg: TransferParams) -> float:
    """Test accuracy of a standardised logistic-regression probe fit on (f_train, y_train)."""
    scaler = StandardScaler().fit(f_train)
    probe = LogisticRegression(max_iter=cfg.max_iter, C=cfg.C)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the iteration budget is the protocol
        probe.fit(scaler.transform(f_train), y_train)
    return float((probe.predict(scaler.transform(f_test)) == y_test).mean())


def extract(features: FeatureFn, x: torch.Tensor, batch_size: int) -> np.ndarray:
    with torch.no_grad():
        chunks = [features(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    return torch.cat(chunks).numpy()


def probe_columns(columns: dict[str, FeatureFn], targets: list[Target], cfg: TransferParams,
                  progress: bool = False) -> dict[str, dict[str, float]]:
    """Probe accuracy per target and column: {target: {column: accuracy}}."""
    out: dict[str, dict[str, float]] = {}
    jobs = [(t, c) for t in targets for c in columns]
    for target, column in tqdm(jobs, desc="probe", disable=not progress, leave=False):
        f_tr = extract(columns[column], target.x_train, cfg.batch_size)
        f_te = extract(columns[column], target.x_test, cfg.batch_size)
        acc = probe_accuracy(f_tr, target.y_train, f_te, target.y_test, cfg)
        out.setdefault(target.name, {})[column] = acc
    return out


def random_encoder_features(n_in: int, hidden: list[int], seed: int) -> FeatureFn:
    """The `random` column: an untrained encoder of the learners' architecture, seeded per seed."""
    return new_encoder(n_in, hidden, "transfer-random", seed).eval().encode


def stream_targets(stream: Stream, cfg: TransferParams, notes: list[str]) -> list[Target]:
    novel = stream.held_out
    x_tr, y_tr = stream.train_split(novel)
    x_te, y_te = stream.test_split(novel)
    targets = [make_target("novel", (x_tr, y_tr), (x_te, y_te), cfg, stream.seed)]
    if not cfg.fashion:
        return targets
    aux = load_auxiliary("fashion_mnist")
    if aux is None:
        note = "fashion: skipped, Fashion-MNIST was not prepared (its source was not installed)"
    elif stream.dataset.name == aux.name:
        note = "fashion: skipped, Fashion-MNIST is the main dataset (not a transfer target)"
    elif aux.n_features != stream.dataset.n_features:
        note = (f"fashion: skipped, {aux.n_features} features != "
                f"main data's {stream.dataset.n_features}")
    else:
        targets.append(make_code_target("fashion", aux, cfg, stream.seed))
        return targets
    if note not in notes:
        notes.append(note)
    return targets


def rows(targets: list[str]) -> list[Row]:
    labels = {"novel": "Probe accuracy, novel classes", "fashion": "Probe accuracy, Fashion-MNIST"}
    return [Row(test=TEST_NAME, metric=f"probe_{t}", label=labels[t], reference={})
            for t in targets]


def transfer_on_seed(params: dict, name: str, cfg: TransferParams, seed: int, hidden: list[int],
                     notes: list[str], progress: bool = False,
                     ) -> tuple[dict[str, dict[str, float]], dict[str, int] | None]:
    """({target: {name: probe accuracy}}, memory cost or None for RANDOM) on one open-world seed. The
    seed's images, targets and learner are freed when it returns, before the next seed's are built."""
    stream = open_stream(params, STREAM, seed)
    cost = None
    if name == RANDOM:
        features = random_encoder_features(stream.dataset.n_features, hidden, seed)
    else:
        learner, cost = post_stream_learner(params, name, stream)
        features = learner.features
    targets = stream_targets(stream, cfg, notes)
    return probe_columns({name: features}, targets, cfg, progress), cost


def run_transfer(params: dict, name: str, cfg: TransferParams, progress: bool = False) -> TestResults:
    """The probe on the features of learner `name` (post-stream state), or of an untrained encoder of
    the same architecture when `name` is RANDOM (the reference column), on every open-world seed."""
    hidden = EncoderParams.from_params(params).hidden
    results = TestResults(
        test="transfer",
        protocol=(f"Linear probe (standardised logistic regression, C={cfg.C}, "
                  f"max_iter={cfg.max_iter}, <= {cfg.max_train} train / {cfg.max_test} test items) "
                  "on frozen post-stream features; novel = held-out classes U; "
                  "random = untrained encoder, same architecture."),
    )
    notes: list[str] = []
    seen_targets: list[str] = []
    for seed in tqdm(stream_seeds(params, STREAM), desc=f"transfer {name}", disable=not progress):
        accuracy, cost = transfer_on_seed(params, name, cfg, seed, hidden, notes, progress)
        if cost is not None:
            results.memory.setdefault(name, cost)
        for target, by_column in accuracy.items():
            if target not in seen_targets:
                seen_targets.append(target)
            results.add(f"probe_{target}", name, seed, by_column[name])
    results.rows = rows(seen_targets)
    results.extra = {"targets": seen_targets, "notes": notes, "params": cfg.as_dict()}
    return results


def child_runs(results: TestResults) -> list[tuple[str, int, dict[str, float]]]:
    """(column, seed, {probe_<target>: accuracy}) for each tracked child run."""
    runs: dict[tuple[str, int], dict[str, float]] = {}
    for metric, by_column in results.values.items():
        for column, by_seed in by_column.items():
            for seed, value in by_seed.items():
                runs.setdefault((column, int(seed)), {})[metric] = value
    return [(column, seed, metrics) for (column, seed), metrics in runs.items()]
