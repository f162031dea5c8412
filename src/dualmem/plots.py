"""Report figures (PNG). One function per test; each returns the files it wrote."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dualmem.metrics import average_accuracy_curve  # noqa: E402
from dualmem.plots_openworld import PLOTTERS as OPENWORLD_PLOTTERS  # noqa: E402
from dualmem.results import TestResults  # noqa: E402
from dualmem.stats import summarize  # noqa: E402


def _runs_by_learner(results: TestResults) -> dict[str, list[np.ndarray]]:
    out: dict[str, list[np.ndarray]] = {}
    for run in results.extra.get("runs", []):
        out.setdefault(run["learner"], []).append(np.array(run["accuracy_matrix"]))
    return out


def plot_continual(results: TestResults, directory: Path) -> list[Path]:
    by_learner = _runs_by_learner(results)
    if not by_learner:
        return []
    heatmaps = directory / "continual_accuracy_matrices.png"
    fig, axes = plt.subplots(1, len(by_learner), figsize=(4 * len(by_learner), 3.6), squeeze=False)
    for ax, (learner, matrices) in zip(axes[0], by_learner.items(), strict=True):
        mean = np.mean(matrices, axis=0)
        ax.imshow(mean, vmin=0, vmax=1, cmap="viridis")
        for (i, j), v in np.ndenumerate(mean):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="w" if v < 0.6 else "k")
        ax.set_title(f"{learner} (mean of {len(matrices)} seeds)")
        ax.set_xlabel("evaluated on task j")
        ax.set_ylabel("after learning task i")
        ticks = range(mean.shape[0])
        ax.set_xticks(ticks, [str(t + 1) for t in ticks])
        ax.set_yticks(ticks, [str(t + 1) for t in ticks])
    fig.tight_layout()
    fig.savefig(heatmaps, dpi=120)
    plt.close(fig)

    curves = directory / "continual_accuracy_over_tasks.png"
    fig, ax = plt.subplots(figsize=(5.5, 4))
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
    ax.legend()
    fig.tight_layout()
    fig.savefig(curves, dpi=120)
    plt.close(fig)
    return [heatmaps, curves]


PLOTTERS = {"continual": plot_continual, **OPENWORLD_PLOTTERS}


def plot_all(results: list[TestResults], directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for result in results:
        plotter = PLOTTERS.get(result.test)
        if plotter:
            written += plotter(result, directory)
    return written
