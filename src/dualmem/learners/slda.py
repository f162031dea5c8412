"""`slda`: Deep Streaming Linear Discriminant Analysis (Hayes & Kanan 2020, "Lifelong Machine Learning
with Deep Streaming Linear Discriminant Analysis", CVPR-W; reference code tyler-hayes/Deep_SLDA).

- On the frozen stream encoder's features f, it keeps per-class means mu_k, counts c_k and one shared
  covariance Sigma, updated online with the paper's per-sample rule (covariance first, with the class
  mean before the sample; a class's mean starts at 0 as in the reference code):
      Sigma <- (n Sigma + n/(n+1) (f - mu_y)(f - mu_y)^T) / (n + 1);  mu_y <- mu_y + (f - mu_y)/(c_y + 1).
  A batch applies exactly that sequence of per-sample updates, vectorised (see `StreamingLDA.fit`):
  the result does not depend on the batch size. No gradient step, no stored item; every item once.
- Class-incremental prediction: the LDA linear classifier with shrinkage eps (default 1e-4, the
  paper's): Lambda = pinv((1 - eps) Sigma + eps I), score_k(f) = f^T Lambda mu_k - mu_k^T Lambda mu_k / 2
  over the classes seen so far (-inf for unseen classes); prediction = argmax, probabilities =
  softmax of the scores.
- Few-shot (SLDA-native, not a gradient head): new classes are new means (the mean of their shots)
  under the covariance learned on the stream; fresh label space: the shots' means only; K ∪ U: the K
  means kept, U's means added. The shots' own covariance update (S shots against the stream's n
  updates, a change of S / (n + S) < 0.1% here) is left out so that episodes need no new inverse.
- Recall (Test 5): a fresh SLDA on the cues' features with n_targets classes, one streaming pass,
  read out on the corrupted queries at every prefix N; charged its statistics / N.
- Memory: means + counts + covariance + the (frozen) encoder's parameters.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dualmem.core.params import param
from dualmem.evals.recall_protocol import RecallOutcome, RecallParams, RecallStream
from dualmem.learners.common.base import Learner, LearnerContext, parameter_cost
from dualmem.learners.common.readouts import Episodes, HeadFit


@dataclass(frozen=True)
class SldaConfig:
    shrinkage: float = param(1e-4, minimum=0.0, maximum=1.0)  # Hayes & Kanan 2020: 1e-4
    batch_size: int = param(512, minimum=1)  # write batch (results do not depend on it)


class StreamingLDA:
    """The SLDA statistics and its linear readout."""

    def __init__(self, dim: int, n_classes: int, shrinkage: float) -> None:
        self.shrinkage = shrinkage
        self.mu = torch.zeros(n_classes, dim)
        self.count = torch.zeros(n_classes)
        self.sigma = torch.zeros(dim, dim)
        self.n = 0
        self._precision: tuple[int, torch.Tensor] | None = None  # cache: (n at computation, Lambda)

    @torch.no_grad()
    def fit(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """The paper's per-sample updates for every row of the batch, in order, vectorised: sample i
        meets the mean of its class over the samples before it, and the covariance recursion unrolls
        to n' Sigma' = n Sigma + sum_i n_i / (n_i + 1) d_i d_i^T with n_i = n + i."""
        x, y = x.float(), y.long()
        m = len(y)
        if m == 0:
            return
        d = torch.empty_like(x)
        for k in torch.unique(y).tolist():
            rows = torch.nonzero(y == k).flatten()
            xs, c = x[rows], float(self.count[k])
            j = torch.arange(len(rows), dtype=torch.float32)
            before = (c * self.mu[k] + (torch.cumsum(xs, 0) - xs)) / (c + j).clamp_min(1.0).unsqueeze(1)
            d[rows] = xs - before
            self.mu[k] = (c * self.mu[k] + xs.sum(0)) / (c + len(rows))
            self.count[k] += len(rows)
        steps = self.n + torch.arange(m, dtype=torch.float32)
        scatter = (d * (steps / (steps + 1)).unsqueeze(1)).T @ d
        self.sigma = (self.n * self.sigma + scatter) / (self.n + m)
        self.n += m

    def precision(self) -> torch.Tensor:
        """Lambda = pinv((1 - eps) Sigma + eps I), recomputed after updates (in float64)."""
        if self._precision is None or self._precision[0] != self.n:
            eye = torch.eye(len(self.sigma), dtype=torch.float64)
            shrunk = (1 - self.shrinkage) * self.sigma.double() + self.shrinkage * eye
            self._precision = (self.n, torch.linalg.pinv(shrunk, hermitian=True).float())
        return self._precision[1]

    @property
    def seen(self) -> torch.Tensor:
        return self.count > 0

    @torch.no_grad()
    def scores(self, feats: torch.Tensor) -> torch.Tensor:
        """LDA scores f^T Lambda mu_k - mu_k^T Lambda mu_k / 2; -inf for classes never seen (zeros
        when none was)."""
        if not self.seen.any():
            return torch.zeros(len(feats), len(self.mu))
        weight = self.mu @ self.precision()  # (K, d); Lambda is symmetric
        bias = -0.5 * (weight * self.mu).sum(1)
        out = feats.float() @ weight.T + bias
        return out.masked_fill(~self.seen, -torch.inf)

    def n_values(self) -> int:
        return self.mu.numel() + self.count.numel() + self.sigma.numel()

    def state_dict(self) -> dict[str, Any]:
        return {"mu": self.mu.clone(), "count": self.count.clone(), "sigma": self.sigma.clone(), "n": self.n}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mu, self.count, self.sigma = state["mu"].clone(), state["count"].clone(), state["sigma"].clone()
        self.n = int(state["n"])
        self._precision = None


def lda_scores_of_means(query: torch.Tensor, means: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """Batched LDA scores: query (E, Q, d), means (E, C, d) -> (E, Q, C)."""
    weight = means @ precision
    return torch.baddbmm(-0.5 * (weight * means).sum(2).unsqueeze(1), query, weight.transpose(1, 2))


def shot_means(support: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(E, C, d) mean of each class's shots (labels (E, S) in [0, n_classes))."""
    onehot = torch.nn.functional.one_hot(labels, n_classes).float()  # (E, S, C)
    return (onehot.transpose(1, 2) @ support) / onehot.sum(1).clamp_min(1.0).unsqueeze(2)


class SldaLearner(Learner):
    name = "slda"
    Config = SldaConfig

    def __init__(self, cfg: SldaConfig, ctx: LearnerContext) -> None:
        super().__init__(cfg, ctx)
        self.encoder = ctx.encoder.eval()  # frozen, never trained: shared, not copied
        self.lda = StreamingLDA(self.encoder.out_dim, ctx.n_classes, cfg.shrinkage)

    def observe(self, x: torch.Tensor, y: torch.Tensor, ids: np.ndarray) -> None:
        self.lda.fit(self.encoder.encode(x), y)

    # -- capabilities -------------------------------------------------------------------------
    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder.encode(x)

    @torch.no_grad()
    def logits_from_features(self, feats: torch.Tensor) -> torch.Tensor:
        return self.lda.scores(feats)

    @torch.no_grad()
    def proba_from_features(self, feats: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.lda.scores(feats), dim=1)

    @torch.no_grad()
    def fewshot_scores(self, episodes: Episodes, fit: HeadFit) -> torch.Tensor:
        """LDA scores against the shots' class means, under the stream's covariance."""
        means = shot_means(episodes.support, episodes.support_y, episodes.n_way)
        return lda_scores_of_means(episodes.query.float(), means, self.lda.precision())

    @torch.no_grad()
    def generalised_scores(self, episodes: Episodes, known: list[int], fit: HeadFit) -> torch.Tensor:
        """K's means kept (in `known` order), U's shot means added after them; one LDA readout."""
        n_known, n_ep = len(known), len(episodes.support)
        new = shot_means(episodes.support, episodes.support_y - n_known, episodes.n_way - n_known)
        means = torch.cat([self.lda.mu[known].unsqueeze(0).expand(n_ep, -1, -1), new], dim=1)
        return lda_scores_of_means(episodes.query.float(), means, self.lda.precision())

    def recall(self, stream: RecallStream, cfg: RecallParams, progress: bool = False) -> RecallOutcome:
        """A fresh SLDA over the n_targets targets, one streaming pass; read at every prefix N."""
        keys, queries = self.features(stream.cues), self.features(stream.queries)
        lda = StreamingLDA(keys.shape[1], cfg.n_targets, self.cfg.shrinkage)
        recall, correct, pos = {}, np.zeros(0, dtype=bool), 0
        for n in stream.sizes:
            while pos < n:
                end = min(pos + self.cfg.batch_size, n)
                lda.fit(keys[pos:end], stream.targets[pos:end])
                pos = end
            step = cfg.query_batch
            preds = torch.cat([lda.scores(queries[i : min(i + step, n)]).argmax(1) for i in range(0, n, step)])
            correct = (preds == stream.targets[:n]).numpy()
            recall[n] = float(correct.mean())
        batch = stream.queries[: cfg.query_batch]
        t0 = time.perf_counter()
        lda.scores(self.features(batch)).argmax(1)
        query_us = 1e6 * (time.perf_counter() - t0) / len(batch)
        return RecallOutcome(recall, correct, 4 * lda.n_values() / stream.n_max, query_us)

    def known_classes(self) -> set[int]:
        return super().known_classes() | set(torch.nonzero(self.lda.seen).flatten().tolist())

    # -- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "lda": self.lda.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.lda.load_state_dict(state["lda"])

    def memory_cost(self) -> dict[str, int]:
        cost = parameter_cost(self.encoder)
        n = cost["params"] + self.lda.n_values()
        return {**cost, "params": n, "param_bytes": 4 * n}
