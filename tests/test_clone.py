"""A plain `git clone` of a finished tiny project: no DVC cache, no learner states. Results are committed to
git (cache: false), so the report can be rebuilt from them alone, and one missing is named with its stage.
(Its own module so that `make test` can hand it to the worker that runs the server test: conftest.)"""

import subprocess
from pathlib import Path

import pytest

from dualmem.tiny import git_env, run_tiny_pipeline

pytestmark = pytest.mark.slow


def plain_clone(repo: Path, dest: Path) -> Path:
    subprocess.run(["git", "clone", "-q", str(repo), str(dest)], check=True, env=git_env())
    assert not (dest / ".dvc" / "cache").exists()
    assert not [f for f in (dest / "models").rglob("*") if f.is_file() and f.name != ".gitignore"]
    return dest


def test_a_clone_without_the_dvc_cache_rebuilds_the_report(tiny_baseline, tmp_path):
    """`dvc repro -s report` in the clone writes the same report as the run that made the results."""
    repo = plain_clone(tiny_baseline, tmp_path / "clone")
    for out in ("summary.md", "summary.csv"):
        (repo / "reports" / out).unlink()
    result = run_tiny_pipeline(repo, "-s", "report")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    for out in ("summary.md", "summary.csv"):
        assert (repo / "reports" / out).read_bytes() == (tiny_baseline / "reports" / out).read_bytes(), out


def test_a_clone_missing_a_result_stops_the_report_naming_it(tiny_baseline, tmp_path):
    """Positive control of the test above: with one result file missing from the clone (as a cached output
    would be), the report stage stops, naming the file and the stage that makes it."""
    control = plain_clone(tiny_baseline, tmp_path / "control")
    (control / "results" / "continual" / "finetune.json").unlink()
    failed = run_tiny_pipeline(control, "-s", "report")
    assert failed.returncode != 0
    assert "results/continual/finetune.json is missing" in failed.stderr
    assert "dvc repro -s evaluate_continual@finetune" in failed.stderr
