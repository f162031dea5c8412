"""Test 6's evaluation: R[i][j] = bits per byte on domain j's test windows after stage i, its metrics,
and the results every lm_evaluate stage writes for the report.

Windows are `context + 1` bytes at evenly spaced, fixed offsets of each test slice; the first `warmup`
positions of a window are context only, the rest are scored — the same bytes for every learner (`lora`
picks its adapter set on the warm-up prefix).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dualmem.core.results import Row, TestResults
from dualmem.lm.corpora import load_slices
from dualmem.lm.pipeline import TEXT_DIR, LMParams, build, final_state_path, load
from dualmem.lm.text_learner import TextLearner

TEST_LABEL = "6 Domain sequence (byte-level LM)"
ROWS = [Row(TEST_LABEL, "final_bpb", "Bits per byte, final average (lower is better)", False),
        Row(TEST_LABEL, "retention", "Retention (bits per byte)", True),
        Row(TEST_LABEL, "forgetting", "Forgetting, bits per byte", False),
        Row(TEST_LABEL, "general_bpb_rise", "General domain: bits per byte lost since the base", False),
        Row(TEST_LABEL, "backward_transfer", "Backward transfer, bits per byte (positive = forgotten)", False,
            in_table=False),
        Row(TEST_LABEL, "forward_transfer", "Forward transfer, bits per byte", True, in_table=False)]

def evaluation_windows(cfg: LMParams, directory: Path = TEXT_DIR, split: str = "test") -> dict[str, torch.Tensor]:
    """Per domain: `eval.windows` windows at evenly spaced, fixed offsets of its `split` slice (the test slice;
    the validation slice for choosing hyperparameters, `dualmem.lm.tuning`)."""
    out = {}
    width = cfg.model.context + 1
    for name in cfg.corpus.domains:
        test = torch.from_numpy(load_slices(directory, name)[split])
        starts = np.linspace(0, len(test) - width, cfg.eval.windows).astype(np.int64)
        out[name] = test[torch.from_numpy(starts).unsqueeze(1) + torch.arange(width)]
    return out


def bits_per_byte(learner: TextLearner, windows: torch.Tensor, warmup: int) -> float:
    return float(learner.window_losses(windows, warmup)[:, warmup:].mean()) / math.log(2)


@dataclass
class LMRun:
    learner: str
    seed: int
    R: np.ndarray  # (stages, domains) bits per byte
    memory: dict[str, int]  # after the last stage
    eval_bytes_per_second: float  # scored bytes per second of evaluation (wall clock)


def evaluate(params: dict, cfg: LMParams, name: str, seed: int, windows: dict[str, torch.Tensor]) -> LMRun:
    """The learner's R matrix on one seed, from its state after every stage."""
    learner = build(params, cfg, name, seed)
    n = len(cfg.corpus.domains)
    R = np.zeros((n, n))
    scored, seconds = 0, 0.0
    memory: dict[str, int] = {}
    for stage in range(n):
        payload = load(final_state_path(name, seed, stage))
        learner.load_state_dict(payload["state"])
        memory = payload["memory"]
        for j, domain in enumerate(cfg.corpus.domains):
            start = time.perf_counter()
            R[stage, j] = bits_per_byte(learner, windows[domain], cfg.eval.warmup)
            seconds += time.perf_counter() - start
            scored += windows[domain][:, cfg.eval.warmup + 1 :].numel()
    return LMRun(name, seed, R, memory, scored / max(seconds, 1e-9))


def lm_metrics(R: np.ndarray) -> dict[str, float]:
    """From R[stage][domain] in bits per byte (lower is better; domain j is learned at stage j):
    final average over domains; forgetting_j = R[T][j] - min over stages j..T-1 of R[i][j] (bits lost since
    its best, for j < T) and its mean; backward transfer = mean over j < T of R[T][j] - R[j][j] (positive =
    forgotten); forward transfer = mean over j >= 1 of R[0][j] - R[j-1][j] (bits gained on a domain before
    training on it, against the base); retention = mean over j < T of R[j][j] / R[T][j] (as Test 1's, on
    bits: 1 = nothing lost)."""
    T = R.shape[0] - 1
    forgetting = [R[T, j] - R[j:T, j].min() for j in range(T)]
    out = {"final_bpb": float(R[T].mean()), "forgetting": float(np.mean(forgetting)),
           "backward_transfer": float(np.mean([R[T, j] - R[j, j] for j in range(T)])),
           "forward_transfer": float(np.mean([R[0, j] - R[j - 1, j] for j in range(1, T + 1)])),
           "retention": float(np.mean([R[j, j] / R[T, j] for j in range(T)])),
           "general_bpb_rise": float(R[T, 0] - R[0, 0])}
    out |= {f"forgetting_{j}": float(f) for j, f in enumerate(forgetting)}
    return out


def collect(cfg: LMParams, runs: list[LMRun]) -> TestResults:
    domains = cfg.corpus.domains
    results = TestResults("lm", protocol=(
        f"byte-level transformer ({cfg.model.layers} layers, width {cfg.model.width}, context {cfg.model.context}) "
        f"pretrained on {domains[0]} ({cfg.base.steps} steps), then fine-tuned on {', '.join(domains[1:])} in "
        f"order ({cfg.finetune.steps} steps of {cfg.finetune.batch_size} windows each, every learner the same "
        f"batches); bits per byte on {cfg.eval.windows} test windows per domain, the first {cfg.eval.warmup} "
        f"bytes of each context only; storing learners keep at most {cfg.memory_bytes:,} bytes of text; "
        f"{len({r.seed for r in runs})} seeds"), rows=list(ROWS))
    for run in runs:
        for metric, value in lm_metrics(run.R).items():
            results.add(metric, run.learner, run.seed, value)
        results.memory[run.learner] = run.memory
    results.extra = {"domains": domains,
                     "R": {run.learner: {} for run in runs},
                     "eval_bytes_per_second": {run.learner: {} for run in runs}}
    for run in runs:
        results.extra["R"][run.learner][str(run.seed)] = run.R.tolist()
        results.extra["eval_bytes_per_second"][run.learner][str(run.seed)] = run.eval_bytes_per_second
    return results
