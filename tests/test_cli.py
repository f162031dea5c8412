"""What every stage shares (`dualmem.core.cli.run_stage`): its record for `make bench`, safe when queue workers
run the same stage at once, and its thread counts taken from `run.threads`, not from the machine or shell."""

from __future__ import annotations

import json
import os

import pytest
import torch
import yaml
from threadpoolctl import threadpool_limits

from dualmem.core import cli
from dualmem.core.seeding import THREAD_VARIABLES


def _write_records(args: tuple[str, int, bool]) -> str:
    """One queue worker's stage records: `writes` records of one stage, as `record_stage` writes them
    or (shared_tmp, the positive control) through one temporary name that every worker shares."""
    root, writes, shared_tmp = args
    os.environ["DVC_ROOT"] = root
    try:
        for i in range(writes):
            if shared_tmp:
                tmp = cli.stage_records_dir() / ".sequential@finetune-openworld.tmp"
                tmp.write_text(json.dumps({"i": i}))
                tmp.replace(cli.stage_records_dir() / "sequential@finetune-openworld.json")
            else:
                cli.record_stage("sequential@finetune-openworld", "finished", float(i))
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    return ""


@pytest.mark.parametrize("shared_tmp", [False, True], ids=["record_stage", "shared-tmp-control"])
def test_stage_records_survive_queue_workers_writing_the_same_stage(tmp_path, shared_tmp):
    """`dvc queue start -j 2` runs the same stage of two experiments at once, and both write their record
    into the real repository's `.dualmem/stages/`; neither may fail for the other (CI saw one do so)."""
    import multiprocessing

    (tmp_path / ".dualmem" / "stages").mkdir(parents=True)
    with multiprocessing.get_context("fork").Pool(4) as pool:
        errors = [e for e in pool.map(_write_records, [(str(tmp_path), 400, shared_tmp)] * 4) if e]
    if shared_tmp:
        assert errors, "the positive control (one shared temporary name) should have collided"
        return
    assert not errors, errors
    assert json.loads((tmp_path / ".dualmem" / "stages" / "sequential@finetune-openworld.json").read_text())
    assert not list((tmp_path / ".dualmem" / "stages").glob(".*.tmp"))


@pytest.mark.parametrize("threads", [1, 3])
def test_a_stage_computes_at_run_threads_whatever_the_core_count(tmp_path, tiny_params, monkeypatch, threads):
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump({**tiny_params, "run": {**tiny_params["run"], "threads": threads}}))
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    for variable in THREAD_VARIABLES:  # set by the stage; restored after the test
        monkeypatch.setenv(variable, "2")
    before, seen = torch.get_num_threads(), []
    try:
        torch.set_num_threads(2)
        with threadpool_limits(limits=None):  # the BLAS and OpenMP pools restored on exit
            cli.run_stage(lambda params, args: seen.append(torch.get_num_threads()), lambda args: [],
                          argv=["--params", str(params_file)], stage="probe")
    finally:
        torch.set_num_threads(before)
    assert seen == [threads]
    assert json.loads((tmp_path / ".dualmem" / "stages" / "probe.json").read_text())["status"] == "finished"


POOLS = """
import json, sys
import sklearn.linear_model  # Test 4's probe: scikit-learn's OpenMP and SciPy's BLAS loaded, as in its stage
import torch
from threadpoolctl import threadpool_info
from dualmem.core.seeding import set_threads
if sys.argv[1] == "set":
    set_threads({"run": {"threads": 1}})
print(json.dumps([torch.get_num_threads(), *[p["num_threads"] for p in threadpool_info()]]))
"""


@pytest.mark.parametrize("call", ["set", "control"])
def test_run_threads_sets_every_pool_whatever_the_shell_says(call):
    """A shell with OMP_NUM_THREADS=2 and run.threads 1: torch and every BLAS and OpenMP pool compute at 1
    (Test 4's probe gave other numbers when only torch followed run.threads). Control: without
    `set_threads`, the pools keep the shell's 2."""
    import subprocess
    import sys

    env = {**os.environ, **dict.fromkeys(THREAD_VARIABLES, "2")}
    out = subprocess.run([sys.executable, "-c", POOLS, call], env=env, capture_output=True, text=True, check=True)
    counts = json.loads(out.stdout)
    assert len(counts) >= 4  # torch, numpy's and SciPy's OpenBLAS, an OpenMP runtime
    assert set(counts) == ({1} if call == "set" else {2}), counts
