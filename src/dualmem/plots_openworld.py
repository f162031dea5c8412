"""Report figures for the open-world tests (2-5), drawn from their saved results."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dualmem.core.results import TestResults  # noqa: E402
from dualmem.core.stats import summarize  # noqa: E402
from dualmem.detection_metrics import mean_roc  # noqa: E402


def _mean_ci(by_seed: dict[str, float]) -> tuple[float, float]:
    s = summarize(list(by_seed.values()))
    return s.mean, 0.0 if np.isnan(s.ci95) else s.ci95


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_fewshot(results: TestResults, directory: Path) -> list[Path]:
    shots = sorted(int(m.group(1)) for key in results.values if (m := re.fullmatch(r"acc_k(\d+)", key)))
    if not shots:
        return []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for learner in results.values[f"acc_k{shots[0]}"]:
        stats = [_mean_ci(results.values[f"acc_k{k}"][learner]) for k in shots]
        mean, half = np.array([s[0] for s in stats]), np.array([s[1] for s in stats])
        ax.errorbar(shots, mean, yerr=half, marker="o", capsize=3, label=learner)
    ax.set_xticks(shots)
    ax.set_xlabel("shots per class (k)")
    ax.set_ylabel("accuracy on novel classes")
    ax.set_ylim(0, 1.02)
    ax.set_title("Few-shot accuracy (95% CI over seeds)")
    ax.legend(fontsize=7, ncol=2)
    return [_save(fig, directory / "fewshot_accuracy_vs_k.png")]


def plot_novelty(results: TestResults, directory: Path) -> list[Path]:
    roc = results.extra.get("roc", {})
    if not roc:
        return []
    fig, axes = plt.subplots(1, len(roc), figsize=(4 * len(roc), 3.8), squeeze=False)
    for ax, (set_name, by_column) in zip(axes[0], roc.items(), strict=True):
        for column, by_seed in by_column.items():
            curve = mean_roc(list(by_seed.values()))
            ax.plot(curve["fpr"], curve["tpr"], label=column)
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        ax.set_title(f"familiar K vs {set_name}")
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate (novel)")
        ax.legend(fontsize=7)
    return [_save(fig, directory / "novelty_roc.png")]


def plot_transfer(results: TestResults, directory: Path) -> list[Path]:
    metrics = sorted(k for k in results.values if k.startswith("probe_"))
    if not metrics:
        return []
    learners = list(results.values[metrics[0]])
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / len(learners)
    for i, learner in enumerate(learners):
        stats = [_mean_ci(results.values[m].get(learner, {"0": np.nan})) for m in metrics]
        x = np.arange(len(metrics)) + i * width
        ax.bar(x, [s[0] for s in stats], width, yerr=[s[1] for s in stats], capsize=3, label=learner)
    ax.set_xticks(np.arange(len(metrics)) + 0.4 - width / 2, [m.removeprefix("probe_") for m in metrics])
    ax.set_ylabel("linear-probe accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title("Feature transfer (95% CI over seeds)")
    ax.legend(fontsize=7, ncol=2)
    return [_save(fig, directory / "transfer_probe_accuracy.png")]


def plot_recall(results: TestResults, directory: Path) -> list[Path]:
    sizes = results.extra.get("sizes", [])
    if not sizes:
        return []
    fig, (ax_n, ax_age) = plt.subplots(1, 2, figsize=(12, 4.5))
    for learner in results.values[f"recall_{sizes[0]}"]:
        stats = [_mean_ci(results.values[f"recall_{n}"][learner]) for n in sizes]
        mean, half = np.array([s[0] for s in stats]), np.array([s[1] for s in stats])
        ax_n.plot(sizes, mean, marker="o", label=learner)
        ax_n.fill_between(sizes, mean - half, mean + half, alpha=0.2)
    chance = results.extra.get("chance")
    if chance:
        ax_n.axhline(chance, color="grey", linestyle=":", label="chance")
    ax_n.set_xscale("log")
    ax_n.set_xlabel("items in the stream (N)")
    ax_n.set_ylabel("recall")
    ax_n.set_ylim(0, 1.02)
    ax_n.set_title("Recall vs N (95% CI over seeds)")
    ax_n.legend(fontsize=8)
    by_age = results.extra.get("recall_vs_age", {})
    starts = by_age.get("age_bin_start", [])
    for learner, curve in by_age.items():
        if learner not in ("n", "age_bin_start"):
            ax_age.plot(starts, curve, marker=".", label=learner)
    ax_age.set_xlabel(f"item age (items shown after it), N={by_age.get('n')}")
    ax_age.set_ylabel("recall")
    ax_age.set_ylim(0, 1.02)
    ax_age.set_title("Recall vs item age")
    ax_age.legend(fontsize=8)
    return [_save(fig, directory / "recall_vs_n_and_age.png")]


PLOTTERS = {"fewshot": plot_fewshot, "novelty": plot_novelty, "transfer": plot_transfer, "recall": plot_recall}
