"""Few-shot episodes as the learners see them (features only), the linear-head fit that is the
default way to learn new classes from shots, and the memory-based way (shots written to a memory)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from dualmem.core.optim import adam
from dualmem.memory.episodic import EpisodicMemory


@dataclass(frozen=True)
class HeadFit:
    """How new linear rows are fit on shots: full-batch Adam steps and learning rate."""

    steps: int
    lr: float


@dataclass
class Episodes:
    """A batch of E episodes of one shape, as features of the learner that reads them."""

    support: torch.Tensor  # (E, S, d) features of the shots
    support_y: torch.Tensor  # (E, S) local labels: positions in `classes`
    query: torch.Tensor  # (E, Q, d) features of the queries
    classes: torch.Tensor  # (E, C) the global class of each local label

    @property
    def n_way(self) -> int:
        return int(self.classes.shape[1])

    def support_global(self, e: int) -> torch.Tensor:
        """Global labels of episode e's shots."""
        return self.classes[e][self.support_y[e]]


def fit_heads(xs: torch.Tensor, ys: torch.Tensor, n_out: int, fit: HeadFit,
              fixed: torch.Tensor | None = None, balanced: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Independent linear heads per episode (xs: E x S x d), zero init, full-batch Adam on the mean
    cross-entropy; `fixed` (E x S x m) are logits of frozen rows put before the trained ones (ys then
    index the concatenation); `balanced` weighs every label equally whatever its number of items."""
    n_ep, n_shots, dim = xs.shape
    n_labels = n_out + (0 if fixed is None else fixed.shape[2])
    weights = torch.ones(n_ep, n_shots)
    if balanced:  # each label present in an episode gets the same total weight
        per_label = F.one_hot(ys, n_labels).sum(1)  # (E, labels)
        present = (per_label > 0).sum(1, keepdim=True)
        weights = n_shots / (per_label.gather(1, ys) * present).float()
    weight = torch.zeros(n_ep, dim, n_out, requires_grad=True)
    bias = torch.zeros(n_ep, 1, n_out, requires_grad=True)
    optimiser = adam([weight, bias], fit.lr)
    with torch.enable_grad():
        for _ in range(fit.steps):
            logits = torch.baddbmm(bias, xs, weight)
            if fixed is not None:
                logits = torch.cat([fixed, logits], dim=2)
            losses = F.cross_entropy(logits.reshape(n_ep * n_shots, -1), ys.reshape(-1), reduction="none")
            loss = (losses * weights.reshape(-1)).sum() / n_shots
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return weight.detach(), bias.detach()


def known_negatives(ids: torch.Tensor, labels: torch.Tensor, known: list[int], per_class: int,
                    generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to `per_class` kept items of each class of K (drawn without replacement): their training-set
    ids and local labels (positions in `known`)."""
    chosen_ids, chosen_local = [], []
    for position, c in enumerate(known):
        rows = torch.nonzero(labels == c).flatten()
        rows = rows[torch.randperm(len(rows), generator=generator)[:per_class]]
        chosen_ids.append(ids[rows].long())
        chosen_local.append(torch.full((len(rows),), position))
    return torch.cat(chosen_ids), torch.cat(chosen_local)


def fresh_memory_scores(episodes: Episodes, k: int, temperature: float) -> torch.Tensor:
    """Each episode's shots written to a fresh episodic memory, its queries read by similarity-weighted
    kNN: (E, Q, n_way) probabilities. k is capped by the shots per class, so that the k nearest can all
    be of the query's class (a 10-NN vote over 5 shots per class would have to count 5 wrong ones)."""
    shots_per_class = episodes.support.shape[1] // episodes.n_way
    out = []
    for e in range(len(episodes.support)):
        memory = EpisodicMemory(episodes.support.shape[2], episodes.n_way, k=max(1, min(k, shots_per_class)),
                                temperature=temperature)
        memory.write(episodes.support[e], episodes.support_y[e])
        out.append(memory.read(episodes.query[e]).probs)
    return torch.stack(out)


def added_shots_scores(memory: EpisodicMemory, episodes: Episodes,
                       read: Callable[[EpisodicMemory, torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Each episode's shots (global labels) written into a copy of `memory`, its queries read over the
    episode's classes: (E, Q, n_way). `read(memory, queries) -> probabilities over all classes`
    (default: the memory's kNN readout). `memory` itself is never changed."""
    out = []
    for e in range(len(episodes.support)):
        # a shallow copy shares the stored tensors: write() concatenates into new ones and never
        # edits them in place, so the learner's memory stays as it was
        copied = copy.copy(memory)
        copied.write(episodes.support[e], episodes.support_global(e))
        probs = read(copied, episodes.query[e]) if read else copied.read(episodes.query[e]).probs
        out.append(probs[:, episodes.classes[e]])
    return torch.stack(out)


def prototype_scores(episodes: Episodes) -> torch.Tensor:
    """Nearest prototype (Snell et al. 2017) on L2-normalised features: a class's prototype is the
    normalised mean of its shots; score = cosine similarity, (E, Q, n_way). (Centring first, as in
    SimpleShot's CL2N, is the caller's: see the dual memory's `centred`.)"""
    onehot = F.one_hot(episodes.support_y, episodes.n_way).float()  # (E, S, C)
    protos = F.normalize(onehot.transpose(1, 2) @ F.normalize(episodes.support, dim=-1), dim=-1)  # (E, C, d)
    return F.normalize(episodes.query, dim=-1) @ protos.transpose(1, 2)


def shot_calibration(keys: torch.Tensor, labels: torch.Tensor, known: list[int], shots: int,
                     generator: torch.Generator, rounds: int = 64) -> torch.Tensor:
    """Per class of K: how much more similar an item is to the mean of its class's stored items than to
    the mean of `shots` other items of its class — estimated on stored items only (leave-one-out draws).
    Subtracted from K's prototype scores, it puts a class known from thousands of items and one known
    from `shots` shots on the same footing (a query of either class expects the same similarity)."""
    offsets = torch.zeros(len(known))
    for i, c in enumerate(known):
        rows = torch.nonzero(labels == c).flatten()
        if len(rows) <= shots:
            continue
        mean = F.normalize(keys[rows].mean(0), dim=0)
        draws = torch.stack([rows[torch.randperm(len(rows), generator=generator)[: shots + 1]] for _ in range(rounds)])
        query, support = keys[draws[:, 0]], F.normalize(keys[draws[:, 1:]].mean(1), dim=1)
        offsets[i] = ((query @ mean) - (query * support).sum(1)).mean()
    return offsets


def prototypes_with_known(known_means: torch.Tensor, episodes: Episodes, n_known: int,
                          known_offset: torch.Tensor | None = None) -> torch.Tensor:
    """Generalised (K ∪ U) nearest prototype: K's prototypes are the means of the learner's stored items
    of K (`known_means`, rows in `known` order), U's the means of its shots; `known_offset` (per class of
    K, see `shot_calibration`) is subtracted from K's scores. Every class has exactly one prototype
    whatever its number of items, so a class with one shot can win a query; (E, Q, |K|+|U|)."""
    n_new = episodes.n_way - n_known
    onehot = F.one_hot(episodes.support_y - n_known, n_new).float()
    novel = F.normalize(onehot.transpose(1, 2) @ F.normalize(episodes.support, dim=-1), dim=-1)  # (E, U, d)
    known = F.normalize(known_means, dim=-1).unsqueeze(0).expand(len(novel), -1, -1)
    scores = F.normalize(episodes.query, dim=-1) @ torch.cat([known, novel], dim=1).transpose(1, 2)
    if known_offset is not None:
        scores[..., :n_known] -= known_offset
    return scores
