"""Run the whole DAG on a profile (profiles/<name>.yaml; default tiny) in a scratch copy of the project.

`python -m dualmem.tiny [DEST] [--profile quick]` copies dvc.yaml, stages/, src/ and profiles/ into DEST
(default: a new temp dir), makes the profile its params.yaml, runs `dvc repro` there (with the copy's
src/ first on PYTHONPATH) and prints where the report landed. The tests use `run_tiny_pipeline` the
same way.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PROJECT_FILES = ("dvc.yaml", "stages", "src", "profiles")


def project_root() -> Path:
    return Path(__file__).resolve().parents[2]


def tool_env(project: Path | None = None) -> dict[str, str]:
    """This interpreter's bin dir first on PATH, so `dvc` and the stages' `python` are this venv's; with
    `project`, its src/ first on PYTHONPATH, so the stages run the copy's code (not the installed one)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "DVC_ROOT")}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    if project is not None:
        env["PYTHONPATH"] = str(project / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return env


def git_env() -> dict[str, str]:
    """`tool_env()` with an author, so that commits in a scratch copy work on any machine."""
    return {**tool_env(), "GIT_AUTHOR_NAME": "dualmem", "GIT_AUTHOR_EMAIL": "dualmem@localhost",
            "GIT_COMMITTER_NAME": "dualmem", "GIT_COMMITTER_EMAIL": "dualmem@localhost"}


def make_tiny_copy(dest: Path, profile: str = "tiny") -> Path:
    root = project_root()
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src = root / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(src, dest / name)
    shutil.copy2(root / "profiles" / f"{profile}.yaml", dest / "params.yaml")
    if (root / "data" / "sources").is_dir():  # Test 6's downloaded sources (`make corpora`), shared
        (dest / "data").mkdir(exist_ok=True)
        (dest / "data" / "sources").symlink_to(root / "data" / "sources")
    env = git_env()
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "config", "core.analytics", "false"],
                ["git", "add", "-A"],
                ["git", "commit", "-qm", "tiny profile"]):
        subprocess.run(cmd, cwd=dest, check=True, env=env)
    return dest


def run_tiny_pipeline(dest: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["dvc", "repro", *extra], cwd=dest, env=tool_env(dest), capture_output=True, text=True,
                          check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", nargs="?", type=Path, help="scratch directory (default: a new temp dir)")
    parser.add_argument("--profile", default="tiny", help="profiles/<name>.yaml (default: tiny)")
    args = parser.parse_args()
    if not (project_root() / "profiles" / f"{args.profile}.yaml").exists():
        print(f"error: profiles/{args.profile}.yaml does not exist; fix: use tiny or quick", file=sys.stderr)
        sys.exit(2)
    dest = args.dest or Path(tempfile.mkdtemp(prefix=f"dualmem-{args.profile}-"))
    make_tiny_copy(dest, args.profile)
    result = subprocess.run(["dvc", "repro"], cwd=dest, env=tool_env(dest), check=False)
    if result.returncode == 0:
        print(f"\n{args.profile} pipeline done: {dest / 'reports' / 'summary.md'}  (MLflow: {dest / 'mlflow.db'})")
    sys.exit(result.returncode)


if __name__ == "__main__":
    main()
