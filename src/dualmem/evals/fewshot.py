"""Test 2 — few-shot learning of the novel classes U after the open-world stream.

Each learner is loaded in its post-stream state (it has seen the known classes K only). The protocol
then reveals U's shots; every episode starts again from the post-stream state.
- N-way k-shot episodes over U: shots from U's train split, queries from U's test split, sampled
  deterministically per (seed, k, episode). Gradient learners fit a new linear head (zero init,
  full-batch Adam) on their frozen features; the dual memory writes the shots' features to a fresh
  episodic memory (the learner's k and temperature) and answers with its readout's argmax.
- Generalised: U's shots (k = generalised.shots) are added and queries from K's and U's test splits
  are classified among K ∪ U. Gradient learners keep their old head rows for K and fit new rows
  for U only; the dual memory writes the shots into a copy of its episodic memory and reads out
  (gated full readout or episodic only). Accuracy is reported on K and on U queries separately.
"""

from __future__ import annotations

import copy
import csv
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from dualmem.data.stream import Stream
from dualmem.errors import ParamsError
from dualmem.learners import Learner
from dualmem.learners.base import check_unrevealed
from dualmem.learners.dualmem import DualMemoryLearner
from dualmem.learners.gradient import GradientLearner
from dualmem.memory.episodic import EpisodicMemory
from dualmem.params import Section
from dualmem.results import Row, TestResults
from dualmem.runner import open_stream, post_stream_learners, stream_seeds

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
    finetune_encoder: bool
    gen_episodes: int
    gen_shots: int
    gen_queries: int
    gen_readout: str

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
            finetune_encoder=head.boolean("finetune_encoder", default=False),
            gen_episodes=gen.integer("episodes", minimum=1),
            gen_shots=gen.integer("shots", minimum=1),
            gen_queries=gen.integer("queries", minimum=1),
            gen_readout=gen.choice("dualmem_readout", ["full", "episodic"]),
        )

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


def fit_heads(xs: torch.Tensor, ys: torch.Tensor, n_out: int, steps: int, lr: float,
              fixed: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Independent linear heads per episode (xs: E x S x d), zero init, full-batch Adam on the mean
    cross-entropy; `fixed` (E x S x m) are logits of frozen rows put before the trained ones."""
    n_ep, n_shots, dim = xs.shape
    weight = torch.zeros(n_ep, dim, n_out, requires_grad=True)
    bias = torch.zeros(n_ep, 1, n_out, requires_grad=True)
    optimiser = torch.optim.Adam([weight, bias], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            logits = torch.baddbmm(bias, xs, weight)
            if fixed is not None:
                logits = torch.cat([fixed, logits], dim=2)
            loss = F.cross_entropy(logits.reshape(n_ep * n_shots, -1), ys.reshape(-1),
                                   reduction="sum") / n_shots
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return weight.detach(), bias.detach()


def finetune_episode(learner: GradientLearner, x: torch.Tensor, ep: Episode, cfg: FewshotParams
                     ) -> np.ndarray:
    """`finetune_encoder: true`: a copy of the encoder and a new head trained on the raw shots."""
    encoder = copy.deepcopy(learner.encoder).train()
    head = nn.Linear(encoder.out_dim, len(ep.classes))
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    optimiser = torch.optim.Adam([*encoder.parameters(), *head.parameters()], lr=cfg.head_lr)
    xs, ys = x[torch.from_numpy(ep.support)], torch.from_numpy(ep.support_y)
    with torch.enable_grad():
        for _ in range(cfg.head_steps):
            loss = F.cross_entropy(head(encoder(xs)), ys)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    with torch.no_grad():
        return head(encoder.encode(x[torch.from_numpy(ep.query)])).argmax(1).numpy()


def episode_predictions(learner: Learner, feats: torch.Tensor, x: torch.Tensor,
                        episodes: list[Episode], cfg: FewshotParams) -> list[np.ndarray]:
    """Predicted local labels of every episode's queries (N-way k-shot over U)."""
    if isinstance(learner, DualMemoryLearner):
        out = []
        for ep in episodes:
            memory = EpisodicMemory(feats.shape[1], len(ep.classes), k=min(learner.episodic.k,
                                    len(ep.support)), temperature=learner.episodic.temperature)
            memory.write(feats[torch.from_numpy(ep.support)], torch.from_numpy(ep.support_y))
            out.append(memory.read(feats[torch.from_numpy(ep.query)]).probs.argmax(1).numpy())
        return out
    if not isinstance(learner, GradientLearner):
        raise TypeError(f"no few-shot rule for learner {learner.name}")
    if cfg.finetune_encoder:
        return [finetune_episode(learner, x, ep, cfg) for ep in episodes]
    out = []
    for start in range(0, len(episodes), HEAD_CHUNK):
        chunk = episodes[start : start + HEAD_CHUNK]
        xs = torch.stack([feats[torch.from_numpy(ep.support)] for ep in chunk])
        ys = torch.stack([torch.from_numpy(ep.support_y) for ep in chunk])
        weight, bias = fit_heads(xs, ys, len(chunk[0].classes), cfg.head_steps, cfg.head_lr)
        xq = torch.stack([feats[torch.from_numpy(ep.query)] for ep in chunk])
        out += list(torch.baddbmm(bias, xq, weight).argmax(2).numpy())
    return out


def generalised_predictions(learner: Learner, feats: torch.Tensor, episodes: list[Episode],
                            known: list[int], cfg: FewshotParams) -> dict[str, list[np.ndarray]]:
    """Predicted local labels (classes = K then U) after U's shots are added to the learner, under
    the key "" (the headline rule); the dual memory adds both readouts as "_episodic"/"_full"."""
    k_idx = torch.tensor(known)
    if isinstance(learner, DualMemoryLearner):
        base, out = learner.episodic, {"_episodic": [], "_full": []}
        semantic = learner.semantic.probs(feats) if learner.semantic.known.any() else None
        for ep in episodes:
            # a shallow copy shares the stored tensors: write() concatenates into new ones and
            # never edits them in place, so the loaded learner's memory stays as it was
            memory = copy.copy(base)
            memory.write(feats[torch.from_numpy(ep.support)],
                         torch.tensor([ep.classes[i] for i in ep.support_y]))
            rows = torch.from_numpy(ep.query)
            readout = memory.read(feats[rows])
            full = readout.probs
            if semantic is not None:
                gate = learner.gate(readout.familiarity).unsqueeze(1)
                full = gate * readout.probs + (1 - gate) * semantic[rows]
            for key, probs in (("_episodic", readout.probs), ("_full", full)):
                out[key].append(probs[:, list(ep.classes)].argmax(1).numpy())
        return {"": out[f"_{cfg.gen_readout}"], **out}
    if not isinstance(learner, GradientLearner):
        raise TypeError(f"no generalised few-shot rule for learner {learner.name}")
    with torch.no_grad():
        old = learner.head(feats)[:, k_idx]
    xs = torch.stack([feats[torch.from_numpy(ep.support)] for ep in episodes])
    ys = torch.stack([torch.from_numpy(ep.support_y) for ep in episodes])
    fixed = torch.stack([old[torch.from_numpy(ep.support)] for ep in episodes])
    n_new = len(episodes[0].classes) - len(known)
    weight, bias = fit_heads(xs, ys, n_new, cfg.head_steps, cfg.head_lr, fixed)
    out = []
    for i, ep in enumerate(episodes):
        rows = torch.from_numpy(ep.query)
        logits = torch.cat([old[rows], feats[rows] @ weight[i] + bias[i]], dim=1)
        out.append(logits.argmax(1).numpy())
    return {"": out}


def ci95(values: np.ndarray) -> float:
    if len(values) < 2:
        return float("nan")
    return float(1.96 * values.std(ddof=1) / np.sqrt(len(values)))


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
        preds = episode_predictions(learner, feats, x, eps, cfg)
        acc = np.array([(p == ep.query_y).mean() for p, ep in zip(preds, eps, strict=True)])
        metrics[f"acc_k{k}"], cis[f"acc_k{k}"] = float(acc.mean()), ci95(acc)
    eps = []
    for e in range(cfg.gen_episodes):
        rng = np.random.default_rng([stream.seed, 3, cfg.gen_shots, e])
        eps.append(sampler.sample(sorted(novel), known + sorted(novel), cfg.gen_shots,
                                  cfg.gen_queries, rng))
    for suffix, preds in generalised_predictions(learner, feats, eps, known, cfg).items():
        for key, is_novel in (("gen_acc_known", False), ("gen_acc_novel", True)):
            acc = np.array([(p == ep.query_y)[(ep.query_y >= len(known)) == is_novel].mean()
                            for p, ep in zip(preds, eps, strict=True)])
            metrics[key + suffix], cis[key + suffix] = float(acc.mean()), ci95(acc)
    check_unrevealed(learner, novel)  # the loaded learner itself was never changed
    return metrics, cis


def new_results(cfg: FewshotParams) -> TestResults:
    test = f"2 Few-shot ({cfg.ways}-way, novel classes)"
    rows = [Row(test, f"acc_k{k}", f"Accuracy k={k}", reference=REFERENCE.get(k, {}))
            for k in cfg.shots]
    gen = f"2 Few-shot generalised (K ∪ U, k={cfg.gen_shots})"
    rows += [Row(gen, "gen_acc_known", "Accuracy on K"), Row(gen, "gen_acc_novel", "Accuracy on U")]
    rows += [Row(gen, f"gen_acc_{part}_{readout}", f"Accuracy on {part[0].upper()} (dualmem "
                 f"{readout} readout)", in_table=False)
             for readout in ("episodic", "full") for part in ("known", "novel")]
    protocol = (f"{cfg.ways}-way k-shot episodes over the held-out classes U ({cfg.episodes} per "
                f"seed and k, {cfg.queries} test queries per class); gradient learners: new linear "
                f"head on frozen features ({cfg.head_steps} Adam steps); dualmem: fresh episodic "
                f"memory; generalised: K ∪ U after {cfg.gen_shots} shot(s) of U, "
                f"{cfg.gen_episodes} episodes")
    return TestResults(test="fewshot", protocol=protocol, rows=rows,
                       extra={"params": cfg.as_dict(), "ci95_over_episodes": {}})


@dataclass
class FewshotRun:
    learner: str
    seed: int
    metrics: dict[str, float]
    memory: dict[str, int]


def run_fewshot(params: dict, cfg: FewshotParams, progress: bool = False
                ) -> tuple[TestResults, list[FewshotRun]]:
    """Every learner of run.learners on every open-world seed, from its post-stream state."""
    seeds = stream_seeds(params, STREAM)
    results, runs = new_results(cfg), []
    for seed in tqdm(seeds, desc="fewshot seeds", disable=not progress):
        stream = open_stream(params, STREAM, seed)
        for name, learner, memory in post_stream_learners(params, stream):
            metrics, cis = evaluate_learner(learner, stream, cfg, progress)
            for metric, value in metrics.items():
                results.add(metric, name, seed, value)
                results.extra["ci95_over_episodes"].setdefault(metric, {}).setdefault(
                    name, {})[str(seed)] = cis[metric]
            results.memory.setdefault(name, memory)
            runs.append(FewshotRun(name, seed, metrics, memory))
    return results, runs


def write_plot_csv(results: TestResults, cfg: FewshotParams, out_dir: Path) -> Path:
    """plots/fewshot/accuracy_by_shots.csv: k and each learner's accuracy (mean over seeds)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    names = list(results.values[f"acc_k{cfg.shots[0]}"])
    path = out_dir / "accuracy_by_shots.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["shots", *names])
        for k in sorted(cfg.shots):
            by_learner = results.values[f"acc_k{k}"]
            writer.writerow([k, *(round(float(np.mean(list(by_learner[n].values()))), 5)
                                  for n in names)])
    return path
