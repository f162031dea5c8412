"""The data behind the DVC plots (plots/*.csv), from each test's merged results: pure functions of
`TestResults`, one per test, each returning {file stem: (header, rows)}."""

from __future__ import annotations

import numpy as np

from dualmem.core.results import TestResults, memory_bytes
from dualmem.core.stats import summarize
from dualmem.detection_metrics import mean_roc

Table = tuple[list[str], list[list[object]]]


def continual_tables(results: TestResults) -> dict[str, Table]:
    """DVC plot data (plots/continual.csv): average accuracy over the tasks seen so far after each
    task, mean over seeds, a column per learner."""
    by_learner: dict[str, list[np.ndarray]] = {}
    for run in results.extra.get("runs", []):
        by_learner.setdefault(run["learner"], []).append(np.array(run["average_accuracy_curve"]))
    n_tasks = max((len(c[0]) for c in by_learner.values()), default=0)
    rows = [[t + 1, *(round(float(np.mean([c[t] for c in curves])), 6) for curves in by_learner.values())]
            for t in range(n_tasks)]
    return {"continual": (["task", *by_learner], rows), **memory_tables(results)}


def fewshot_tables(results: TestResults) -> dict[str, Table]:
    """DVC plot data (plots/fewshot.csv): k and each learner's accuracy (mean over seeds)."""
    shots = sorted(int(m.removeprefix("acc_k")) for m in results.values if m.startswith("acc_k"))
    if not shots:
        return {}
    names = list(results.values[f"acc_k{shots[0]}"])
    rows = [[k, *(round(float(np.mean(list(results.values[f"acc_k{k}"][n].values()))), 5) for n in names)]
            for k in shots]
    return {"fewshot": (["shots", *names], rows)}


def novelty_tables(results: TestResults) -> dict[str, Table]:
    """DVC plot data (plots/novelty_roc_<set>.csv): fpr and each learner's TPR averaged over seeds."""
    tables = {}
    for set_name, by_column in results.extra.get("roc", {}).items():
        mean = {column: mean_roc(list(by_seed.values())) for column, by_seed in by_column.items()}
        fpr = next(iter(mean.values()))["fpr"]
        rows = [[value, *(curve["tpr"][i] for curve in mean.values())] for i, value in enumerate(fpr)]
        tables[f"novelty_roc_{set_name}"] = (["fpr", *mean], rows)
    return tables


def transfer_tables(results: TestResults) -> dict[str, Table]:
    """DVC plot data (plots/transfer.csv): mean probe accuracy per (target, learner column)."""
    rows = [[metric.removeprefix("probe_"), column, float(np.mean(list(by_seed.values())))]
            for metric, by_column in results.values.items() for column, by_seed in by_column.items()]
    return {"transfer": (["target", "learner", "accuracy"], rows)}


def recall_tables(results: TestResults) -> dict[str, Table]:
    """DVC plot data: plots/recall_by_n.csv (n, recall per learner) and plots/recall_by_age.csv."""
    extra = results.extra
    by_n, by_age = extra.get("recall_vs_n", {}), extra.get("recall_vs_age", {})
    if not by_n:
        return {}
    names = list(by_n)
    return {
        "recall_by_n": (["n", *names], [[n, *(by_n[m][i] for m in names)] for i, n in enumerate(extra["sizes"])]),
        "recall_by_age": (["age", *names], [[a, *(by_age[m][i] for m in names)]
                                            for i, a in enumerate(by_age["age_bin_start"])]),
    }


def memory_tables(continual: TestResults, ablation: TestResults | None = None) -> dict[str, Table]:
    """plots/memory.csv: each learner's memory bytes after the continual stream and its final accuracy,
    and the dual memory at each fixed memory size of the ablation (`dualmem[items=N]`)."""
    if "final_accuracy" not in continual.values:
        return {}
    rows = [[name, memory_bytes(continual.memory.get(name)),
             round(summarize(list(by_seed.values())).mean, 6)]
            for name, by_seed in continual.values["final_accuracy"].items()]
    rows += [[f"dualmem[{label}]", round(mean(ablation.values["memory_bytes"][label])),
              round(mean(ablation.values["final_accuracy"][label]), 6)] for label in size_variants(ablation)]
    return {"memory": (["learner", "memory_bytes", "final_accuracy"], rows)}


def size_variants(ablation: TestResults | None) -> list[str]:
    """The ablation's memory-size variants that have Test 1 values (none without an ablation)."""
    if ablation is None:
        return []
    return [label for label in ablation.extra.get("size_variants", [])
            if label in ablation.values.get("final_accuracy", {})]


def mean(by_seed: dict[str, float]) -> float:
    return float(np.mean(list(by_seed.values())))


TABLES = {"continual": continual_tables, "fewshot": fewshot_tables, "novelty": novelty_tables,
          "transfer": transfer_tables, "recall": recall_tables}


def lm_tables(lm: TestResults) -> dict[str, Table]:
    """DVC plot data (plots/lm_<domain>.csv): bits per byte on that domain after each stage (0 = the base),
    mean over seeds, a column per learner."""
    tables = {}
    means = {name: np.mean([np.array(r) for r in by_seed.values()], axis=0) for name, by_seed in lm.extra["R"].items()}
    for j, domain in enumerate(lm.extra["domains"]):
        rows = [[stage, *(round(float(R[stage, j]), 5) for R in means.values())]
                for stage in range(len(lm.extra["domains"]))]
        tables[f"lm_{domain}"] = (["stage", *means], rows)
    return tables


def plot_tables(results: list[TestResults], ablation: TestResults | None = None,
                lm: TestResults | None = None) -> dict[str, Table]:
    """Every plot table of the merged results (the dual memory's memory sizes join plots/memory.csv;
    Test 6 adds plots/lm_<domain>.csv)."""
    tables: dict[str, Table] = lm_tables(lm) if lm is not None else {}
    for result in results:
        if result.test in TABLES:
            tables |= TABLES[result.test](result)
    if ablation is not None:
        continual = next((r for r in results if r.test == "continual"), None)
        if continual is not None:
            tables |= memory_tables(continual, ablation)
    return tables
