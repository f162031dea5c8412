"""`icarl`: iCaRL, incremental classifier and representation learning (Rebuffi, Kolesnikov, Sperl & Lampert,
CVPR 2017), as in van de Ven's and Mammoth's implementations.

- Exemplar memory: the memory budget buys K raw items; after each task every class seen so far keeps
  m = K // (classes seen) exemplars. Old classes' sets are cut to their first m (herding order is a
  ranking, so a prefix is again a herded set); each new class gets m items chosen by herding on the
  L2-normalised features of the current network (each pick brings the mean of the chosen features
  closest to the class mean). Exemplars are stored as training-set ids.
- Training: as in iCaRL, epochs over the task's items together with the exemplars (shuffled batches of
  both; `observe` steps), binary cross-entropy over the classes seen so far: one-hot targets for the
  current task's classes and, for the old classes, distillation targets = sigmoid outputs of the
  network as it was before this task (computed once per task for its training set).
- Prediction (class-incremental, single label space): nearest mean of exemplars. The class means are
  the normalised means of the exemplars' L2-normalised features, recomputed after each task; the
  probabilities are softmax(-||f - mu_c||^2 / temperature) over the classes with exemplars (others 0).
- Capabilities it overrides, the natural NME rules: few-shot = nearest mean of the shots (a prototype
  per new class, no training); generalised = the shots' means added beside its class means; novelty =
  squared distance to the nearest class mean. Recall (a copy of its encoder with a new head, online) and
  transfer use the head-based defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from dualmem.core.params import param
from dualmem.data.stream import Task
from dualmem.learners.common.base import LearnerContext, parameter_cost
from dualmem.learners.common.head import HeadConfig, HeadLearner
from dualmem.learners.common.readouts import Episodes, HeadFit


@dataclass(frozen=True)
class ICaRLConfig(HeadConfig):
    # optimiser: the suite's Adam settings (HeadConfig); Mammoth's S-MNIST iCaRL uses SGD lr 0.1, batch 10
    temperature: float = param(minimum=1e-6)  # NME softmax over -squared distances; our choice, argmax-free


def herding(feats: torch.Tensor, m: int) -> torch.Tensor:
    """Rows of `feats` (L2-normalised, n x d) in iCaRL's herding order, the first m: step k picks the row
    that brings the mean of the k chosen rows closest to the mean of all rows (without replacement)."""
    n = len(feats)
    m = min(m, n)
    by_column = feats.t().contiguous().t()  # column-major: a much faster matrix-vector product on CPU
    mu_term = -2.0 * (by_column @ feats.mean(0))  # -2 f.mu
    sq = (feats * feats).sum(1)  # |f|^2, set to inf once a row is chosen
    s_dot = torch.zeros(n, dtype=feats.dtype)  # f . (sum of the chosen rows)
    chosen = torch.empty(m, dtype=torch.long)
    for k in range(1, m + 1):
        # k^2 |mu - (s + f)/k|^2 = const + k (-2 mu.f) + 2 s.f + |f|^2
        p = int(torch.add(sq, s_dot, alpha=2.0).add_(mu_term, alpha=k).argmin())
        chosen[k - 1] = p
        sq[p] = float("inf")
        s_dot.addmv_(by_column, feats[p])
    return chosen


def normalise(feats: torch.Tensor) -> torch.Tensor:
    return F.normalize(feats, dim=-1)


class ICaRLLearner(HeadLearner):
    name = "icarl"
    Config = ICaRLConfig

    def __init__(self, cfg: ICaRLConfig, ctx: LearnerContext) -> None:
        super().__init__(cfg, ctx)
        self.capacity = ctx.item_capacity(ctx.raw_item_bytes, self.name)
        self.exemplar_ids = torch.empty(0, dtype=torch.long)  # grouped by class, each in herding order
        self.exemplar_labels = torch.empty(0, dtype=torch.long)
        self.class_means = torch.zeros(ctx.n_classes, self.encoder.out_dim)
        self.has_mean = torch.zeros(ctx.n_classes, dtype=torch.bool)
        self.distill_row = torch.full((len(ctx.train_x),), -1, dtype=torch.long)  # task-local lookup
        self.distill_targets = torch.empty(0, ctx.n_classes)
        self.old_classes = torch.zeros(ctx.n_classes, dtype=torch.bool)
        self.seen = torch.zeros(ctx.n_classes, dtype=torch.bool)

    # -- training -----------------------------------------------------------------------------
    def before_task(self, task: Task) -> None:
        self.old_classes = self.seen.clone()
        super().before_task(task)
        self.seen[list(self.visible_classes)] = True

    def fit(self, task: Task, progress: bool = False) -> None:
        """Epochs over the task's items and the exemplars together (iCaRL's training set), in batches."""
        ids = torch.cat([torch.from_numpy(task.ids), self.exemplar_ids])
        labels = torch.cat([task.y, self.exemplar_labels])
        x = self.ctx.train_x[ids]
        self.start_distillation(ids, x)
        for epoch in range(self.epochs):
            order = np.random.default_rng([self.ctx.seed, task.index, epoch, 17]).permutation(len(ids))
            for start in range(0, len(order), self.batch_size):
                rows = torch.from_numpy(order[start : start + self.batch_size])
                self.guarded_observe(x[rows], labels[rows], ids[rows].numpy())
        self.distill_row.fill_(-1)
        self.distill_targets = torch.empty(0, self.ctx.n_classes)

    @torch.no_grad()
    def start_distillation(self, ids: torch.Tensor, x: torch.Tensor) -> None:
        """The network before this task (now) gives the old classes' targets: its sigmoid outputs,
        computed once for the task's training set and looked up by id (task-local, not kept)."""
        if not self.old_classes.any():
            return
        self.distill_targets = torch.cat([torch.sigmoid(self.head(self.encoder.encode(x[i : i + 4096])))
                                          for i in range(0, len(x), 4096)])
        self.distill_row[ids] = torch.arange(len(ids))

    def observe(self, x: torch.Tensor, y: torch.Tensor, ids: np.ndarray) -> None:
        targets = F.one_hot(y, self.ctx.n_classes).float()
        rows = self.distill_row[torch.from_numpy(ids)]
        if self.old_classes.any() and bool((rows >= 0).all()):
            targets[:, self.old_classes] = self.distill_targets[rows][:, self.old_classes]
        # van de Ven's iCaRL: binary cross-entropy over the classes seen so far, summed over classes,
        # averaged over the batch
        logits = self.logits(x)[:, self.seen]
        loss = F.binary_cross_entropy_with_logits(logits, targets[:, self.seen], reduction="sum") / len(y)
        self.step(loss, len(y))

    def after_task(self, task: Task) -> None:
        super().after_task(task)  # encoder to eval mode
        self.update_exemplars(task)
        self.update_means()

    @torch.no_grad()
    def update_exemplars(self, task: Task) -> None:
        """Cut old classes' sets to m, then herd m exemplars of each of the task's new classes."""
        n_seen = int(self.seen.sum())
        m = None if self.capacity is None else self.capacity // n_seen
        keep_ids, keep_labels = [], []
        for c in torch.unique(self.exemplar_labels).tolist():
            rows = torch.nonzero(self.exemplar_labels == c).flatten()[:m]
            keep_ids.append(self.exemplar_ids[rows])
            keep_labels.append(self.exemplar_labels[rows])
        for c in task.classes:
            ids = torch.from_numpy(task.ids[(task.y == c).numpy()])
            if m is not None and m < len(ids):
                ids = ids[herding(normalise(self.encoder.encode(self.ctx.train_x[ids])), m)]
            keep_ids.append(ids)
            keep_labels.append(torch.full((len(ids),), c, dtype=torch.long))
        self.exemplar_ids = torch.cat(keep_ids)
        self.exemplar_labels = torch.cat(keep_labels)

    @torch.no_grad()
    def update_means(self) -> None:
        """Class means of the exemplars' normalised features under the current network."""
        feats = normalise(self.encoder.encode(self.ctx.train_x[self.exemplar_ids]))
        sums = torch.zeros_like(self.class_means).index_add_(0, self.exemplar_labels, feats)
        self.has_mean = torch.bincount(self.exemplar_labels, minlength=self.ctx.n_classes) > 0
        self.class_means = normalise(sums) * self.has_mean.unsqueeze(1)

    # -- capabilities -------------------------------------------------------------------------
    @staticmethod
    def sq_distances(feats: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
        """Squared distances (..., n, C) between normalised features and (normalised) means (..., C, d)."""
        f = normalise(feats)
        return ((f * f).sum(-1, keepdim=True) - 2 * f @ means.transpose(-1, -2)
                + (means * means).sum(-1).unsqueeze(-2)).clamp_min(0)

    @torch.no_grad()
    def logits_from_features(self, feats: torch.Tensor) -> torch.Tensor:
        if not self.has_mean.any():
            return torch.zeros(len(feats), self.ctx.n_classes)
        scores = -self.sq_distances(feats, self.class_means) / self.cfg.temperature
        return scores.masked_fill(~self.has_mean, float("-inf"))

    @torch.no_grad()
    def proba_from_features(self, feats: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits_from_features(feats), dim=1)

    @torch.no_grad()
    def novelty_from_features(self, feats: torch.Tensor) -> torch.Tensor:
        """Squared distance to the nearest class mean (2 when there is none yet)."""
        if not self.has_mean.any():
            return torch.full((len(feats),), 2.0)
        return self.sq_distances(feats, self.class_means[self.has_mean]).min(1).values

    @staticmethod
    def shot_means(support: torch.Tensor, support_y: torch.Tensor, n_way: int) -> torch.Tensor:
        """(E, n_way, d) normalised means of each episode's normalised shots per local label."""
        onehot = F.one_hot(support_y, n_way).float()  # (E, S, n_way)
        return normalise(onehot.transpose(1, 2) @ normalise(support))

    @torch.no_grad()
    def fewshot_scores(self, episodes: Episodes, fit: HeadFit) -> torch.Tensor:
        """Nearest mean of the shots (iCaRL's rule for new classes, without training)."""
        means = self.shot_means(episodes.support, episodes.support_y, episodes.n_way)
        return -self.sq_distances(episodes.query, means)

    @torch.no_grad()
    def generalised_scores(self, episodes: Episodes, known: list[int], fit: HeadFit) -> torch.Tensor:
        """Nearest mean among its class means of K and the means of U's shots."""
        n_ep, n_known = len(episodes.support), len(known)
        n_new = episodes.n_way - n_known
        new_y = (episodes.support_y - n_known).clamp_min(0)  # shots are all of U (local labels >= |K|)
        new = self.shot_means(episodes.support, new_y, n_new)
        old = self.class_means[torch.tensor(known)].unsqueeze(0).expand(n_ep, -1, -1)
        return -self.sq_distances(episodes.query, torch.cat([old, new], dim=1))

    def known_classes(self) -> set[int]:
        return super().known_classes() | set(torch.unique(self.exemplar_labels).tolist())

    # -- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "exemplar_ids": self.exemplar_ids, "exemplar_labels": self.exemplar_labels,
                "class_means": self.class_means, "has_mean": self.has_mean, "seen": self.seen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.exemplar_ids, self.exemplar_labels = state["exemplar_ids"], state["exemplar_labels"]
        self.class_means, self.has_mean, self.seen = state["class_means"], state["has_mean"], state["seen"]

    def memory_cost(self) -> dict[str, int]:
        n = len(self.exemplar_ids)
        cost = parameter_cost(self.encoder, self.head, items=n, item_bytes=n * self.ctx.raw_item_bytes)
        means = int(self.has_mean.sum()) * self.encoder.out_dim  # the NME classifier's prototypes
        return {**cost, "params": cost["params"] + means, "param_bytes": cost["param_bytes"] + 4 * means}
