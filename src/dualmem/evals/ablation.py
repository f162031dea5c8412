"""The dual memory's variants, measured by one stage (`evaluate_ablation`), reported beside the main table.

- Encoder ablation: every `encoder_modes` entry on the headline metric of each test — Test 1 final
  accuracy and retention, Test 2 1-shot, 5-shot and generalised H, Test 3 AUROC K vs U, Test 5 recall
  at the largest size of `recall_sizes`. `consolidated` and `ssl` are the learner's own modes (the sleep
  trains the encoder, starting from the stream's `first_task` encoder); `first_task` and `random` are
  the stream encoder of that mode, frozen.
- Memory sizes: Test 1 for the default encoder mode with the episodic memory held to each `budget_items`
  entry (null = unbounded: then Test 5 at every `recall_sizes` entry too), so that the dual memory
  stands beside published buffer sizes. Encoder variants recall at the first `recall_sizes` entry.
Every variant runs the same protocol code as the main tests (wake, a sleep after each task, the post-
stream learner read by the Test 2, 3 and 5 evaluations) on the first seeds of each stream.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
from tqdm import tqdm

from dualmem.core.errors import ParamsError
from dualmem.core.params import Section
from dualmem.core.results import Row, TestResults
from dualmem.data.stream import Stream
from dualmem.encoders import EncoderParams, train_stream_encoder
from dualmem.evals.continual import accuracy
from dualmem.evals.fewshot import FewshotParams
from dualmem.evals.fewshot import evaluate_learner as fewshot_metrics
from dualmem.evals.novelty import NoveltyParams
from dualmem.evals.novelty import evaluate_learner as novelty_metrics
from dualmem.evals.recall_protocol import RecallParams, make_recall_stream
from dualmem.learners import Learner, LearnerContext, learner_class
from dualmem.metrics import continual_metrics
from dualmem.runner import learner_config, memory_budget, open_stream, stream_seeds

SECTION = "evaluate_ablation"
LEARNER = "dualmem"
STREAM_ENCODER_MODES = ("first_task", "random")  # frozen stream encoders; the rest are dualmem's own modes
LEARNER_ENCODER_MODES = ("consolidated", "ssl")


@dataclass(frozen=True)
class AblationParams:
    continual_seeds: int
    openworld_seeds: int
    encoder_modes: list[str]
    budget_items: list[int | None]
    recall_sizes: list[int]

    @classmethod
    def from_params(cls, params: dict) -> AblationParams:
        s = Section.of(params, SECTION)
        modes = s.names("encoder_modes", (*LEARNER_ENCODER_MODES, *STREAM_ENCODER_MODES))
        budgets = s.raw("budget_items")
        if not isinstance(budgets, list) or not budgets or not all(
                b is None or (isinstance(b, int) and not isinstance(b, bool) and b >= 1) for b in budgets):
            raise ParamsError(f"{SECTION}.budget_items", f"is {budgets!r}", "give a list of item counts >= 1 "
                              "(null = unbounded), e.g. [200, 500, 5120, null]")
        return cls(continual_seeds=s.integer("continual_seeds", minimum=1),
                   openworld_seeds=s.integer("openworld_seeds", minimum=1), encoder_modes=modes,
                   budget_items=budgets, recall_sizes=sorted(s.int_list("recall_sizes", minimum=1)))

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Variant:
    label: str  # column of the report table
    mode: str  # an entry of encoder_modes
    budget_items: int | None  # None with bounded=False: unbounded; with bounded=True: memory.budget_bytes
    bounded: bool = True


def variants(cfg: AblationParams, default_mode: str) -> tuple[list[Variant], list[Variant]]:
    """(encoder variants at the default memory, memory-size variants of the default encoder)."""
    encoders = [Variant(f"encoder={mode}", mode, None) for mode in cfg.encoder_modes]
    sizes = [Variant(f"items={'unbounded' if n is None else n}", default_mode, n, bounded=n is not None)
             for n in cfg.budget_items]
    return encoders, sizes


def build_variant(params: dict, stream: Stream, variant: Variant) -> Learner:
    """The dual memory of `variant` on `stream`, from its stream encoder, before any task."""
    enc_cfg = EncoderParams.from_params(params)
    frozen = variant.mode in STREAM_ENCODER_MODES
    encoder, _ = train_stream_encoder(stream, replace(enc_cfg, mode=variant.mode if frozen else "first_task"),
                                      progress=False)
    base = learner_config(params, LEARNER)
    cfg = replace(base, encoder=replace(base.encoder, mode="frozen" if frozen else variant.mode),
                  episodic=replace(base.episodic, budget_items=variant.budget_items))
    budget = memory_budget(params) if variant.bounded else None
    return learner_class(LEARNER)(cfg, LearnerContext(encoder, stream.n_classes, stream.seed, stream.x_train, budget))


def run_stream(learner: Learner, stream: Stream, score: bool) -> np.ndarray:
    """Wake then sleep on every task; R[i][j] = accuracy on task j's test split after task i (if score)."""
    tests = [stream.test_split(stream.task_classes(j)) for j in range(stream.n_tasks)] if score else []
    R = np.zeros((stream.n_tasks, stream.n_tasks))
    for i, task in enumerate(stream.tasks()):
        learner.learn_task(task)
        learner.sleep(task)
        for j, (x, y) in enumerate(tests):
            R[i, j] = accuracy(learner, x, y)
    return R


def continual_values(params: dict, variant: Variant, seed: int) -> dict[str, float]:
    stream = open_stream(params, "continual", seed)
    learner = build_variant(params, stream, variant)
    metrics = continual_metrics(run_stream(learner, stream, score=True))
    cost = learner.memory_cost()
    return {"final_accuracy": metrics["final_accuracy"], "retention": metrics["retention"],
            "items": cost["items"], "memory_bytes": cost["param_bytes"] + cost["item_bytes"]}


def openworld_values(params: dict, variant: Variant, seed: int, recall_sizes: list[int],
                     tests: bool) -> dict[str, float]:
    """Tests 2 and 3 (if `tests`) and Test 5 at `recall_sizes` for the post-stream learner."""
    stream = open_stream(params, "openworld", seed)
    learner = build_variant(params, stream, variant)
    run_stream(learner, stream, score=False)
    values: dict[str, float] = {}
    if tests:
        fewshot, _ = fewshot_metrics(learner, stream, FewshotParams.from_params(params))
        novelty, _ = novelty_metrics(learner, stream, NoveltyParams.from_params(params), {})
        values |= {"acc_k1": fewshot["acc_k1"], "acc_k5": fewshot["acc_k5"], "gen_h": fewshot["gen_h"],
                   "auroc_novel": novelty["auroc_novel"]}
    recall_cfg = replace(RecallParams.from_params(params), sizes=recall_sizes)
    outcome = learner.recall(make_recall_stream(stream.x_train, recall_cfg, seed), recall_cfg)
    return values | {f"recall_{n}": value for n, value in outcome.recall.items()}


ENCODER_ROWS = [("final_accuracy", "T1 final accuracy"), ("retention", "T1 retention"), ("acc_k1", "T2 1-shot"),
                ("acc_k5", "T2 5-shot"), ("gen_h", "T2 generalised H"), ("auroc_novel", "T3 AUROC K vs U")]
SIZE_ROWS = [("final_accuracy", "T1 final accuracy"), ("retention", "T1 retention"), ("items", "Stored items"),
             ("memory_bytes", "Memory bytes")]


def run_ablation(params: dict, cfg: AblationParams, progress: bool = False) -> TestResults:
    default_mode = learner_config(params, LEARNER).encoder.mode
    encoders, sizes = variants(cfg, default_mode)
    recall_rows = [(f"recall_{n}", f"T5 recall@{n}") for n in cfg.recall_sizes]
    rows = [Row("encoder", key, label) for key, label in ENCODER_ROWS + recall_rows[:1]]
    rows += [Row("memory", key, label, key not in ("items", "memory_bytes")) for key, label in SIZE_ROWS + recall_rows]
    results = TestResults("ablation", protocol=(
        f"dualmem variants on the first {cfg.continual_seeds} continual and {cfg.openworld_seeds} open-world "
        f"seeds; encoder modes at the memory budget, memory sizes with encoder mode {default_mode}"), rows=rows,
        extra={"params": cfg.as_dict(), "encoder_variants": [v.label for v in encoders],
               "size_variants": [v.label for v in sizes]})
    continual = stream_seeds(params, "continual")[: cfg.continual_seeds]
    openworld = stream_seeds(params, "openworld")[: cfg.openworld_seeds]
    unbounded = [v for v in sizes if not v.bounded]  # the only size whose recall is not capped by items
    jobs = [(v, "continual", s) for v in encoders + sizes for s in continual]
    jobs += [(v, "openworld", s) for v in encoders + unbounded for s in openworld]
    for variant, stream, seed in tqdm(jobs, desc="ablation", disable=not progress):
        if stream == "continual":
            values = continual_values(params, variant, seed)
        elif variant in encoders:
            values = openworld_values(params, variant, seed, cfg.recall_sizes[:1], tests=True)
        else:
            values = openworld_values(params, variant, seed, cfg.recall_sizes, tests=False)
        for metric, value in values.items():
            results.add(metric, variant.label, seed, value)
    return results
