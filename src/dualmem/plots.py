"""Report figures (PNG). One function per test; each returns the files it wrote."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dualmem.core.results import TestResults, memory_bytes  # noqa: E402
from dualmem.core.stats import summarize  # noqa: E402
from dualmem.metrics import average_accuracy_curve  # noqa: E402
from dualmem.plot_data import size_variants  # noqa: E402
from dualmem.plots_openworld import PLOTTERS as OPENWORLD_PLOTTERS  # noqa: E402


def _runs_by_learner(results: TestResults) -> dict[str, list[np.ndarray]]:
    out: dict[str, list[np.ndarray]] = {}
    for run in results.extra.get("runs", []):
        out.setdefault(run["learner"], []).append(np.array(run["accuracy_matrix"]))
    return out


def plot_continual(results: TestResults, directory: Path, ablation: TestResults | None = None) -> list[Path]:
    by_learner = _runs_by_learner(results)
    if not by_learner:
        return []
    heatmaps = directory / "continual_accuracy_matrices.png"
    n_cols = min(5, len(by_learner))
    n_rows = -(-len(by_learner) // n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.6 * n_cols, 3.4 * n_rows), squeeze=False)
    for ax in axes.flat[len(by_learner):]:
        ax.axis("off")
    for ax, (learner, matrices) in zip(list(axes.flat)[: len(by_learner)], by_learner.items(), strict=True):
        mean = np.mean(matrices, axis=0)
        ax.imshow(mean, vmin=0, vmax=1, cmap="viridis")
        for (i, j), v in np.ndenumerate(mean):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="w" if v < 0.6 else "k")
        ax.set_title(f"{learner} ({len(matrices)} seeds)", fontsize=9)
        ax.set_xlabel("evaluated on task j")
        ax.set_ylabel("after learning task i")
        ticks = range(mean.shape[0])
        ax.set_xticks(ticks, [str(t + 1) for t in ticks])
        ax.set_yticks(ticks, [str(t + 1) for t in ticks])
    fig.tight_layout()
    fig.savefig(heatmaps, dpi=120)
    plt.close(fig)

    curves = directory / "continual_accuracy_over_tasks.png"
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for learner, matrices in by_learner.items():
        values = np.array([average_accuracy_curve(R) for R in matrices])
        stats = [summarize(values[:, t]) for t in range(values.shape[1])]
        mean = np.array([s.mean for s in stats])
        half = np.nan_to_num(np.array([s.ci95 for s in stats]))
        x = np.arange(1, len(mean) + 1)
        ax.plot(x, mean, marker="o", label=learner)
        ax.fill_between(x, mean - half, mean + half, alpha=0.2)
    ax.set_xlabel("tasks learned")
    ax.set_ylabel("average accuracy on tasks seen so far")
    ax.set_ylim(0, 1.02)
    ax.set_title("Class-incremental accuracy (95% CI over seeds)")
    ax.legend(fontsize=7, ncol=2, loc="lower left")
    fig.tight_layout()
    fig.savefig(curves, dpi=120)
    plt.close(fig)
    return [heatmaps, curves, plot_memory(results, directory, ablation)]


def plot_memory(results: TestResults, directory: Path, ablation: TestResults | None = None) -> Path:
    """Final accuracy against memory bytes (parameters + stored items), one point per learner with its
    95% CI over seeds, and the dual memory at each fixed memory size of the ablation (a line);
    `dvc exp run --queue -S memory.budget_bytes=...` sweeps the budget."""
    path = directory / "continual_accuracy_vs_memory.png"
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sizes = size_variants(ablation)
    if ablation is not None and sizes:
        points = sorted((np.mean(list(ablation.values["memory_bytes"][v].values())) / 1e6,
                         summarize(list(ablation.values["final_accuracy"][v].values())), v) for v in sizes)
        ax.errorbar([p[0] for p in points], [p[1].mean for p in points],
                    yerr=[np.nan_to_num(p[1].ci95) for p in points], fmt="s--", color="tab:red", capsize=3,
                    label="dualmem at fixed memory sizes (ablation seeds)")
        for x, s, label in points:
            ax.annotate(label.removeprefix("items="), (x, s.mean), textcoords="offset points", xytext=(4, -10),
                        fontsize=7, color="tab:red")
        ax.legend(fontsize=7, loc="lower right")
    for learner, by_seed in results.values.get("final_accuracy", {}).items():
        total = memory_bytes(results.memory.get(learner))
        if total is None:
            continue
        s = summarize(list(by_seed.values()))
        ax.errorbar(total / 1e6, s.mean, yerr=np.nan_to_num(s.ci95), fmt="o", capsize=3)
        ax.annotate(learner, (total / 1e6, s.mean), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("memory after the stream, MB (parameters + stored items; log scale)")
    ax.set_ylabel("final average accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title("Accuracy against memory (Test 1, 95% CI over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


PLOTTERS = {"continual": plot_continual, **OPENWORLD_PLOTTERS}


def plot_lm(lm: TestResults, directory: Path) -> Path:
    """Test 6: bits per byte on each domain (a panel each) after each stage, a line per learner."""
    path = directory / "lm_bits_per_byte.png"
    domains = lm.extra["domains"]
    fig, axes = plt.subplots(1, len(domains), figsize=(3.4 * len(domains), 3.6), squeeze=False)
    stages = ["base", *(f"+{d}" for d in domains[1:])]
    for learner, by_seed in lm.extra["R"].items():
        mean = np.mean([np.array(r) for r in by_seed.values()], axis=0)
        for j, ax in enumerate(axes[0]):
            ax.plot(range(len(stages)), mean[:, j], marker="o", label=learner)
    for j, ax in enumerate(axes[0]):
        ax.set_title(f"on {domains[j]}", fontsize=9)
        ax.set_xticks(range(len(stages)), stages, fontsize=7)
        ax.set_xlabel("after stage")
    axes[0][0].set_ylabel("bits per byte (lower is better)")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle("Test 6: a byte-level LM fine-tuned domain after domain (mean over seeds)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_all(results: list[TestResults], directory: Path, ablation: TestResults | None = None,
             lm: TestResults | None = None) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = [plot_lm(lm, directory)] if lm is not None else []
    for result in results:
        if result.test == "continual":
            written += plot_continual(result, directory, ablation)
        elif plotter := PLOTTERS.get(result.test):
            written += plotter(result, directory)
    return written
