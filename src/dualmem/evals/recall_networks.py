"""Test 5 for the gradient learners: a copy of the post-stream network with a new head, trained
online in one pass (finetune) or offline on all N stored items (joint)."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from dualmem.core.optim import Adam, adam
from dualmem.core.seeding import derive_seed, seeded_generator
from dualmem.encoders import Encoder
from dualmem.evals.recall_protocol import RecallOutcome, RecallParams, RecallStream


def new_network(encoder: Encoder, n_targets: int, seed: int) -> tuple[Encoder, nn.Linear]:
    net = copy.deepcopy(encoder).train()
    torch.manual_seed(derive_seed("recall-head", seed))
    return net, nn.Linear(net.out_dim, n_targets)


def train_step(net: Encoder, head: nn.Linear, opt: Adam, x: torch.Tensor,
               y: torch.Tensor) -> None:
    loss = F.cross_entropy(head(net(x)), y)
    opt.zero_grad()
    loss.backward()
    opt.step()


@torch.no_grad()
def hits_of(net: Encoder, head: nn.Linear, x: torch.Tensor, y: torch.Tensor,
            batch: int = 4096) -> np.ndarray:
    preds = torch.cat([head(net(x[i : i + batch])).argmax(1) for i in range(0, len(x), batch)])
    return (preds == y).numpy()


def timed_query_us(net: Encoder, head: nn.Linear, x: torch.Tensor) -> float:
    t0 = time.perf_counter()
    with torch.no_grad():
        head(net(x)).argmax(1)
    return 1e6 * (time.perf_counter() - t0) / len(x)


def n_params(net: Encoder, head: nn.Linear) -> int:
    return sum(p.numel() for p in (*net.parameters(), *head.parameters()))


@contextmanager
def one_thread() -> Iterator[None]:
    """Small-batch steps are overhead-bound: one thread avoids OpenMP contention (3-100x on a
    busy 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def online_recall(encoder: Encoder, rs: RecallStream, cfg: RecallParams, progress: bool = False,
                  ) -> RecallOutcome:
    """One online pass over the largest stream; recall@N read when the pass reaches N."""
    net, head = new_network(encoder, cfg.n_targets, rs.seed)
    opt = adam([*net.parameters(), *head.parameters()], cfg.online_lr)
    recall, correct, pos = {}, np.zeros(0, dtype=bool), 0
    bar = tqdm(total=rs.n_max, desc="online", disable=not progress, leave=False)
    with bar, one_thread():
        for n in rs.sizes:
            while pos < n:
                end = min(pos + cfg.online_batch_size, n)
                train_step(net, head, opt, rs.cues[pos:end], rs.targets[pos:end])
                bar.update(end - pos)
                pos = end
            correct = hits_of(net, head, rs.queries[:n], rs.targets[:n])
            recall[n] = float(correct.mean())
    query_us = timed_query_us(net, head, rs.queries[: cfg.query_batch])
    return RecallOutcome(recall, correct, 4 * n_params(net, head) / rs.n_max, query_us)


def offline_recall(encoder: Encoder, rs: RecallStream, cfg: RecallParams, progress: bool = False,
                   ) -> RecallOutcome:
    """Joint's counterpart: per N, a fresh copy trained on all N stored items for several epochs."""
    recall, correct = {}, np.zeros(0, dtype=bool)
    with one_thread():
        for n in tqdm(rs.sizes, desc="offline", disable=not progress, leave=False):
            net, head = new_network(encoder, cfg.n_targets, rs.seed)
            opt = adam([*net.parameters(), *head.parameters()], cfg.offline_lr)
            generator = seeded_generator("recall-offline", rs.seed, n)
            per_epoch = math.ceil(n / cfg.offline_batch_size)
            for _ in range(max(cfg.offline_epochs, math.ceil(cfg.offline_min_steps / per_epoch))):
                order = torch.randperm(n, generator=generator)
                for start in range(0, n, cfg.offline_batch_size):
                    rows = order[start : start + cfg.offline_batch_size]
                    train_step(net, head, opt, rs.cues[rows], rs.targets[rows])
            correct = hits_of(net, head, rs.queries[:n], rs.targets[:n])
            recall[n] = float(correct.mean())
    query_us = timed_query_us(net, head, rs.queries[: cfg.query_batch])
    item_bytes = rs.cues.shape[1] + 8  # the kept item (uint8 code) and its label
    return RecallOutcome(recall, correct, 4 * n_params(net, head) / rs.n_max + item_bytes, query_us)
