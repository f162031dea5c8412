"""Every DVC stage's deps cover every project module its script imports, transitively — so editing any
code a stage runs (say `EpisodicMemory.read`) reruns that stage instead of leaving stale results.

Imports are read statically (every `import`/`from` anywhere in a module, function bodies included). A
stage run with `--learner NAME` also imports `dualmem/learners/NAME.py` (learners are imported by name,
see dualmem.learners.learner_class), and that file's own imports."""

from __future__ import annotations

import ast
import copy
import re
from functools import cache
from pathlib import Path

import pytest
import yaml

from dualmem.learners import available
from dualmem.lm.text_learner import available as text_learners
from dualmem.tiny import project_root

ROOT = project_root()
SRC = ROOT / "src"


def module_file(module: str) -> Path | None:
    base = SRC / Path(*module.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.exists():
            return candidate
    return None


@cache
def project_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    return {m for m in found if m.split(".")[0] == "dualmem"}


def closure(*starts: Path) -> set[Path]:
    """Every project module file reached from `starts` (a package's import runs its __init__ too)."""
    seen: set[Path] = set(p for p in starts if p.is_relative_to(SRC))
    todo = list(starts)
    while todo:
        for module in project_imports(todo.pop()):
            parts = module.split(".")
            for i in range(1, len(parts) + 1):
                found = module_file(".".join(parts[:i]))
                if found and found not in seen:
                    seen.add(found)
                    todo.append(found)
    return seen


def expand(dvc: dict, params: dict) -> list[tuple[str, str, list[str]]]:
    """(stage name, cmd, deps) for every stage, matrices expanded with params."""
    def resolve(text: str, item: dict) -> str:
        return re.sub(r"\$\{item\.(\w+)\}", lambda m: str(item[m.group(1)]), text)

    out = []
    for name, stage in dvc["stages"].items():
        items = [{}]
        for key, values in stage.get("matrix", {}).items():
            if isinstance(values, str):  # ${run.learners}
                node = params
                for part in values.strip("${}").split("."):
                    node = node[part]
                values = node
            items = [{**item, key: v} for item in items for v in values]
        for item in items:
            label = name + ("@" + "-".join(str(v) for v in item.values()) if item else "")
            out.append((label, resolve(stage["cmd"], item), [resolve(d, item) for d in stage.get("deps", [])]))
    return out


def learner_file(script: Path, name: str) -> Path:
    """The learner module a `--learner NAME` stage imports by name (Test 6's stages: a text learner)."""
    package = ("lm", "learners") if script.name.startswith("lm_") else ("learners",)
    return SRC.joinpath("dualmem", *package, f"{name}.py")


def uncovered(dvc: dict, params: dict) -> dict[str, list[str]]:
    """Stage -> the project modules its script imports that none of its deps covers."""
    missing: dict[str, list[str]] = {}
    for label, cmd, deps in expand(dvc, params):
        script = ROOT / re.search(r"python (\S+\.py)", cmd).group(1)
        starts = [script]
        learner = re.search(r"--learner (\S+)", cmd)
        if learner and learner_file(script, learner.group(1)).exists():  # not a reference column (random)
            starts.append(learner_file(script, learner.group(1)))
        dep_paths = [ROOT / d for d in deps]
        for module in sorted(closure(*starts)):
            if not any(module == d or module.is_relative_to(d) for d in dep_paths):
                missing.setdefault(label, []).append(str(module.relative_to(ROOT)))
        if not any(script == d for d in dep_paths):
            missing.setdefault(label, []).append(str(script.relative_to(ROOT)))
    return missing


@pytest.fixture(scope="module")
def pipeline():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["run"]["learners"] = available()  # every learner file, whether the default run lists it or not
    params["consolidate"]["learners"] = ["dualmem"]
    params["lm"]["learners"] = text_learners()
    return dvc, params


def test_every_stage_depends_on_every_module_it_imports(pipeline):
    dvc, params = pipeline
    assert uncovered(dvc, params) == {}


def test_a_missing_dependency_is_caught(pipeline):
    """Positive control: drop the episodic memory from the few-shot stage's deps, and the check fails."""
    dvc, params = pipeline
    broken = copy.deepcopy(dvc)
    broken["stages"]["evaluate_fewshot"]["deps"].remove("src/dualmem/memory")
    missing = uncovered(broken, params)
    assert "src/dualmem/memory/episodic.py" in missing["evaluate_fewshot@dualmem"]


def test_a_learner_stage_depends_on_its_own_file_only(pipeline):
    """Adding or editing one learner file reruns only that learner's stages."""
    dvc, params = pipeline
    learner_files = {f"src/dualmem/learners/{n}.py" for n in available()}
    learner_files |= {f"src/dualmem/lm/learners/{n}.py" for n in text_learners()}
    for label, _, deps in expand(dvc, params):
        own = {d for d in deps if d in learner_files}
        name = label.split("@", 1)[1].rsplit("-", 1)[0] if "@" in label else None
        package = "lm/learners" if label.startswith("lm_") else "learners"
        assert own <= {f"src/dualmem/{package}/{name}.py"}, (label, own)


@cache
def imports_torch(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        if any(name.split(".")[0] == "torch" for name in names):
            return True
    return False


def torch_stages_without_threads(dvc: dict, params: dict) -> list[str]:
    """Stages whose code imports torch but whose params omit `run.threads` (the thread count changes
    torch's sums, so a stage that computes with it must rerun when it changes). `prepare` depends on the
    whole params.yaml."""
    out = []
    for name, stage in dvc["stages"].items():
        script = ROOT / re.search(r"python (\S+\.py)", stage["cmd"]).group(1)
        declared = {p if isinstance(p, str) else next(iter(p)) for p in stage.get("params", [])}
        if "params.yaml" in declared or "run.threads" in declared or "run" in declared:
            continue
        if any(imports_torch(m) for m in closure(script) if m.suffix == ".py"):
            out.append(name)
    return out


def test_every_stage_that_computes_with_torch_reruns_when_the_thread_count_changes(pipeline):
    dvc, params = pipeline
    assert torch_stages_without_threads(dvc, params) == []
    broken = copy.deepcopy(dvc)  # positive control
    broken["stages"]["sequential"]["params"].remove("run.threads")
    assert torch_stages_without_threads(broken, params) == ["sequential"]
