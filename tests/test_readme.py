"""The README works as written: every command of its bash blocks, in order, against the tiny profile in a
scratch copy after its `dvc repro`, from a shell that ran `source .venv/bin/activate` as the README says.

Each command is run for real, except three kinds that are checked otherwise, each said below: `make`
targets that would rebuild the whole project are dry-run (`make -n`); sweeps and queue workers are
queued and then dropped (running a queue is `tests/test_server.py`'s job); overrides (`-S key=value`)
not run are validated against the project's params.yaml as the first stage would. A command this test
does not know fails it, so a new README command needs a case here."""

from __future__ import annotations

import math
import re
import shlex
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from dualmem.core.errors import ParamsError
from dualmem.tiny import git_env, project_root
from dualmem.validate import validate_params

from .conftest import copy_of, with_overrides

pytestmark = pytest.mark.slow
README = project_root() / "README.md"
SHARED_CACHE = "/mnt/shared/dualmem-cache"  # the README's example remote, replaced by a scratch folder
INLINE = ("dvc plots show", "dvc metrics show")  # named in the README's prose, run here too


def readme_commands(text: str) -> list[str]:
    """The commands of every ```bash block, comments and blank lines dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.splitlines():
            command = line.split(" #")[0].strip()
            if command and not command.startswith("#"):
                commands.append(command)
    return commands


def overrides(command: str) -> list[tuple[str, object]]:
    """The (key, value) pairs of every `-S key=value` of a dvc command, sweeps (`a,b,c`) expanded as
    DVC expands them (a bracketed list is one value)."""
    words = shlex.split(command)
    pairs = []
    for flag, item in zip(words, words[1:], strict=False):
        if flag == "-S":
            key, raw = item.split("=", 1)
            values = [raw] if raw.startswith("[") else raw.split(",")
            pairs += [(key, yaml.safe_load(value)) for value in values]
    return pairs


def experiments(command: str) -> int:
    """How many experiments a queued sweep makes: one per combination of the swept values."""
    per_key = Counter(key for key, _ in overrides(command))
    return math.prod(per_key.values())


class ReadmeShell:
    """The tiny copy, a shell that sourced its .venv (the project's, linked in), a bare git `origin`
    and a scratch folder for the DVC remote."""

    def __init__(self, repo: Path, scratch: Path) -> None:
        self.repo, self.scratch = repo, scratch
        self.default_params = yaml.safe_load((project_root() / "params.yaml").read_text())
        self.ran: list[str] = []
        (repo / ".venv").symlink_to(Path(sys.executable).parent.parent)
        with (repo / ".git" / "info" / "exclude").open("a") as exclude:
            exclude.write(".venv\n")
        origin = scratch / "origin.git"
        self.git("init", "-q", "--bare", str(origin))
        self.git("remote", "add", "origin", str(origin))

    def git(self, *args: str) -> None:
        subprocess.run(["git", *args], cwd=self.repo, env=git_env(), check=True, capture_output=True)

    def sh(self, command: str, cwd: Path | None = None) -> str:
        command = command.replace(SHARED_CACHE, str(self.scratch / "dvc-cache"))
        script = f"source .venv/bin/activate\n{command}" if cwd is None else command
        env = {**git_env(), "PYTHONPATH": str(self.repo / "src")}  # the copy's code, as tool_env(repo)
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd or self.repo, env=env,
                                capture_output=True, text=True, check=False)
        assert result.returncode == 0, f"README command failed: {command}\n{result.stdout[-2000:]}\n" \
                                       f"{result.stderr[-3000:]}"
        return result.stdout + result.stderr

    def validate(self, command: str) -> str:
        for key, value in overrides(command):
            try:  # a misspelt key is an unknown key to the validator; a missing section, a KeyError
                validate_params(with_overrides(self.default_params, **{key.replace(".", "__"): value}))
            except (ParamsError, KeyError) as exc:
                pytest.fail(f"README command {command!r}: {key}={value!r} is rejected: {exc}")
        return "overrides validated"

    # -- one handler per kind of README command; each returns how it was checked
    def make(self, command: str) -> str:
        target = command.split()[1]
        self.sh(f"make -n {target}", cwd=project_root())
        return "dry run (make -n) in the project"

    def activate(self, command: str) -> str:
        assert (self.repo / ".venv" / "bin" / "activate").exists()
        return "every command here runs after it"

    def exp_run(self, command: str) -> str:
        if "--queue" in command:
            return self.queue(command)
        if not any(name == "exp run" for name in self.ran):  # the first: run for real
            out = self.sh(command)
            assert "Reproduced experiment" in out or "Ran experiment" in out, out[-2000:]
            return "run"
        return self.validate(command)

    def queue(self, command: str) -> str:
        self.validate(command)
        self.sh(command)
        status = self.sh("dvc queue status")
        assert status.count("Queued") >= experiments(command), status
        self.sh("dvc queue remove --queued")
        return "queued, listed, removed; overrides validated"

    def queue_start(self, command: str) -> str:
        assert "-j 2" in command
        return "covered by tests/test_server.py (four queued experiments, -j 2)"

    def run(self, command: str) -> str:
        self.sh(command)
        return "run"

    def tuning(self, command: str) -> str:
        self.validate(command.replace(" learners.", " -S learners."))
        self.sh(f"{command} --seeds 1")
        return "run on the tiny profile (1 seed)"

    def export(self, command: str) -> str:
        assert command.startswith("export MLFLOW_TRACKING_URI=http://127.0.0.1:")
        return "covered by tests/test_server.py (workers pointed at the server by this variable)"

    def handler(self, command: str) -> Callable[[str], str] | None:
        cases = [("make ", self.make), ("source .venv/bin/activate", self.activate),
                 ("dvc exp run", self.exp_run), ("dvc queue start", self.queue_start),
                 ("python -m dualmem.tuning", self.tuning), ("export ", self.export),
                 ("dvc exp show", self.run), ("dvc plots ", self.run), ("dvc metrics ", self.run),
                 ("dvc remote add", self.run), ("dvc pull", self.run), ("dvc exp push", self.run)]
        return next((fn for prefix, fn in cases if command.startswith(prefix)), None)


@pytest.fixture(scope="module")
def shell(tiny_baseline, tmp_path_factory) -> ReadmeShell:
    scratch = tmp_path_factory.mktemp("readme")
    return ReadmeShell(copy_of(tiny_baseline, scratch / "tiny"), scratch)


def test_readme_commands_parse() -> None:
    commands = readme_commands(README.read_text())
    assert "make test" in commands and any(c.startswith("dvc exp run -S") for c in commands)
    assert overrides("dvc exp run -S a.b=1,2 -S c='[x,y]'") == [("a.b", 1), ("a.b", 2), ("c", ["x", "y"])]
    assert experiments("dvc exp run --queue -S t=1 -S a.b=1,2,3 -S c=4,5") == 6


def test_override_check_catches_a_bad_key(shell: ReadmeShell) -> None:
    """Positive control: a misspelt key and a bad value are rejected."""
    with pytest.raises(pytest.fail.Exception, match="did you mean 'learners.finetune.epochs'"):
        shell.validate("dvc exp run -S learners.finetune.epoch=1")
    with pytest.raises(pytest.fail.Exception, match="rejected"):
        shell.validate("dvc exp run -S learners.finetune.epochs=-1")


def test_every_readme_command_works(shell: ReadmeShell) -> None:
    text = README.read_text()
    assert all(f"`{command}`" in text for command in INLINE)
    checked, unknown = [], []
    for command in [*readme_commands(text), *INLINE]:
        handler = shell.handler(command)
        if handler is None:
            unknown.append(command)
            continue
        start = time.perf_counter()
        how = handler(command)
        checked.append(f"{command}: {how} ({time.perf_counter() - start:.0f} s)")
        shell.ran.append(" ".join(command.split()[1:3]) if command.startswith("dvc") else command)
    assert not unknown, f"README commands this test does not check (add a case): {unknown}"
    assert (shell.repo / "dvc_plots" / "index.html").exists()
    print("\n".join(checked))
