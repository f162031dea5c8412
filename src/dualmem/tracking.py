"""MLflow tracking: one experiment, a parent run per pipeline execution, child runs per
(test, learner, seed).

- Tracking URI: $MLFLOW_TRACKING_URI, else sqlite:///<repo root>/mlflow.db (the real repo root, also
  from a queued experiment's temp copy, via $DVC_ROOT). Artifacts go to <repo root>/mlartifacts.
- A stage collects its runs in memory and writes them in one go under an exclusive file lock, so
  parallel `dvc queue` workers neither corrupt the SQLite database nor lose runs.
- "One pipeline execution" = one `dvc` process: every stage it spawns finds the same parent run,
  keyed by that process's pid and start time.
"""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dualmem.params import params_hash
from dualmem.paths import repo_root

EXPERIMENT = "dualmem"
PIPELINE_KEY_TAG = "dualmem.pipeline_key"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repo_root() / 'mlflow.db'}"


def artifact_location() -> str:
    return (repo_root() / "mlartifacts").as_uri()


@contextmanager
def exclusive_lock() -> Iterator[None]:
    lock_path = repo_root() / "mlflow.db.lock"
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _proc_start_time(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[19]


def _parent_pid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def pipeline_key() -> str:
    """Identifies the pipeline execution this stage belongs to (the enclosing dvc process)."""
    if os.environ.get("DUALMEM_PIPELINE_KEY"):
        return os.environ["DUALMEM_PIPELINE_KEY"]
    try:
        pid = os.getppid()
        while pid > 1:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if any(Path(part.decode(errors="ignore")).name == "dvc" or part.endswith(b"/dvc") for part in cmdline[:3]):
                return f"dvc-{pid}-{_proc_start_time(pid)}"
            pid = _parent_pid(pid)
    except OSError:
        pass
    return f"process-{uuid.uuid4().hex[:12]}"


def git_info() -> dict[str, str]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=Path.cwd(), capture_output=True, text=True,
                                  timeout=10, check=False).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    commit = git("rev-parse", "--verify", "-q", "HEAD") or "none"
    dirty = "true" if git("status", "--porcelain", "--untracked-files=no") else "false"
    return {"git.commit": commit, "git.dirty": dirty}


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = str(value)[:6000]
    return out


def log_params(client: Any, run_id: str, params: Mapping[str, Any]) -> None:
    from mlflow.entities import Param

    flat = [Param(k, v) for k, v in flatten(params).items()]
    for start in range(0, len(flat), 100):
        client.log_batch(run_id, params=flat[start : start + 100])


@dataclass
class ChildRun:
    name: str
    params: dict[str, Any]
    metrics: dict[str, float] = field(default_factory=dict)
    series: dict[str, list[float]] = field(default_factory=dict)  # step = task index
    tags: dict[str, str] = field(default_factory=dict)
    artifacts: list[Path] = field(default_factory=list)


class StageTracker:
    """Collects a stage's child runs and writes them all at `flush()`."""

    def __init__(self, stage: str, params: dict[str, Any]) -> None:
        self.stage = stage
        self.params = params
        self.children: list[ChildRun] = []

    def add(self, run: ChildRun) -> None:
        self.children.append(run)

    def add_run(self, test: str, learner: str, seed: int, params: Mapping[str, Any],
                metrics: Mapping[str, float] | None = None, series: Mapping[str, list[float]] | None = None,
                **tags: str) -> None:
        """A child run named <test>/<learner>/seed<seed>, tagged with test, learner and seed."""
        self.add(ChildRun(
            name=f"{test}/{learner}/seed{seed}",
            params={**params, "seed": seed, "learner": learner},
            metrics=dict(metrics or {}),
            series=dict(series or {}),
            tags={"test": test, "learner": learner, "seed": str(seed), **tags},
        ))

    def common_tags(self) -> dict[str, str]:
        tags = {**git_info(), "dvc.stage": self.stage, "params_hash": params_hash(self.params)}
        if os.environ.get("DVC_EXP_NAME"):
            tags["dvc.exp_name"] = os.environ["DVC_EXP_NAME"]
        return tags

    def flush(self) -> None:
        if not self.children or os.environ.get("DUALMEM_NO_MLFLOW") == "1":
            return
        logging.getLogger("mlflow").setLevel(logging.ERROR)
        logging.getLogger("alembic").setLevel(logging.ERROR)
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        common = self.common_tags()
        with exclusive_lock():
            client = MlflowClient(tracking_uri())
            experiment_id = self._experiment(client)
            parent = self._parent(client, experiment_id, common)
            now = int(time.time() * 1000)
            for child in self.children:
                tags = {**common, **child.tags, "mlflow.parentRunId": parent,
                        "mlflow.runName": child.name}
                run = client.create_run(experiment_id, tags=tags, run_name=child.name)
                run_id = run.info.run_id
                metrics = [Metric(k, float(v), now, 0) for k, v in child.metrics.items()]
                for key, values in child.series.items():
                    metrics += [Metric(key, float(v), now, step) for step, v in enumerate(values)]
                log_params(client, run_id, child.params)
                for start in range(0, len(metrics), 500):
                    client.log_batch(run_id, metrics=metrics[start : start + 500])
                for artifact in child.artifacts:
                    client.log_artifact(run_id, str(artifact))
                client.set_terminated(run_id)
            client.set_tag(parent, "dualmem.last_stage", self.stage)
        self.children.clear()

    def _experiment(self, client: Any) -> str:
        experiment = client.get_experiment_by_name(EXPERIMENT)
        if experiment is not None:
            return experiment.experiment_id
        return client.create_experiment(EXPERIMENT, artifact_location=artifact_location())

    def _parent(self, client: Any, experiment_id: str, common: dict[str, str]) -> str:
        key = pipeline_key()
        found = client.search_runs([experiment_id], filter_string=f"tags.`{PIPELINE_KEY_TAG}` = '{key}'",
                                   max_results=1)
        if found:
            return found[0].info.run_id
        name = f"pipeline {common['git.commit'][:8]} {time.strftime('%Y-%m-%d %H:%M:%S')}"
        tags = {**common, PIPELINE_KEY_TAG: key, "mlflow.runName": name}
        tags.pop("dvc.stage")
        run = client.create_run(experiment_id, tags=tags, run_name=name)
        log_params(client, run.info.run_id, self.params)
        return run.info.run_id

