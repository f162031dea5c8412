"""Bad input exits with code 2 and one line naming the key (or path) and the fix; nothing is written."""

import runpy
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from dualmem.tiny import project_root

from .conftest import with_overrides

STAGES = project_root() / "stages"


@dataclass
class Outcome:
    returncode: int
    stderr: str


def run_stage(tmp_path: Path, params: dict, stage: str = "prepare.py", *args: str, monkeypatch=None,
              capsys=None) -> Outcome:
    """Runs a stage script as __main__ in this process (fast); see the subprocess test below too."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [stage, *args])
    try:
        runpy.run_path(str(STAGES / stage), run_name="__main__")
        code = 0
    except SystemExit as exc:
        code = exc.code
    return Outcome(code, capsys.readouterr().err)


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "fix:" in lines[0]


SEQUENTIAL = ("sequential.py", "--stream", "continual", "--learner")


@pytest.mark.parametrize(
    ("overrides", "key", "stage"),
    [
        ({"run__seeds": "0-9"}, "run.seeds", ("prepare.py",)),
        ({"run__seeds": []}, "run.seeds", ("prepare.py",)),
        ({"run__seeds": [0, 1.5]}, "run.seeds", ("prepare.py",)),
        ({"protocol__openworld__seeds": [0, "one"]}, "protocol.openworld.seeds", ("prepare.py",)),
        ({"protocol__continual__tasks": [[0, 1], [2, 3]]}, "protocol.continual.tasks", ("prepare.py",)),
        ({"protocol__continual__tasks": [[0, 1], [1, 2], [3, 4, 5, 6, 7, 8, 9]]}, "protocol.continual.tasks",
         ("prepare.py",)),
        ({"data__source": "cifar"}, "data.source", ("prepare.py",)),
        ({"run__threads": 0}, "run.threads", ("prepare.py",)),
        ({"run__threads": "two"}, "run.threads", (*SEQUENTIAL, "finetune")),
        ({"run__learners": ["finetune", "ewc2"]}, "run.learners", (*SEQUENTIAL, "ewc2")),
        ({"learners__finetune__lr": "fast"}, "learners.finetune.lr", (*SEQUENTIAL, "finetune")),
        ({"learners__finetune__epoch": 3}, "learners.finetune.epoch", (*SEQUENTIAL, "finetune")),
        ({"learners__dualmem__episodic__k": 0}, "learners.dualmem.episodic.k", (*SEQUENTIAL, "dualmem")),
        ({"learners__dualmem__episodic__input_weight": 1.0}, "learners.dualmem.episodic.input_weight",
         ("prepare.py",)),
        ({"memory__budget_bytes": "big"}, "memory.budget_bytes", (*SEQUENTIAL, "finetune")),
        ({"memory__budget_bytes": 0}, "memory.budget_bytes", (*SEQUENTIAL, "finetune")),
        ({"consolidate__learners": ["finetune"]}, "consolidate.learners",
         ("consolidate.py", "--stream", "continual", "--learner", "finetune")),
        ({"run__learners": ["finetune", "joint"]}, "consolidate.learners",
         ("consolidate.py", "--stream", "continual", "--learner", "dualmem")),
    ],
)
def test_bad_params_fail_cleanly(tmp_path, tiny_params, overrides, key, stage, monkeypatch, capsys):
    result = run_stage(tmp_path, with_overrides(tiny_params, **overrides), *stage, monkeypatch=monkeypatch,
                       capsys=capsys)
    assert_one_line_error(result, f"'{key}'")
    assert not (tmp_path / "data").exists() and not (tmp_path / "models").exists()


def test_an_unknown_key_names_the_nearest_valid_one(tmp_path, tiny_params, monkeypatch, capsys):
    params = with_overrides(tiny_params, learners__finetune__epoch=3)
    result = run_stage(tmp_path, params, *SEQUENTIAL, "finetune", monkeypatch=monkeypatch, capsys=capsys)
    assert_one_line_error(result, "'learners.finetune.epoch' is not a known key", "learners.finetune.epochs")


def bad_values(config: dict, prefix: str = "") -> list[tuple[str, object]]:
    """(dotted key, a wrong-typed value) for every leaf of a params mapping (a learner's section, or all)."""
    out = []
    for key, value in config.items():
        if isinstance(value, dict):
            out += bad_values(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", [1] if isinstance(value, str) else "oops"))
    return out


def test_bad_params_of_every_learner_fail_cleanly(tmp_path, tiny_params, monkeypatch, capsys):
    """Each leaf of each learner's section, given a value of the wrong type: exit 2, one line, its key."""
    from dualmem.learners import available

    for name in available():
        for leaf, value in bad_values(tiny_params["learners"][name]):
            params = with_overrides(tiny_params, **{f"learners__{name}__{leaf.replace('.', '__')}": value})
            result = run_stage(tmp_path, params, *SEQUENTIAL, name, monkeypatch=monkeypatch, capsys=capsys)
            assert_one_line_error(result, f"'learners.{name}.{leaf}'")


def test_missing_dataset_names_path_and_fix_in_a_real_process(tmp_path, tiny_params):
    params = with_overrides(tiny_params, data__source="fashion_mnist", data__fashion_mnist_dir="/nonexistent/fm")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = subprocess.run([sys.executable, str(STAGES / "prepare.py")], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert_one_line_error(result, "/nonexistent/fm", "apt-get install dataset-fashion-mnist")
    assert not (tmp_path / "data").exists()


def test_missing_params_file(tmp_path, tiny_params, monkeypatch, capsys):
    result = run_stage(tmp_path, tiny_params, "prepare.py", "--params", "nope.yaml",
                       monkeypatch=monkeypatch, capsys=capsys)
    assert_one_line_error(result, "nope.yaml")


def test_later_stage_without_inputs_says_which_stage_to_run(tmp_path, tiny_params, monkeypatch, capsys):
    from dualmem.runner import prepared_dataset

    prepared_dataset.cache_clear()
    result = run_stage(tmp_path, tiny_params, "train_encoder.py", "--stream", "continual",
                       monkeypatch=monkeypatch, capsys=capsys)
    assert_one_line_error(result, "data/prepared", "dvc repro prepare")
    assert not (tmp_path / "models").exists()


def test_every_leaf_of_params_yaml_fails_fast_in_the_first_stage(tmp_path, default_params, monkeypatch, capsys):
    """The first stage (`prepare`) validates the whole file: each leaf of params.yaml, given a value of
    the wrong type, stops it with exit 2 and one line naming that key — before any data is read."""
    cases = bad_values(default_params)
    assert len(cases) > 140  # every section, every learner
    for key, value in cases:
        result = run_stage(tmp_path, with_overrides(default_params, **{key.replace(".", "__"): value}),
                           "prepare.py", monkeypatch=monkeypatch, capsys=capsys)
        assert_one_line_error(result, f"'{key}'")
        assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(("key", "nearest"), [
    ("learners__finetune__epoch", "learners.finetune.epochs"),
    ("evaluate_recall__onlin", "evaluate_recall.online"),
    ("bench__index__nprob", "bench.index.nprobe"),
    ("evaluate_fewshot__head__stepz", "evaluate_fewshot.head.steps"),
    ("evaluate_continual", "evaluate_recall"),  # a whole section nobody reads
    ("learners__ewc2", "learners.ewc"),
])
def test_an_unknown_key_anywhere_fails_in_the_first_stage(tmp_path, default_params, key, nearest, monkeypatch,
                                                          capsys):
    result = run_stage(tmp_path, with_overrides(default_params, **{key: 3}), "prepare.py",
                       monkeypatch=monkeypatch, capsys=capsys)
    assert_one_line_error(result, f"'{key.replace('__', '.')}'", f"'{nearest}'")


def test_make_check_validates_without_running_anything(tmp_path, default_params):
    from dualmem.validate import main

    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(default_params))
    main(["--params", str(good)])
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(with_overrides(default_params, evaluate_recall__sizes=[0])))
    with pytest.raises(SystemExit) as exc:
        main(["--params", str(bad)])
    assert exc.value.code == 2


def test_a_stage_started_by_another_python_runs_with_the_projects(tmp_path):
    """`dvc` started from a shell whose `python` is not the project's: the stage re-executes itself under
    .venv/bin/python. Positive control: with the re-exec disabled, the same command cannot even import."""
    system_python = Path("/usr/bin/python3")
    venv = project_root() / ".venv" / "bin" / "python"
    if not system_python.exists() or not venv.exists():
        pytest.skip("needs /usr/bin/python3 and the project's .venv")
    cmd = [str(system_python), str(STAGES / "prepare.py"), "--params", "nope.yaml"]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert_one_line_error(result, "nope.yaml")
    control = subprocess.run(cmd, cwd=tmp_path, env={**env, "DUALMEM_STAGE_REEXEC": "1"}, capture_output=True,
                             text=True, timeout=120)
    if control.returncode == 0 or "No module named" not in control.stderr:
        pytest.skip("/usr/bin/python3 can import the project by itself; the control proves nothing here")


def test_missing_text_source_names_path_and_fix_in_a_real_process(tmp_path, tiny_params):
    """Test 6: a pinned wheel not downloaded stops lm_prepare with one line (the wheel and `make corpora`)."""
    params = with_overrides(tiny_params, lm__sources_dir=str(tmp_path / "no-sources"))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = subprocess.run([sys.executable, str(STAGES / "lm_prepare.py")], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert_one_line_error(result, "no-sources", "make corpora")
    assert not (tmp_path / "data" / "text").exists()


@pytest.mark.parametrize(("overrides", "key"), [
    ({"lm__domains": ["prose", "poetry"]}, "lm.domains"),
    ({"lm__consolidate": []}, "lm.consolidate"),
    ({"lm__slices__train": 10}, "lm.slices.train"),
])
def test_bad_text_params_fail_the_first_stage(tmp_path, tiny_params, monkeypatch, capsys, overrides, key):
    """Test 6's params are validated with the whole file by `prepare`: exit 2, one line naming the key."""
    result = run_stage(tmp_path, with_overrides(tiny_params, **overrides), "prepare.py",
                       monkeypatch=monkeypatch, capsys=capsys)
    assert_one_line_error(result, f"'{key}'")
