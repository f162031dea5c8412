"""Where things live on disk. Every stage and the library derive paths from here."""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR = Path("data")
PREPARED_DIR = DATA_DIR / "prepared"
MANIFEST_DIR = PREPARED_DIR / "manifests"
MODELS_DIR = Path("models")
METRICS_DIR = Path("metrics")
RESULTS_DIR = Path("results")
REPORTS_DIR = Path("reports")


def repo_root() -> Path:
    """The real repository root, also from inside a queued DVC experiment's temp copy."""
    dvc_root = os.environ.get("DVC_ROOT")
    if dvc_root:
        return Path(dvc_root).resolve()
    here = Path.cwd().resolve()
    for candidate in (here, *here.parents):
        if (candidate / "dvc.yaml").exists() or (candidate / ".git").exists():
            return candidate
    return here


def manifest_path(seed: int) -> Path:
    return MANIFEST_DIR / f"seed_{seed}.json"


def stream_models_dir(stream: str) -> Path:
    """Everything fit on one stream: models/<stream>/{encoder, <learner>/wake, <learner>/sleep}."""
    return MODELS_DIR / stream


def learner_models_dir(stream: str, learner: str) -> Path:
    """One learner's states on one stream (what its evaluate stages depend on)."""
    return stream_models_dir(stream) / learner


def encoder_dir(stream: str) -> Path:
    return stream_models_dir(stream) / "encoder"


def wake_dir(stream: str, learner: str) -> Path:
    return learner_models_dir(stream, learner) / "wake"


def sleep_dir(stream: str, learner: str) -> Path:
    return learner_models_dir(stream, learner) / "sleep"


def encoder_path(stream: str, seed: int) -> Path:
    return encoder_dir(stream) / f"seed_{seed}.pt"


def wake_state_path(stream: str, learner: str, seed: int, task: int) -> Path:
    return wake_dir(stream, learner) / f"seed_{seed}" / f"task_{task}.pt"


def sleep_state_path(stream: str, learner: str, seed: int, task: int) -> Path:
    return sleep_dir(stream, learner) / f"seed_{seed}" / f"task_{task}.pt"
