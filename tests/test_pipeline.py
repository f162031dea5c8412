"""End to end: the tiny profile's whole DAG in a scratch copy — report, MLflow runs, DVC caching,
per-learner reruns and determinism."""

import json
import sqlite3
from pathlib import Path

import pytest
import yaml

from dualmem.tiny import make_tiny_copy, run_tiny_pipeline, tool_env

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory) -> Path:
    repo = make_tiny_copy(tmp_path_factory.mktemp("tiny"))
    result = run_tiny_pipeline(repo)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return repo


def stage_names(repo: Path) -> list[str]:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return sorted(lock["stages"])


def test_report_has_rows_and_gap_columns(tiny_repo):
    summary = (tiny_repo / "reports" / "summary.md").read_text()
    assert "Gap (dualmem − finetune)" in summary
    for label in ("| 1 Continual", "| 2 Few-shot", "| 3 Novelty", "| 4 Feature transfer", "| 5 Long-horizon",
                  "Retention", "Final average accuracy", "Accuracy k=1", "AUROC", "Probe accuracy"):
        assert label in summary, label
    for reference in ("0.980 ± 0.005", "0.006 ± 0.006", "0.593", "0.264", "0.898", "0.793"):
        assert reference in summary, reference
    csv = (tiny_repo / "reports" / "summary.csv").read_text().splitlines()
    assert csv[0].startswith("test,metric,finetune_mean")
    assert any(line.startswith("1 Continual") for line in csv[1:])
    figures = {p.name for p in (tiny_repo / "reports" / "figures").glob("*.png")}
    assert {"continual_accuracy_matrices.png", "continual_accuracy_over_tasks.png", "fewshot_accuracy_vs_k.png",
            "novelty_roc.png", "transfer_probe_accuracy.png", "recall_vs_n_and_age.png"} <= figures


def test_metrics_are_registered_with_dvc(tiny_repo):
    for test in ("continual", "fewshot", "novelty", "transfer", "recall"):
        assert (tiny_repo / "metrics" / f"{test}.json").exists()
    metrics = json.loads((tiny_repo / "metrics" / "continual.json").read_text())
    assert set(metrics) == {"finetune", "joint", "dualmem"}
    assert {"mean", "ci95", "n"} <= set(metrics["dualmem"]["retention"])
    assert metrics["dualmem"]["retention"]["n"] == 2


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
    assert stages == set(stage_names(tiny_repo)) - {"prepare"}
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
    assert {"sequential@finetune-continual", "sequential@finetune-openworld"} <= changed
    assert not any(s.startswith(("sequential@joint", "sequential@dualmem", "consolidate", "train_encoder"))
                   for s in changed)


def test_forced_rerun_is_bitwise_identical(tiny_repo):
    before = yaml.safe_load((tiny_repo / "dvc.lock").read_text())["stages"]
    for stage in ("sequential@dualmem-continual", "consolidate@dualmem-continual", "evaluate_continual"):
        result = run_tiny_pipeline(tiny_repo, "-f", "-s", stage)
        assert result.returncode == 0, result.stderr[-2000:]
    after = yaml.safe_load((tiny_repo / "dvc.lock").read_text())["stages"]
    for stage in ("sequential@dualmem-continual", "consolidate@dualmem-continual"):
        assert before[stage]["outs"] == after[stage]["outs"]
    assert json.loads((tiny_repo / "metrics" / "continual.json").read_text())
