"""Deterministic seeding: same params and seed give identical results on the same machine."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from typing import Any

import torch
from threadpoolctl import threadpool_limits

from dualmem.core.params import Section


def derive_seed(*parts: object) -> int:
    """A stable 31-bit seed from any parts (strings, ints), independent of PYTHONHASHSEED."""
    blob = "/".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:4], "big") & 0x7FFFFFFF


def seeded_generator(*parts: object) -> torch.Generator:
    generator = torch.Generator()
    generator.manual_seed(derive_seed(*parts))
    return generator


def set_global_determinism() -> None:
    """torch.use_deterministic_algorithms(True), less its one other effect: setting the inductor
    compiler's flag, whose import costs about 1.3 s of every stage's start-up (no stage compiles)."""
    torch._C._set_deterministic_algorithms(True, warn_only=False)


def run_threads(params: Mapping[str, Any]) -> int:
    """run.threads: the CPU threads of every stage. Kernels split their sums by thread, so the count changes
    the numbers: it is a param, the same on every machine, not one thread per core."""
    return Section.of(params, "run").integer("threads", 1)


THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def set_threads(params: Mapping[str, Any]) -> None:
    """run.threads for every thread pool a stage computes with: torch's, and the BLAS and OpenMP pools of
    numpy, SciPy and scikit-learn (Test 4's probe), whatever OMP_NUM_THREADS the shell had. Pools already
    loaded are limited now; libraries loaded later, and child processes, read the variables."""
    threads = run_threads(params)
    torch.set_num_threads(threads)
    os.environ.update(dict.fromkeys(THREAD_VARIABLES, str(threads)))
    threadpool_limits(limits=threads)
