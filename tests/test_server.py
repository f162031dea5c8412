"""Several workers, one tracking server: `make server` (PostgreSQL + MLflow on loopback), four queued
tiny experiments run by `dvc queue start -j 2` against it, and every run lands once, under its own
pipeline's parent. Skipped, saying why, where PostgreSQL is not installed."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from dualmem.server import Server, pg_bin, start, stop
from dualmem.tiny import tool_env

from .conftest import copy_of

pytestmark = pytest.mark.slow
SWEEP = ("0.5", "2.0", "4.0", "8.0")  # none the baseline's (1.0)
SWEPT = "evaluate_transfer.C"  # reruns Test 4's few cheap stages (every learner's and the random encoder's), the report
TRANSFER = {f"evaluate_transfer@{name}" for name in ("finetune", "joint", "dualmem")}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    try:
        pg_bin("initdb")
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"PostgreSQL is not installed here ({exc}); CI runs this test where it is")
    root = Path(tempfile.mkdtemp(prefix="dualmem-server-", dir="/tmp"))
    root.chmod(0o755)  # PostgreSQL runs as its own user and must reach its data folder
    s = Server(root, free_port(), free_port())
    start(s)
    yield s
    stop(s)
    shutil.rmtree(root, ignore_errors=True)


def queued_experiments(repo: Path, env: dict[str, str]) -> None:
    def dvc(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["dvc", *args], cwd=repo, env=env, capture_output=True, text=True, check=True)

    dvc("exp", "run", "--queue", "-S", f"{SWEPT}={','.join(SWEEP)}")
    dvc("queue", "start", "-j", "2")
    deadline = time.time() + 600
    while time.time() < deadline:
        status = dvc("queue", "status").stdout
        if not any(word in status for word in ("Queued", "Running")):
            return
        time.sleep(5)  # each `dvc queue status` costs about a second of CPU the two workers need
    raise AssertionError(f"queued experiments did not finish:\n{dvc('queue', 'status').stdout}")


def worker_warnings(repo: Path) -> str:
    """What the queued experiments' logs said about tracking (shown when a run is missing)."""
    lines = [f"{log.name}: {line}" for log in (repo / ".dvc" / "tmp" / "exps").rglob("*.out")
             for line in log.read_text(errors="replace").splitlines() if "MLflow" in line or "rror" in line]
    return "\n".join(lines[-20:]) or "(no tracking warnings in the queue logs)"


def stages_reading(repo: Path, key: str) -> set[str]:
    """The stages of dvc.lock with a params dep on `key` of params.yaml or on a section holding it."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    return {name for name, stage in lock.items()
            if any(key == dep or key.startswith(f"{dep}.") for dep in stage.get("params", {}).get("params.yaml", {}))}


def test_queued_workers_share_one_tracking_server(server, tiny_baseline, tmp_path):
    from mlflow.tracking import MlflowClient

    repo = copy_of(tiny_baseline, tmp_path / "tiny")  # the baseline logged to the copy's own database
    env = {**tool_env(repo), "MLFLOW_TRACKING_URI": server.uri, "OMP_NUM_THREADS": "1",
           "MLFLOW_HTTP_REQUEST_TIMEOUT": "60"}  # a busy test machine: slow answers are not the subject here
    queued_experiments(repo, env)
    exps = json.loads(subprocess.run(["dvc", "exp", "show", "--json"], cwd=repo, env=env, capture_output=True,
                                     text=True, check=True).stdout)
    assert "Failed" not in json.dumps(exps)

    spooled = sorted(p.name for p in (repo / ".dualmem" / "spool").glob("*/*.json"))
    assert not spooled, f"runs left unpublished: {spooled}\n{worker_warnings(repo)}"

    client = MlflowClient(server.uri)
    experiment = client.get_experiment_by_name("dualmem")
    assert experiment.artifact_location.startswith("mlflow-artifacts:")  # served by the server
    runs = client.search_runs([experiment.experiment_id], max_results=5000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == len(SWEEP)  # one per queued pipeline
    assert all(p.info.status == "FINISHED" and p.info.end_time for p in parents), [
        (p.data.tags.get("dvc.exp_name"), p.info.status) for p in parents]
    by_parent = {p.info.run_id: [c for c in children if c.data.tags["mlflow.parentRunId"] == p.info.run_id]
                 for p in parents}
    assert sum(len(v) for v in by_parent.values()) == len(children)  # no orphan
    readers = stages_reading(repo, SWEPT)  # Test 4's stages
    assert readers >= TRANSFER
    swept = set()
    for parent, mine in by_parent.items():
        names = [c.info.run_name for c in mine]
        assert len(names) == len(set(names)), "a run was logged twice"
        stages = {c.data.tags["dvc.stage"] for c in mine}
        assert TRANSFER | {"report"} <= stages, f"parent {parent}: {sorted(stages)}\n{worker_warnings(repo)}"
        assert not {s for s in stages if s.startswith(("sequential", "consolidate", "evaluate"))} - readers
        assert sum(c.data.tags["dvc.stage"] in TRANSFER for c in mine) >= 3  # runs per learner and seed
        swept |= {v for c in mine for k, v in c.data.params.items() if k == SWEPT}
    assert swept == set(SWEEP)
    assert yaml.safe_load((repo / "params.yaml").read_text())["evaluate_transfer"]["C"] == 1.0
    assert os.path.isdir(Path(server.root) / ".dualmem" / "server-artifacts")
