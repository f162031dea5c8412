"""`python -m dualmem.bench [--skip memory,throughput]`: measure, then write reports/bench.md,
reports/bench.json and reports/bench_memory.png, and log one MLflow run (`bench`).

`python -m dualmem.bench --tune-nprobe 64,96,128,160 [--tune-n 1000000] [--tune-backend faiss_ivfpq]`:
recall (validation probes only, beside exact search's) and batch-1 latency of the configured IVF index at
each nprobe — what `bench.index.nprobe` is chosen from; it writes nothing."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from dualmem.bench import BenchConfig
from dualmem.bench.learners import throughput_bench
from dualmem.bench.memory import memory_bench, pq_min_keys, tune_nprobe
from dualmem.bench.report import bench_markdown, plot_memory, table
from dualmem.bench.stages import stage_records
from dualmem.encoders import EncoderParams
from dualmem.errors import UserError
from dualmem.evals.recall_protocol import RecallParams
from dualmem.params import load_params
from dualmem.paths import REPORTS_DIR, repo_root
from dualmem.runner import learner_names, prepared_dataset
from dualmem.tracking import ChildRun, StageTracker, publish_spool
from dualmem.validate import validate_params

REFERENCE_DIR = Path(".dualmem") / "reference"  # where `make reference` runs the reference profile


def measure(params: dict, skip: set[str]) -> dict:
    cfg = BenchConfig.from_params(params)
    config = asdict(cfg)
    del config["index"]["backend"]  # each memory row's backend is its own (`bench.backends`)
    out: dict = {"config": config, "pq_min_keys": pq_min_keys(cfg.index)}
    if "throughput" not in skip:
        prepared_dataset()
        out["throughput"] = [r.as_dict() for r in throughput_bench(params, learner_names(params), cfg.throughput_tasks)]
    if "memory" not in skip:
        recall = RecallParams.from_params(params)
        rows = memory_bench(EncoderParams.from_params(params).hidden, 784, cfg.memory_sizes, cfg.backends, cfg.index,
                            cfg.probes, recall.noise_std, recall.dropout)
        out["memory"] = [r.as_dict() for r in rows]
    root = repo_root()
    out["stages"] = [asdict(r) for r in stage_records(root)]
    out["reference_stages"] = [asdict(r) for r in stage_records(root / REFERENCE_DIR)]
    return out


def tune(params: dict, nprobes: list[int], n: int, backend: str, probes: int) -> str:
    cfg = BenchConfig.from_params(params)
    recall = RecallParams.from_params(params)
    rows = tune_nprobe(EncoderParams.from_params(params).hidden, 784, n, backend, cfg.index, nprobes, probes,
                       recall.noise_std, recall.dropout)
    header = ["backend", "N", "nlist", "nprobe", "B/item", "recall (validation)", "exact recall", "Δ",
              "query p50 ms (1)", "query p99 ms (1)"]
    return "\n".join(table(header, [[r.backend, r.n, r.nlist, r.nprobe, r.bytes_per_item, r.recall, r.exact_recall,
                                     r.recall - r.exact_recall, r.query_p50_ms_b1, r.query_p99_ms_b1] for r in rows]))


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
    parser.add_argument("--tune-nprobe", default="", help="comma-separated nprobe values to compare on the "
                        "validation probes (prints a table, writes nothing)")
    parser.add_argument("--tune-n", type=int, default=10**6, help="keys stored for --tune-nprobe")
    parser.add_argument("--tune-backend", default="faiss_ivfpq", choices=["faiss_ivf", "faiss_ivfpq"])
    parser.add_argument("--tune-probes", type=int, default=2000, help="validation probes for --tune-nprobe")
    args = parser.parse_args(argv)
    files = [REPORTS_DIR / "bench.json", REPORTS_DIR / "bench.md"]
    if args.report_only:
        files[1].write_text(bench_markdown(json.loads(files[0].read_text())))
        return
    try:
        params = load_params(args.params)
        validate_params(params)
        if args.tune_nprobe:
            print(tune(params, [int(v) for v in args.tune_nprobe.split(",")], args.tune_n, args.tune_backend,
                       args.tune_probes))
            return
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
