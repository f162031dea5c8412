"""MLflow tracking: URI resolution, nesting, and concurrent writers (parallel `dvc queue` workers)."""

import multiprocessing as mp
import sqlite3
from pathlib import Path

import pytest

from dualmem.core import tracking
from dualmem.core.tracking import ChildRun, StageTracker


def test_default_uri_is_the_real_repo_root(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert tracking.artifact_location() == (tmp_path / "mlartifacts").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere/x.db")
    assert tracking.tracking_uri() == "sqlite:////elsewhere/x.db"


def test_flatten_nested_params():
    assert tracking.flatten({"a": {"b": 1, "c": [1, 2]}, "d": "x"}) == {"a.b": "1", "a.c": "[1, 2]", "d": "x"}


def write_runs(root: str, worker: int, n_runs: int) -> None:
    import os

    os.environ["DVC_ROOT"] = root
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ["DUALMEM_PIPELINE_KEY"] = f"worker-{worker}"
    tracker = StageTracker("stage", {"worker": worker})
    for i in range(n_runs):
        tracker.add(ChildRun(name=f"w{worker}/r{i}", params={"i": i}, metrics={"m": i / 10},
                             series={"curve": [0.1, 0.2, 0.3]}, tags={"worker": str(worker)}))
    tracker.flush()
    tracking.publish_spool()  # every worker publishes (its own and others' spooled runs) concurrently


@pytest.mark.slow
def test_parallel_writers_lose_nothing(tmp_path: Path):
    workers, n_runs = 4, 5
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=write_runs, args=(str(tmp_path), w, n_runs)) for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=180)
        assert p.exitcode == 0
    db = sqlite3.connect(tmp_path / "mlflow.db")
    tags = {}
    for run_id, key, value in db.execute("select run_uuid, key, value from tags"):
        tags.setdefault(run_id, {})[key] = value
    parents = [r for r, t in tags.items() if "mlflow.parentRunId" not in t]
    children = [r for r, t in tags.items() if "mlflow.parentRunId" in t]
    assert len(parents) == workers  # one pipeline execution each
    assert len(children) == workers * n_runs
    for r in children:
        assert tags[tags[r]["mlflow.parentRunId"]][tracking.PIPELINE_KEY_TAG] == f"worker-{tags[r]['worker']}"
    n_points = db.execute("select count(*) from metrics where key = 'curve'").fetchone()[0]
    assert n_points == workers * n_runs * 3
    assert db.execute("pragma integrity_check").fetchone()[0] == "ok"


def test_same_pipeline_key_reuses_the_parent(tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DUALMEM_PIPELINE_KEY", "one-execution")
    for stage in ("a", "b"):
        tracker = StageTracker(stage, {})
        tracker.add(ChildRun(name=stage, params={}))
        tracker.flush()
    assert not (tmp_path / "mlflow.db").exists()  # stages only spool
    assert tracking.publish_spool() == 2
    assert tracking.publish_spool() == 0  # nothing is logged twice
    assert not list(tracking.spool_dir().glob("*/*.json"))
    db = sqlite3.connect(tmp_path / "mlflow.db")
    parents = db.execute("select count(*) from tags where key = ?", (tracking.PIPELINE_KEY_TAG,)).fetchone()[0]
    assert parents == 1


def parent_status(db_path: Path) -> dict[str, tuple[str, object]]:
    """pipeline key -> (status, end_time) of its parent run."""
    db = sqlite3.connect(db_path)
    rows = db.execute("select t.value, r.status, r.end_time from runs r join tags t on t.run_uuid = r.run_uuid "
                      "where t.key = ?", (tracking.PIPELINE_KEY_TAG,)).fetchall()
    return {key: (status, end) for key, status, end in rows}


def spool_one(key: str, monkeypatch) -> None:
    monkeypatch.setenv("DUALMEM_PIPELINE_KEY", key)
    tracker = StageTracker("stage", {})
    tracker.add(ChildRun(name=key, params={}))
    tracker.flush()


def test_a_finished_pipeline_ends_finished_and_a_running_one_stays_running(tmp_path, monkeypatch):
    """The publisher ends its own pipeline and every pipeline whose dvc process is gone; a pipeline whose
    dvc process is alive elsewhere (another queue worker) keeps RUNNING. Positive control: the live
    process is this one, under a key shaped like a dvc pipeline's."""
    import os

    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    alive = f"dvc-{os.getpid()}-{tracking._proc_start_time(os.getpid())}"
    gone = "dvc-999999999-1"
    for key in (alive, gone, "mine"):
        spool_one(key, monkeypatch)
    monkeypatch.setenv("DUALMEM_PIPELINE_KEY", "mine")
    assert tracking.publish_spool() == 3
    status = parent_status(tmp_path / "mlflow.db")
    assert status[alive] == ("RUNNING", None)
    assert status[gone][0] == "FINISHED" and status[gone][1] is not None
    assert status["mine"][0] == "FINISHED" and status["mine"][1] is not None


def test_a_failed_stage_marks_its_pipeline_failed(tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    spool_one("dvc-1-1", monkeypatch)  # an earlier stage of the same pipeline
    tracking.fail_pipeline("sequential@finetune-continual", "RuntimeError: boom")
    assert parent_status(tmp_path / "mlflow.db")["dvc-1-1"][0] == "FAILED"
    db = sqlite3.connect(tmp_path / "mlflow.db")
    tags = dict(db.execute("select key, value from tags where key like 'dualmem.fail%'").fetchall())
    assert tags == {"dualmem.failed_stage": "sequential@finetune-continual", "dualmem.failure": "RuntimeError: boom"}
    assert db.execute("select count(*) from runs where name = 'dvc-1-1'").fetchone()[0] == 1  # its child landed


def test_outside_a_dvc_pipeline_a_failure_logs_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.setenv("DUALMEM_PIPELINE_KEY", "process-abc")
    tracking.fail_pipeline("prepare", "bad params")
    assert not (tmp_path / "mlflow.db").exists() and not list(tracking.spool_dir().glob("*/*.json"))
