"""Test 3 — novelty detection after the open-world stream.

Familiar items are the test samples of the known classes K; "novel" items (the POSITIVE class) are
the test samples of the held-out classes U, and, as far out-of-distribution sets, Fashion-MNIST test
images (when prepared), Gaussian and uniform pixel noise. Every score is "higher = more novel" and
comes from the learner's capability `novelty_from_features`, item by item (no statistic of any test
set enters a score):
- by default 1 - max softmax probability (MSP);
- memory-based learners: 1 - cosine similarity of the k-th nearest stored item (kNN distance).
Metrics: AUROC and FPR at `tpr` (default 95%) true-positive rate, see `dualmem.detection_metrics`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm import tqdm

from dualmem.core.errors import ParamsError
from dualmem.core.params import Section
from dualmem.core.results import Row, TestResults
from dualmem.core.seeding import seeded_generator
from dualmem.data.prepared import as_float, load_auxiliary
from dualmem.data.sources import Dataset
from dualmem.data.stream import Stream
from dualmem.detection_metrics import detection_metrics, roc_points
from dualmem.learners import Learner
from dualmem.learners.common.base import check_unrevealed
from dualmem.runner import open_stream, post_stream_learner, stream_seeds

STREAM = "openworld"
SECTION = "evaluate_novelty"
CONVENTION = ("positive class = novel; higher score = more novel; AUROC = P(score(novel) > "
              "score(familiar)); FPR@TPR = share of familiar items scored >= the threshold that "
              "flags the given share of novel items")
FAR_LABELS = {"fashion": "Fashion-MNIST", "gaussian": "Gaussian noise", "uniform": "uniform noise"}


@dataclass(frozen=True)
class NoveltyParams:
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
            tpr=tpr,
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
def novelty_scores(learner: Learner, x: torch.Tensor, batch_size: int = 4096) -> np.ndarray:
    """The learner's novelty score of every item (higher = more novel), in batches."""
    chunks = [learner.novelty_from_features(learner.features(x[i : i + batch_size]))
              for i in range(0, len(x), batch_size)]
    return torch.cat(chunks).numpy()


def evaluate_learner(learner: Learner, stream: Stream, cfg: NoveltyParams, far_sets: dict[str, torch.Tensor]
                     ) -> tuple[dict[str, float], dict[str, dict]]:
    """Metrics {metric: value} and ROC points {set: roc} of one post-stream learner on one seed."""
    novel, known = stream.held_out, stream.classes_up_to(stream.n_tasks - 1)
    check_unrevealed(learner, novel)
    familiar = novelty_scores(learner, stream.test_split(known)[0])
    metrics: dict[str, float] = {}
    curves: dict[str, dict] = {}
    for name, x in {"novel": stream.test_split(novel)[0], **far_sets}.items():
        scores = novelty_scores(learner, x)
        found = detection_metrics(familiar, scores, cfg.tpr)
        metrics[f"auroc_{name}"] = found["auroc"]
        metrics[f"{cfg.fpr_name}_{name}"] = found["fpr_at_tpr"]
        y = np.concatenate([np.zeros(len(familiar)), np.ones(len(scores))])
        curves[name] = roc_points(y, np.concatenate([familiar, scores]), cfg.roc_points)
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
    learner: str
    seed: int
    metrics: dict[str, float]


def run_novelty(params: dict, name: str, cfg: NoveltyParams, progress: bool = False
                ) -> tuple[TestResults, list[NoveltyRun]]:
    """The learner `name` on every open-world seed, from its post-stream state."""
    protocol = ("familiar = test items of K, novel (positive) = test items of U; far OOD: Fashion-MNIST, "
                "Gaussian, uniform noise; each learner's own novelty score: 1 - max softmax (head-based), "
                "cosine distance to the k-th nearest stored item (memory-based)")
    results = TestResults(test="novelty", protocol=protocol,
                          extra={"convention": CONVENTION, "params": cfg.as_dict(), "roc": {}})
    runs: list[NoveltyRun] = []
    skipped: dict[str, str] = {}
    for seed in tqdm(stream_seeds(params, STREAM), desc=f"novelty {name}", disable=not progress):
        stream = open_stream(params, STREAM, seed)
        far_sets, skipped = far_ood_sets(stream, cfg)
        learner, memory = post_stream_learner(params, name, stream)
        metrics, curves = evaluate_learner(learner, stream, cfg, far_sets)
        for metric, value in metrics.items():
            results.add(metric, name, seed, value)
        for set_name, roc in curves.items():
            results.extra["roc"].setdefault(set_name, {}).setdefault(name, {})[str(seed)] = roc
        results.memory.setdefault(name, memory)
        runs.append(NoveltyRun(name, seed, metrics))
    results.extra["skipped"] = skipped
    results.rows = result_rows(cfg, [n for n in FAR_LABELS if n not in skipped])
    return results, runs
