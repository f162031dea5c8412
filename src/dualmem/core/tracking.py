"""MLflow tracking: one experiment, a parent run per pipeline execution, child runs per
(test, learner, seed).

- Tracking URI: $MLFLOW_TRACKING_URI, else sqlite:///<repo root>/mlflow.db (the real repo root, also
  from a queued experiment's temp copy, via $DVC_ROOT). Artifacts go to <repo root>/mlartifacts.
- A stage collects its runs in memory and, at `flush()`, spools them as one JSON file under
  <repo root>/.dualmem/spool/<pipeline key>/ — no MLflow import, so a stage pays nothing for
  tracking. `publish_spool()` logs every spooled run to MLflow in one process, under an exclusive
  file lock (parallel `dvc queue` workers neither corrupt the SQLite database nor lose runs), and
  removes what it logged; the report stage calls it, `python -m dualmem.core.tracking` does it by hand
  (e.g. after `dvc repro <one stage>`). A stage's results never wait on the tracking store.
- "One pipeline execution" = one `dvc` process: every stage it spawns finds the same parent run,
  keyed by that process's pid and start time. Its status tells the truth: a stage that fails spools a
  failure record and publishes at once (parent FAILED); a publish ends every parent whose `dvc`
  process is over, or is the publisher's own (the report, the last stage), as FINISHED; a parent
  whose pipeline is still running elsewhere (another `dvc queue` worker) stays RUNNING.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dualmem.core.params import params_hash
from dualmem.core.paths import repo_root

EXPERIMENT = "dualmem"
PIPELINE_KEY_TAG = "dualmem.pipeline_key"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repo_root() / 'mlflow.db'}"


def spool_dir() -> Path:
    return repo_root() / ".dualmem" / "spool"


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


def pipeline_running_elsewhere(key: str) -> bool:
    """True while the `dvc` process behind `key` is alive and is not the caller's own pipeline."""
    parts = key.split("-")
    if key == pipeline_key() or len(parts) != 3 or parts[0] != "dvc":
        return False
    try:
        return _proc_start_time(int(parts[1])) == parts[2]
    except (OSError, ValueError, IndexError):
        return False


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
        """Spool this stage's runs (one JSON file, written atomically) for `publish_spool`."""
        if not self.children or os.environ.get("DUALMEM_NO_MLFLOW") == "1":
            return
        spool_record(self.stage, {
            "stage": self.stage, "params": self.params, "common": self.common_tags(),
            "children": [{**vars(child), "artifacts": [str(Path(a).resolve()) for a in child.artifacts]}
                         for child in self.children]})
        self.children.clear()


def spool_record(stage: str, record: dict[str, Any]) -> None:
    folder = spool_dir() / pipeline_key()
    path = folder / f"{time.time_ns()}-{stage.replace('/', '_')}-{uuid.uuid4().hex[:8]}.json"
    with exclusive_lock():  # a publisher removes empty folders under the same lock
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, default=str))
        tmp.replace(path)


def fail_fast_http() -> None:
    """An unreachable tracking server fails in seconds (one retry, 10 s timeout), not after MLflow's
    default minutes of retries, unless the user set these."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


def fail_pipeline(stage: str, reason: str) -> None:
    """A failed stage: its pipeline's parent run is marked FAILED now (with the stage and reason as
    tags). Only inside a `dvc` pipeline, and not with DUALMEM_NO_MLFLOW=1."""
    if os.environ.get("DUALMEM_NO_MLFLOW") == "1" or not pipeline_key().startswith("dvc-"):
        return
    spool_record(stage, {"stage": stage, "failed": reason[:500], "params": {},
                         "common": {**git_info(), "dvc.stage": stage}, "children": []})
    fail_fast_http()
    publish_spool()


def publish_spool(finish_own: bool = False) -> int:
    """Log every spooled run to MLflow (each pipeline key under its own parent run) and remove it.
    With `finish_own` (the pipeline's last stage), this process's own pipeline ends FINISHED too when
    another worker's publish already took its last runs while it was still running. Returns the number
    of child runs logged."""
    if not finish_own and not any(spool_dir().glob("*/*.json")):
        return 0
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.ERROR)
    from mlflow.tracking import MlflowClient

    published = 0
    with exclusive_lock():
        folders = sorted(p for p in spool_dir().glob("*") if p.is_dir())
        client = MlflowClient(tracking_uri())
        experiment_id = experiment(client)
        for folder in folders:
            parent, failed = None, False
            for path in sorted(folder.glob("*.json")):
                record = json.loads(path.read_text())
                parent = parent_run(client, experiment_id, folder.name, record["common"], record["params"])
                for child in record["children"]:
                    log_child(client, experiment_id, parent, record["common"], ChildRun(**child))
                    published += 1
                client.set_tag(parent, "dualmem.last_stage", record["stage"])
                if record.get("failed"):
                    failed = True
                    client.set_tag(parent, "dualmem.failed_stage", record["stage"])
                    client.set_tag(parent, "dualmem.failure", record["failed"])
                path.unlink()
            if parent is not None and (failed or not pipeline_running_elsewhere(folder.name)):
                client.set_terminated(parent, "FAILED" if failed else "FINISHED")
            if not any(folder.iterdir()):
                folder.rmdir()
        if finish_own:
            end_running_parent(client, experiment_id, pipeline_key())
    return published


def end_running_parent(client: Any, experiment_id: str, key: str) -> None:
    found = client.search_runs([experiment_id], max_results=1, filter_string=f"tags.`{PIPELINE_KEY_TAG}` = '{key}'")
    if found and found[0].info.status == "RUNNING":
        client.set_terminated(found[0].info.run_id, "FINISHED")


def log_child(client: Any, experiment_id: str, parent: str, common: dict[str, str], child: ChildRun) -> None:
    from mlflow.entities import Metric

    tags = {**common, **child.tags, "mlflow.parentRunId": parent, "mlflow.runName": child.name}
    run_id = client.create_run(experiment_id, tags=tags, run_name=child.name).info.run_id
    now = int(time.time() * 1000)
    metrics = [Metric(k, float(v), now, 0) for k, v in child.metrics.items()]
    for key, values in child.series.items():
        metrics += [Metric(key, float(v), now, step) for step, v in enumerate(values)]
    log_params(client, run_id, child.params)
    for start in range(0, len(metrics), 500):
        client.log_batch(run_id, metrics=metrics[start : start + 500])
    for artifact in child.artifacts:
        if Path(artifact).exists():
            client.log_artifact(run_id, str(artifact))
    client.set_terminated(run_id)


def experiment(client: Any) -> str:
    found = client.get_experiment_by_name(EXPERIMENT)
    if found is not None:
        return found.experiment_id
    return client.create_experiment(EXPERIMENT, artifact_location=artifact_location())


def parent_run(client: Any, experiment_id: str, key: str, common: dict[str, str], params: dict[str, Any]) -> str:
    """The parent run of the pipeline execution `key` (created on first use)."""
    found = client.search_runs([experiment_id], filter_string=f"tags.`{PIPELINE_KEY_TAG}` = '{key}'", max_results=1)
    if found:
        return found[0].info.run_id
    name = f"pipeline {common['git.commit'][:8]} {time.strftime('%Y-%m-%d %H:%M:%S')}"
    tags = {k: v for k, v in common.items() if k != "dvc.stage"} | {PIPELINE_KEY_TAG: key, "mlflow.runName": name}
    run = client.create_run(experiment_id, tags=tags, run_name=name)
    log_params(client, run.info.run_id, params)
    return run.info.run_id


if __name__ == "__main__":
    print(f"published {publish_spool()} spooled runs to {tracking_uri()}", file=sys.stderr)
