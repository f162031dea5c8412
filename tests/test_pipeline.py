"""End to end: the tiny profile's whole DAG in a scratch copy — report, MLflow runs, DVC caching,
per-learner reruns and determinism."""

import json
import sqlite3
from pathlib import Path

import pytest
import yaml

from dualmem.tiny import run_tiny_pipeline, tool_env

from .conftest import copy_of

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_repo(tiny_baseline, tmp_path_factory) -> Path:
    return copy_of(tiny_baseline, tmp_path_factory.mktemp("pipeline") / "tiny")


def stage_names(repo: Path) -> list[str]:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return sorted(lock["stages"])


def test_report_has_rows_and_gap_columns(tiny_repo):
    summary = (tiny_repo / "reports" / "summary.md").read_text()
    assert "Gap (dualmem − finetune)" in summary
    assert "Gap (dualmem − best other at ≤ its bytes)" in summary
    assert "## Learners at a glance" in summary and "Memory bytes (T1)" in summary
    assert "## Literature check" in summary
    for label in ("| 1 Continual", "| 2 Few-shot", "| 3 Novelty", "| 4 Feature transfer", "| 5 Long-horizon",
                  "Retention", "Final average accuracy", "Accuracy k=1", "AUROC", "Probe accuracy"):
        assert label in summary, label
    for reference in ("0.980 ± 0.005", "0.006 ± 0.006", "0.593", "0.264", "0.898", "0.793"):
        assert reference in summary, reference
    csv = (tiny_repo / "reports" / "summary.csv").read_text().splitlines()
    assert csv[0].startswith("test,metric,finetune_mean")
    assert any(line.startswith("1 Continual") for line in csv[1:])
    assert "best_gap_mean" in csv[0]
    figures = {p.name for p in (tiny_repo / "reports" / "figures").glob("*.png")}
    assert {"continual_accuracy_matrices.png", "continual_accuracy_over_tasks.png", "fewshot_accuracy_vs_k.png",
            "novelty_roc.png", "transfer_probe_accuracy.png", "recall_vs_n_and_age.png"} <= figures


def test_metrics_are_registered_with_dvc(tiny_repo):
    for test in ("continual", "fewshot", "novelty", "transfer", "recall"):
        for learner in ("finetune", "joint", "dualmem"):
            assert (tiny_repo / "metrics" / test / f"{learner}.json").exists(), (test, learner)
    metrics = json.loads((tiny_repo / "metrics" / "continual" / "dualmem.json").read_text())
    assert {"mean", "ci95", "n"} <= set(metrics["retention"])
    assert metrics["retention"]["n"] == 2
    for plot in ("continual", "memory", "fewshot", "novelty_roc_novel", "recall_by_n", "recall_by_age", "transfer"):
        assert (tiny_repo / "plots" / f"{plot}.csv").exists(), plot


def test_mlflow_holds_one_parent_with_nested_children(tiny_repo):
    db = sqlite3.connect(tiny_repo / "mlflow.db")
    runs = db.execute("select run_uuid, name from runs").fetchall()
    tags = {}
    for run_id, key, value in db.execute("select run_uuid, key, value from tags"):
        tags.setdefault(run_id, {})[key] = value
    parents = [r for r, _ in runs if "mlflow.parentRunId" not in tags.get(r, {})]
    assert len(parents) == 1
    children = [r for r, _ in runs if r not in parents]
    assert all(tags[r]["mlflow.parentRunId"] == parents[0] for r in children)
    stages = {tags[r]["dvc.stage"] for r in children}
    assert stages == set(stage_names(tiny_repo)) - {"prepare", "lm_prepare"}  # the data stages log no run
    per_test = {t: [r for r in children if tags[r].get("test") == t] for t in
                ("continual", "fewshot", "novelty", "transfer", "recall")}
    for test, test_runs in per_test.items():
        assert len(test_runs) >= 3 * 2, test  # learners x seeds (novelty/transfer add columns)
    continual = per_test["continual"]
    assert len(continual) == 3 * 2
    steps = db.execute(
        "select count(*) from metrics where key = 'average_accuracy' and run_uuid = ?", (continual[0],)
    ).fetchone()[0]
    assert steps == 5  # one per task
    assert all(tags[r]["git.commit"] for r in children)


def test_every_stage_leaves_a_record_and_the_pipeline_run_ends_finished(tiny_repo):
    """`.dualmem/stages/<stage>.json` for every DVC stage (its name as DVC names it), and the parent run
    FINISHED with an end time once the report, the last stage, has published."""
    records = {p.stem: json.loads(p.read_text()) for p in (tiny_repo / ".dualmem" / "stages").glob("*.json")}
    assert set(records) == set(stage_names(tiny_repo))
    assert all(r["status"] == "finished" and r["wall_seconds"] > 0 and r["peak_rss_mb"] > 50 for r in records.values())
    db = sqlite3.connect(tiny_repo / "mlflow.db")
    parents = db.execute("select status, end_time from runs r join tags t on t.run_uuid = r.run_uuid "
                         "where t.key = 'dualmem.pipeline_key'").fetchall()
    assert len(parents) == 1 and parents[0][0] == "FINISHED" and parents[0][1] is not None


def test_a_stage_killed_mid_run_completes_on_the_next_repro(tiny_repo):
    """SIGKILL a stage's whole process group while it trains, then `dvc repro`: the stage runs again and
    its outputs equal those of the uninterrupted run."""
    import os
    import signal
    import subprocess
    import time

    stage = "sequential@finetune-continual"
    before = yaml.safe_load((tiny_repo / "dvc.lock").read_text())["stages"][stage]["outs"]
    proc = subprocess.Popen(["dvc", "repro", "-f", "-s", stage], cwd=tiny_repo, env=tool_env(tiny_repo),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    wake = tiny_repo / "models" / "continual" / "finetune" / "wake"
    deadline = time.time() + 120
    while time.time() < deadline and not (wake.exists() and any(wake.rglob("*.pt"))):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    result = run_tiny_pipeline(tiny_repo)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert yaml.safe_load((tiny_repo / "dvc.lock").read_text())["stages"][stage]["outs"] == before


def test_second_repro_reruns_nothing(tiny_repo):
    before = (tiny_repo / "dvc.lock").read_text()
    result = run_tiny_pipeline(tiny_repo)
    assert result.returncode == 0
    assert "Running stage" not in result.stdout
    assert (tiny_repo / "dvc.lock").read_text() == before


def test_changing_one_learner_reruns_only_that_learner(tiny_repo):
    import subprocess

    params = yaml.safe_load((tiny_repo / "params.yaml").read_text())
    params["learners"]["finetune"]["lr"] = 0.002
    original = (tiny_repo / "params.yaml").read_text()
    (tiny_repo / "params.yaml").write_text(yaml.safe_dump(params))
    try:
        status = subprocess.run(["dvc", "status", "--json"], cwd=tiny_repo, capture_output=True, text=True,
                                check=True, env=tool_env())
        changed = set(json.loads(status.stdout))
    finally:
        (tiny_repo / "params.yaml").write_text(original)
    assert {"sequential@finetune-continual", "sequential@finetune-openworld", "evaluate_fewshot@finetune"} <= changed
    assert not any(s.startswith(("sequential@joint", "sequential@dualmem", "consolidate", "train_encoder"))
                   for s in changed)
    assert not any(s.startswith("evaluate_") and not s.endswith("@finetune") for s in changed), changed


def test_forced_rerun_is_bitwise_identical(tiny_repo):
    before = yaml.safe_load((tiny_repo / "dvc.lock").read_text())["stages"]
    for stage in ("sequential@dualmem-continual", "consolidate@dualmem-continual", "evaluate_continual@dualmem"):
        result = run_tiny_pipeline(tiny_repo, "-f", "-s", stage)
        assert result.returncode == 0, result.stderr[-2000:]
    after = yaml.safe_load((tiny_repo / "dvc.lock").read_text())["stages"]
    for stage in ("sequential@dualmem-continual", "consolidate@dualmem-continual"):
        assert before[stage]["outs"] == after[stage]["outs"]
    assert json.loads((tiny_repo / "metrics" / "continual" / "dualmem.json").read_text())


def test_an_unreachable_tracking_store_costs_no_result(tiny_repo):
    """MLflow down: the report stage still writes its outputs and exits 0, with one warning line naming the
    URI; the runs stay spooled for `python -m dualmem.core.tracking`."""
    import subprocess

    env = {**tool_env(tiny_repo), "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}
    (tiny_repo / "reports" / "summary.md").unlink()
    result = subprocess.run(["dvc", "repro", "-f", "-s", "report"], cwd=tiny_repo, env=env, capture_output=True,
                            text=True, check=False, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: MLflow at")]
    assert len(warnings) == 1 and "http://127.0.0.1:9" in warnings[0], result.stderr[-2000:]
    assert (tiny_repo / "reports" / "summary.md").exists()
    assert list((tiny_repo / ".dualmem" / "spool").glob("*/*.json"))


TOY_LEARNER = '''"""`toy`: class means of raw pixels, nearest mean wins (a learner written for a test)."""

from __future__ import annotations

import numpy as np
import torch

from dualmem.learners.common.base import Learner, parameter_cost


class ToyLearner(Learner):
    name = "toy"

    def __init__(self, cfg, ctx) -> None:
        super().__init__(cfg, ctx)
        self.sums = torch.zeros(ctx.n_classes, ctx.train_x.shape[1])
        self.counts = torch.zeros(ctx.n_classes)

    def observe(self, x: torch.Tensor, y: torch.Tensor, ids: np.ndarray) -> None:
        self.sums.index_add_(0, y, x)
        self.counts += torch.bincount(y, minlength=len(self.counts))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def proba_from_features(self, feats: torch.Tensor) -> torch.Tensor:
        means = self.sums / self.counts.clamp_min(1).unsqueeze(1)
        scores = -torch.cdist(feats, means).masked_fill((self.counts == 0).unsqueeze(0), float("inf"))
        return torch.softmax(scores, dim=1)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "sums": self.sums, "counts": self.counts}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.sums, self.counts = state["sums"], state["counts"]

    def memory_cost(self) -> dict[str, int]:
        return {**parameter_cost(), "params": self.sums.numel(), "param_bytes": 4 * self.sums.numel()}
'''


def test_adding_a_learner_is_one_file_plus_its_params_section(tiny_repo):
    """A new file in learners/ and a learners.toy section: only toy's stages (and the report) run, and
    the report gets a toy column. `prepare` reruns too (it validates the whole params.yaml with the
    whole library), but its outputs are unchanged, so no other learner's stage runs. Runs last: it
    leaves the toy learner in the scratch project."""
    import subprocess

    (tiny_repo / "src" / "dualmem" / "learners" / "toy.py").write_text(TOY_LEARNER)
    params = yaml.safe_load((tiny_repo / "params.yaml").read_text())
    params["learners"]["toy"] = {}
    params["run"]["learners"].append("toy")
    (tiny_repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = subprocess.run(["dvc", "status", "--json"], cwd=tiny_repo, capture_output=True, text=True,
                            check=True, env=tool_env(tiny_repo))
    changed = set(json.loads(status.stdout))
    toy_stages = {"sequential@toy-continual", "sequential@toy-openworld", *(f"evaluate_{t}@toy" for t in
                  ("continual", "fewshot", "novelty", "transfer", "recall"))}
    assert changed == toy_stages | {"prepare", "report"}, changed
    result = run_tiny_pipeline(tiny_repo)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ran = {line.split("'")[1] for line in result.stdout.splitlines() if line.startswith("Running stage")}
    assert ran == toy_stages | {"prepare", "report"}, ran
    summary = (tiny_repo / "reports" / "summary.md").read_text()
    assert "| toy |" in summary and " toy |" in summary.splitlines()[4]
