"""Test 2 — few-shot learning of the novel classes U after the open-world stream.

Each learner is loaded in its post-stream state (it has seen the known classes K only). The protocol
then reveals U's shots; every episode starts again from the post-stream state.
- N-way k-shot episodes over U: shots from U's train split, queries from U's test split, sampled
  deterministically per (seed, k, episode). Every learner answers through its capability
  `fewshot_scores` on its own features: by default a new linear head (zero init, full-batch Adam) on
  frozen features; memory-based learners write the shots to a fresh memory and read it.
- Generalised: U's shots (k = generalised.shots) are added and queries from K's and U's test splits
  are classified among K ∪ U (`generalised_scores`): by default the learner's own K scores stay fixed
  and new rows for U are fit against them; memory-based learners write the shots into a copy of their
  memory. Accuracy is reported on K and on U queries separately, and their harmonic mean H (per seed).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm import tqdm

from dualmem.core.errors import ParamsError
from dualmem.core.params import Section
from dualmem.core.results import Row, TestResults
from dualmem.data.stream import Stream
from dualmem.learners import Learner
from dualmem.learners.common.base import check_unrevealed
from dualmem.learners.common.readouts import Episodes, HeadFit
from dualmem.runner import open_stream, post_stream_learner, stream_seeds

STREAM = "openworld"
SECTION = "evaluate_fewshot"
HEAD_CHUNK = 250  # episodes whose heads are trained together (independent params, batched Adam)
REFERENCE = {1: {"dualmem": "0.593", "finetune": "0.264"}}  # published snapshot, 4-way


@dataclass(frozen=True)
class FewshotParams:
    ways: int
    shots: list[int]
    queries: int
    episodes: int
    head_steps: int
    head_lr: float
    gen_episodes: int
    gen_shots: int
    gen_queries: int

    @classmethod
    def from_params(cls, params: dict) -> FewshotParams:
        s = Section.of(params, SECTION)
        head, gen = s.section("head"), s.section("generalised")
        n_novel = Section.of(params, "protocol.openworld").integer("n_novel", minimum=1)
        ways = s.integer("ways", minimum=2)
        if ways > n_novel:
            raise ParamsError(f"{SECTION}.ways", f"is {ways}, more than the {n_novel} novel "
                              "classes", "use ways <= protocol.openworld.n_novel")
        return cls(
            ways=ways, shots=s.int_list("shots", minimum=1),
            queries=s.integer("queries", minimum=1), episodes=s.integer("episodes", minimum=1),
            head_steps=head.integer("steps", minimum=1),
            head_lr=head.number("lr", minimum=1e-12),
            gen_episodes=gen.integer("episodes", minimum=1),
            gen_shots=gen.integer("shots", minimum=1),
            gen_queries=gen.integer("queries", minimum=1),
        )

    @property
    def fit(self) -> HeadFit:
        return HeadFit(self.head_steps, self.head_lr)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Episode:
    classes: tuple[int, ...]  # global labels; local label = position here
    support: np.ndarray  # pool ids of the shots
    support_y: np.ndarray  # local labels
    query: np.ndarray  # pool ids of the queries
    query_y: np.ndarray


class EpisodeSampler:
    """Draws shots and queries by id from one pool of items (labels y, split flag is_test)."""

    def __init__(self, y: np.ndarray, is_test: np.ndarray) -> None:
        self.train = {int(c): np.flatnonzero((y == c) & ~is_test) for c in np.unique(y)}
        self.test = {int(c): np.flatnonzero((y == c) & is_test) for c in np.unique(y)}

    def sample(self, shot_classes: list[int], query_classes: list[int], shots: int, queries: int,
               rng: np.random.Generator) -> Episode:
        classes = list(query_classes) + [c for c in shot_classes if c not in query_classes]
        support, support_y, query, query_y = [], [], [], []
        for label, c in enumerate(classes):
            if c in shot_classes:
                support.append(self._draw(self.train, c, shots, "shots", rng))
                support_y.append(np.full(shots, label))
            if c in query_classes:
                query.append(self._draw(self.test, c, queries, "queries", rng))
                query_y.append(np.full(queries, label))
        return Episode(tuple(classes), np.concatenate(support), np.concatenate(support_y),
                       np.concatenate(query), np.concatenate(query_y))

    @staticmethod
    def _draw(pool: dict[int, np.ndarray], c: int, n: int, key: str, rng: np.random.Generator
              ) -> np.ndarray:
        available = pool.get(c, np.empty(0, dtype=np.int64))
        if len(available) < n:
            raise ParamsError(f"{SECTION}.{key}", f"asks {n} items of class {c}, which has "
                              f"{len(available)} in its split", f"lower {SECTION}.{key}")
        return rng.choice(available, n, replace=False)

    def fewshot(self, novel: list[int], ways: int, shots: int, queries: int, seed: int,
                episode: int) -> Episode:
        rng = np.random.default_rng([seed, 2, shots, episode])
        classes = [int(c) for c in rng.choice(sorted(novel), ways, replace=False)]
        return self.sample(classes, classes, shots, queries, rng)


def as_episodes(feats: torch.Tensor, episodes: list[Episode]) -> Episodes:
    """Episodes of one shape as the learner's features (rows of `feats` are pool ids)."""
    def stack(rows: list[np.ndarray]) -> torch.Tensor:
        return torch.stack([torch.from_numpy(r) for r in rows])

    return Episodes(support=feats[stack([ep.support for ep in episodes])],
                    support_y=stack([ep.support_y for ep in episodes]),
                    query=feats[stack([ep.query for ep in episodes])],
                    classes=torch.tensor([ep.classes for ep in episodes]))


def episode_predictions(learner: Learner, feats: torch.Tensor, episodes: list[Episode], cfg: FewshotParams
                        ) -> list[np.ndarray]:
    """Predicted local labels of every episode's queries (N-way k-shot over U)."""
    out: list[np.ndarray] = []
    for start in range(0, len(episodes), HEAD_CHUNK):
        scores = learner.fewshot_scores(as_episodes(feats, episodes[start : start + HEAD_CHUNK]), cfg.fit)
        out += list(scores.argmax(2).numpy())
    return out


def generalised_predictions(learner: Learner, feats: torch.Tensor, episodes: list[Episode], known: list[int],
                            cfg: FewshotParams) -> list[np.ndarray]:
    """Predicted local labels (classes = K then U) after U's shots are added to the learner."""
    return list(learner.generalised_scores(as_episodes(feats, episodes), known, cfg.fit).argmax(2).numpy())


def ci95(values: np.ndarray) -> float:
    if len(values) < 2:
        return float("nan")
    return float(1.96 * values.std(ddof=1) / np.sqrt(len(values)))


def harmonic_mean(a: float, b: float) -> float:
    """H of the accuracies on K and on U (generalised few-shot's summary; 0 when either is 0)."""
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)


def evaluate_learner(learner: Learner, stream: Stream, cfg: FewshotParams, progress: bool = False
                     ) -> tuple[dict[str, float], dict[str, float]]:
    """Per-seed metrics (means over episodes) and their 95% CIs over episodes, for one learner."""
    novel, known = stream.held_out, stream.classes_up_to(stream.n_tasks - 1)
    check_unrevealed(learner, novel)
    xu_tr, yu_tr = stream.train_split(novel)
    xu_te, yu_te = stream.test_split(novel)
    xk_te, yk_te = stream.test_split(known)
    x = torch.cat([xu_tr, xu_te, xk_te])
    y = torch.cat([yu_tr, yu_te, yk_te]).numpy()
    is_test = np.arange(len(y)) >= len(yu_tr)
    feats = learner.features(x)  # the encoder batches
    sampler = EpisodeSampler(y, is_test)
    metrics, cis = {}, {}
    for k in tqdm(cfg.shots, desc=f"fewshot {learner.name}", disable=not progress, leave=False):
        eps = [sampler.fewshot(novel, cfg.ways, k, cfg.queries, stream.seed, e)
               for e in range(cfg.episodes)]
        preds = episode_predictions(learner, feats, eps, cfg)
        acc = np.array([(p == ep.query_y).mean() for p, ep in zip(preds, eps, strict=True)])
        metrics[f"acc_k{k}"], cis[f"acc_k{k}"] = float(acc.mean()), ci95(acc)
    eps = []
    for e in range(cfg.gen_episodes):
        rng = np.random.default_rng([stream.seed, 3, cfg.gen_shots, e])
        eps.append(sampler.sample(sorted(novel), known + sorted(novel), cfg.gen_shots,
                                  cfg.gen_queries, rng))
    preds = generalised_predictions(learner, feats, eps, known, cfg)
    for key, is_novel in (("gen_acc_known", False), ("gen_acc_novel", True)):
        acc = np.array([(p == ep.query_y)[(ep.query_y >= len(known)) == is_novel].mean()
                        for p, ep in zip(preds, eps, strict=True)])
        metrics[key], cis[key] = float(acc.mean()), ci95(acc)
    metrics["gen_h"] = harmonic_mean(metrics["gen_acc_known"], metrics["gen_acc_novel"])  # per seed, no CI
    check_unrevealed(learner, novel)  # the loaded learner itself was never changed
    return metrics, cis


def new_results(cfg: FewshotParams) -> TestResults:
    test = f"2 Few-shot ({cfg.ways}-way, novel classes)"
    rows = [Row(test, f"acc_k{k}", f"Accuracy k={k}", reference=REFERENCE.get(k, {}))
            for k in cfg.shots]
    gen = f"2 Few-shot generalised (K ∪ U, k={cfg.gen_shots})"
    rows += [Row(gen, "gen_acc_known", "Accuracy on K"), Row(gen, "gen_acc_novel", "Accuracy on U"),
             Row(gen, "gen_h", "Harmonic mean H of K and U")]
    protocol = (f"{cfg.ways}-way k-shot episodes over the held-out classes U ({cfg.episodes} per "
                f"seed and k, {cfg.queries} test queries per class); each learner's own few-shot rule: "
                f"head-based learners fit a new linear head on frozen features ({cfg.head_steps} Adam "
                f"steps), memory-based ones read the shots (dualmem: nearest prototype; knn_pixels: kNN with "
                f"k <= shots per class); generalised: K ∪ U after {cfg.gen_shots} shot(s) of U, "
                f"{cfg.gen_episodes} episodes, H = harmonic mean of the accuracies on K and U; head-based "
                f"learners fit new rows for U beside K's own rows (with kept items of K as negatives where "
                f"they keep any), memory-based ones one prototype per class or the shots added to their "
                f"memory")
    return TestResults(test="fewshot", protocol=protocol, rows=rows,
                       extra={"params": cfg.as_dict(), "ci95_over_episodes": {}})


@dataclass
class FewshotRun:
    learner: str
    seed: int
    metrics: dict[str, float]
    memory: dict[str, int]


def run_fewshot(params: dict, name: str, cfg: FewshotParams, progress: bool = False
                ) -> tuple[TestResults, list[FewshotRun]]:
    """The learner `name` on every open-world seed, from its post-stream state."""
    results, runs = new_results(cfg), []
    for seed in tqdm(stream_seeds(params, STREAM), desc=f"fewshot {name}", disable=not progress):
        stream = open_stream(params, STREAM, seed)
        learner, memory = post_stream_learner(params, name, stream)
        metrics, cis = evaluate_learner(learner, stream, cfg, progress)
        for metric, value in metrics.items():
            results.add(metric, name, seed, value)
        for metric, ci in cis.items():
            results.extra["ci95_over_episodes"].setdefault(metric, {}).setdefault(name, {})[str(seed)] = ci
        results.memory.setdefault(name, memory)
        runs.append(FewshotRun(name, seed, metrics, memory))
    return results, runs
