"""Test 3 — novelty detection after the open-world stream.

Familiar items are the test samples of the known classes K; "novel" items (the POSITIVE class) are
the test samples of the held-out classes U, and, as far out-of-distribution sets, Fashion-MNIST test
images (when prepared), Gaussian and uniform pixel noise. Every score is "higher = more novel":
- gradient learners: 1 - max softmax probability of `predict_proba` (MSP);
- dualmem: 1 - cosine similarity of the k-th nearest item in its episodic memory (kNN distance on
  normalised features);
- dualmem+msp (a combination column, novelty results only): the mean of the two dualmem scores (kNN
  distance and its own 1 - max readout probability) after rank-normalising each over the pooled
  items of the comparison (familiar + that novel set) — label-free and scale-free.
Metrics: AUROC and FPR at `tpr` (default 95%) true-positive rate, see `dualmem.detection_metrics`.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.stats import rankdata
from tqdm import tqdm

from dualmem.data.prepared import as_float, load_auxiliary
from dualmem.data.sources import Dataset
from dualmem.data.stream import Stream
from dualmem.detection_metrics import detection_metrics, mean_roc, roc_points
from dualmem.errors import ParamsError
from dualmem.learners import Learner
from dualmem.learners.base import check_unrevealed
from dualmem.learners.dualmem import DualMemoryLearner
from dualmem.params import Section
from dualmem.results import Row, TestResults
from dualmem.runner import open_stream, post_stream_learners, stream_seeds
from dualmem.seeding import seeded_generator

STREAM = "openworld"
SECTION = "evaluate_novelty"
COMBINED = "+msp"  # suffix of the dualmem combination column
CONVENTION = ("positive class = novel; higher score = more novel; AUROC = P(score(novel) > "
              "score(familiar)); FPR@TPR = share of familiar items scored >= the threshold that "
              "flags the given share of novel items")
FAR_LABELS = {"fashion": "Fashion-MNIST", "gaussian": "Gaussian noise", "uniform": "uniform noise"}


@dataclass(frozen=True)
class NoveltyParams:
    knn_k: int
    tpr: float
    roc_points: int
    fashion_mnist: bool
    fashion_n: int | None
    gaussian_n: int
    gaussian_mean: float
    gaussian_std: float
    uniform_n: int

    @classmethod
    def from_params(cls, params: dict) -> NoveltyParams:
        s = Section.of(params, SECTION)
        far = s.section("far_ood")
        tpr = s.number("tpr", minimum=0.0, maximum=1.0)
        if tpr == 0.0:
            raise ParamsError(f"{SECTION}.tpr", "must be > 0", "use e.g. 0.95")
        return cls(
            knn_k=s.integer("knn_k", minimum=1), tpr=tpr,
            roc_points=s.integer("roc_points", minimum=2),
            fashion_mnist=far.boolean("fashion_mnist"),
            fashion_n=far.optional_integer("fashion_n", 1),
            gaussian_n=far.integer("gaussian_n", minimum=1),
            gaussian_mean=far.number("gaussian_mean", minimum=0.0, maximum=1.0),
            gaussian_std=far.number("gaussian_std", minimum=0.0),
            uniform_n=far.integer("uniform_n", minimum=1),
        )

    @property
    def fpr_name(self) -> str:
        return f"fpr{round(self.tpr * 100)}"

    def as_dict(self) -> dict:
        return asdict(self)


def far_ood_sets(stream: Stream, cfg: NoveltyParams,
                 load_aux: Callable[[str], Dataset | None] = load_auxiliary
                 ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The far-OOD inputs of a seed (deterministic per seed), and why any set was skipped."""
    n_features, seed = stream.dataset.n_features, stream.seed
    sets, skipped = {}, {}
    if cfg.fashion_mnist:
        aux = load_aux("fashion_mnist")
        if aux is None:
            skipped["fashion"] = "Fashion-MNIST was not prepared (source not installed)"
        elif aux.name == stream.dataset.name:
            skipped["fashion"] = "the main dataset is Fashion-MNIST itself"
        elif aux.n_features != n_features:
            skipped["fashion"] = f"prepared with {aux.n_features} features, not {n_features}"
        else:
            x = as_float(aux.x_test, aux.scale)
            if cfg.fashion_n is not None and cfg.fashion_n < len(x):
                rng = np.random.default_rng([seed, 5])
                rows = np.sort(rng.choice(len(x), cfg.fashion_n, replace=False))
                x = x[torch.from_numpy(rows)]
            sets["fashion"] = x
    else:
        skipped["fashion"] = f"{SECTION}.far_ood.fashion_mnist is false"
    gauss = torch.randn(cfg.gaussian_n, n_features, generator=seeded_generator("gaussian", seed))
    sets["gaussian"] = (gauss * cfg.gaussian_std + cfg.gaussian_mean).clamp(0.0, 1.0)
    sets["uniform"] = torch.rand(cfg.uniform_n, n_features,
                                 generator=seeded_generator("uniform", seed))
    return sets, skipped


@torch.no_grad()
def novelty_scores(learner: Learner, x: torch.Tensor, cfg: NoveltyParams, batch_size: int = 4096
                   ) -> dict[str, np.ndarray]:
    """Raw scores (higher = more novel): "msp" for every learner, "knn" for the dual memory."""
    probs = learner.batched_proba(x, batch_size)
    scores = {"msp": (1.0 - probs.max(1).values).numpy()}
    if isinstance(learner, DualMemoryLearner):
        feats = learner.features(x)  # the encoder batches
        k = min(cfg.knn_k, len(learner.episodic))
        scores["knn"] = (1.0 - learner.episodic.read(feats, k=k).kth_similarity).numpy()
    return scores


def rank_mean(familiar: list[np.ndarray], novel: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Mean of several scores after rank-normalising each over the pooled familiar + novel items."""
    n = len(familiar[0])
    ranks = [rankdata(np.concatenate([f, u])) / (n + len(u)) for f, u in zip(familiar, novel,
                                                                         strict=True)]
    mean = np.mean(ranks, axis=0)
    return mean[:n], mean[n:]


def columns(learner: Learner, familiar: dict[str, np.ndarray], novel: dict[str, np.ndarray]
            ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(familiar, novel) scores of the learner's report columns for one comparison."""
    if "knn" not in familiar:
        return {learner.name: (familiar["msp"], novel["msp"])}
    combined = rank_mean([familiar["knn"], familiar["msp"]], [novel["knn"], novel["msp"]])
    return {learner.name: (familiar["knn"], novel["knn"]), learner.name + COMBINED: combined}


def evaluate_learner(learner: Learner, stream: Stream, cfg: NoveltyParams,
                     far_sets: dict[str, torch.Tensor]
                     ) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, dict]]]:
    """Metrics and ROC points per report column: {column: {metric: value}}, {column: {set: roc}}."""
    novel, known = stream.held_out, stream.classes_up_to(stream.n_tasks - 1)
    check_unrevealed(learner, novel)
    familiar = novelty_scores(learner, stream.test_split(known)[0], cfg)
    metrics: dict[str, dict[str, float]] = {}
    curves: dict[str, dict[str, dict]] = {}
    for name, x in {"novel": stream.test_split(novel)[0], **far_sets}.items():
        scores = novelty_scores(learner, x, cfg)
        for column, (fam, nov) in columns(learner, familiar, scores).items():
            found = detection_metrics(fam, nov, cfg.tpr)
            metrics.setdefault(column, {})[f"auroc_{name}"] = found["auroc"]
            metrics[column][f"{cfg.fpr_name}_{name}"] = found["fpr_at_tpr"]
            y = np.concatenate([np.zeros(len(fam)), np.ones(len(nov))])
            curves.setdefault(column, {})[name] = roc_points(y, np.concatenate([fam, nov]),
                                                             cfg.roc_points)
    check_unrevealed(learner, novel)
    return metrics, curves


def result_rows(cfg: NoveltyParams, far: list[str]) -> list[Row]:
    pct, test = round(cfg.tpr * 100), "3 Novelty detection (K vs U)"
    rows = [Row(test, "auroc_novel", "AUROC", reference={"dualmem": "0.898", "finetune": "0.793"}),
            Row(test, f"{cfg.fpr_name}_novel", f"FPR@{pct}%TPR", higher_is_better=False)]
    for name in far:
        far_test = "3 Novelty detection (K vs far OOD)"
        rows += [Row(far_test, f"auroc_{name}", f"AUROC vs {FAR_LABELS[name]}"),
                 Row(far_test, f"{cfg.fpr_name}_{name}", f"FPR@{pct}%TPR vs {FAR_LABELS[name]}",
                     higher_is_better=False, in_table=False)]
    return rows


@dataclass
class NoveltyRun:
    learner: str  # report column (a learner, or the dualmem+msp combination)
    seed: int
    metrics: dict[str, float]


def run_novelty(params: dict, cfg: NoveltyParams, progress: bool = False
                ) -> tuple[TestResults, list[NoveltyRun]]:
    """Every learner of run.learners on every open-world seed, from its post-stream state."""
    seeds = stream_seeds(params, STREAM)
    protocol = (f"familiar = test items of K, novel (positive) = test items of U; far OOD: "
                f"Fashion-MNIST, Gaussian, uniform noise; scores: 1 - max softmax (gradient), "
                f"k={cfg.knn_k}-th NN cosine distance in episodic memory (dualmem), rank-mean of "
                f"both (dualmem+msp)")
    results = TestResults(test="novelty", protocol=protocol,
                          extra={"convention": CONVENTION, "params": cfg.as_dict(), "roc": {}})
    runs: list[NoveltyRun] = []
    skipped: dict[str, str] = {}
    for seed in tqdm(seeds, desc="novelty seeds", disable=not progress):
        stream = open_stream(params, STREAM, seed)
        far_sets, skipped = far_ood_sets(stream, cfg)
        for _, learner, memory in post_stream_learners(params, stream):
            metrics, curves = evaluate_learner(learner, stream, cfg, far_sets)
            for column, values in metrics.items():
                for metric, value in values.items():
                    results.add(metric, column, seed, value)
                for set_name, roc in curves[column].items():
                    results.extra["roc"].setdefault(set_name, {}).setdefault(column, {})[
                        str(seed)] = roc
                results.memory.setdefault(column, memory)
                runs.append(NoveltyRun(column, seed, values))
    results.extra["skipped"] = skipped
    results.rows = result_rows(cfg, [n for n in FAR_LABELS if n not in skipped])
    return results, runs


def write_roc_csvs(results: TestResults, out_dir: Path) -> list[Path]:
    """One CSV per comparison (roc_<set>.csv): fpr and each column's TPR averaged over seeds."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for set_name, by_column in results.extra["roc"].items():
        mean = {column: mean_roc(list(by_seed.values())) for column, by_seed in by_column.items()}
        fpr = next(iter(mean.values()))["fpr"]
        path = out_dir / f"roc_{set_name}.csv"
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["fpr", *mean])
            for i, value in enumerate(fpr):
                writer.writerow([value, *(curve["tpr"][i] for curve in mean.values())])
        written.append(path)
    return written
