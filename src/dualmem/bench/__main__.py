"""`python -m dualmem.bench [--skip memory,throughput]`: measure, then write reports/bench.md,
reports/bench.json and reports/bench_memory.png, and log one MLflow run (`bench`)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from dualmem.bench import BenchConfig
from dualmem.bench.learners import throughput_bench
from dualmem.bench.memory import PQ_MIN_KEYS, memory_bench
from dualmem.bench.report import bench_markdown, plot_memory
from dualmem.bench.stages import stage_records
from dualmem.encoders import EncoderParams
from dualmem.errors import UserError
from dualmem.evals.recall_protocol import RecallParams
from dualmem.knn_index import IndexConfig
from dualmem.params import load_params
from dualmem.paths import REPORTS_DIR, repo_root
from dualmem.runner import learner_names, prepared_dataset
from dualmem.tracking import ChildRun, StageTracker, publish_spool
from dualmem.validate import validate_params

REFERENCE_DIR = Path(".dualmem") / "reference"  # where `make reference` runs the reference profile


def measure(params: dict, skip: set[str]) -> dict:
    cfg = BenchConfig.from_params(params)
    out: dict = {"config": asdict(cfg), "pq_min_keys": PQ_MIN_KEYS}
    if "throughput" not in skip:
        prepared_dataset()
        out["throughput"] = [r.as_dict() for r in throughput_bench(params, learner_names(params), cfg.throughput_tasks)]
    if "memory" not in skip:
        recall = RecallParams.from_params(params)
        index = IndexConfig(**asdict(cfg.index))
        rows = memory_bench(EncoderParams.from_params(params).hidden, 784, cfg.memory_sizes, cfg.backends, index,
                            cfg.probes, recall.noise_std, recall.dropout)
        out["memory"] = [r.as_dict() for r in rows]
    root = repo_root()
    out["stages"] = [asdict(r) for r in stage_records(root)]
    out["reference_stages"] = [asdict(r) for r in stage_records(root / REFERENCE_DIR)]
    return out


def log_to_mlflow(params: dict, results: dict, files: list[Path]) -> None:
    tracker = StageTracker("bench", params)
    for row in results.get("throughput", []):
        metrics = {k: row[k] for k in ("seconds", "samples_per_second", "bare_samples_per_second", "ratio")
                   if row[k] is not None}
        tracker.add_run("bench/throughput", row["learner"], 0, {"bench": params["bench"]}, metrics)
    for row in results.get("memory", []):
        metrics = {k: v for k, v in row.items() if k not in ("backend", "n") and v is not None}
        tracker.add_run("bench/memory", row["backend"], 0, {"bench": params["bench"], "n": row["n"]}, metrics,
                        n=str(row["n"]))
    tracker.add(ChildRun(name="bench/report", params={"bench": params["bench"]}, tags={"test": "bench"},
                         artifacts=files))
    tracker.flush()
    publish_spool()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: memory, throughput")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite bench.md from the last bench.json, measuring nothing")
    args = parser.parse_args(argv)
    files = [REPORTS_DIR / "bench.json", REPORTS_DIR / "bench.md"]
    if args.report_only:
        files[1].write_text(bench_markdown(json.loads(files[0].read_text())))
        return
    try:
        params = load_params(args.params)
        validate_params(params)
        results = measure(params, set(filter(None, args.skip.split(","))))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    REPORTS_DIR.mkdir(parents=True, exist_ok=True)
    files[0].write_text(json.dumps(results, indent=2))
    if results.get("memory"):
        files.append(plot_memory(results["memory"], REPORTS_DIR / "bench_memory.png"))
    files[1].write_text(bench_markdown(results))
    log_to_mlflow(params, results, files)
    print(files[1].read_text())


if __name__ == "__main__":
    main()
