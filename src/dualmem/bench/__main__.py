"""`python -m dualmem.bench [--skip memory,throughput]`: measure, then write reports/bench.md,
reports/bench.json and reports/bench_memory.png, and log one MLflow run (`bench`).

`python -m dualmem.bench --tune-nprobe 64,96,128,160 [--tune-n 1000000] [--tune-backend faiss_ivfpq]`:
recall (validation probes only, beside exact search's) and batch-1 latency of the configured IVF index at
each nprobe — what `bench.index.nprobe` is chosen from; it writes nothing."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from dualmem.bench import BenchConfig
from dualmem.bench.learners import throughput_bench
from dualmem.bench.memory import memory_bench, pq_min_keys, tune_nprobe
from dualmem.bench.report import bench_markdown, plot_memory, table
from dualmem.bench.stages import stage_records
from dualmem.core.errors import UserError
from dualmem.core.params import load_params
from dualmem.core.paths import REPORTS_DIR, repo_root
from dualmem.core.tracking import ChildRun, StageTracker, publish_spool
from dualmem.encoders import EncoderParams
from dualmem.evals.recall_protocol import RecallParams
from dualmem.runner import learner_names, prepared_dataset
from dualmem.validate import validate_params

REFERENCE_DIR = Path(".dualmem") / "reference"  # where `make reference` runs the reference profile


LEGACY_STAMP = "an earlier `make bench` (machine and date not recorded)"


def stamp() -> str:
    """Where and when a part was measured: this machine, now."""
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{time.strftime('%Y-%m-%d %H:%M %Z')}")


def measure(params: dict, skip: set[str], previous: dict | None = None) -> dict:
    """Measure every part not in `skip`; what is not measured here (a skipped part, the record of a stage
    that has not run in this checkout) is carried over from `previous`, the last bench.json."""
    cfg = BenchConfig.from_params(params)
    config = asdict(cfg)
    del config["index"]["backend"]  # each memory row's backend is its own (`bench.backends`)
    out: dict = {"config": config, "pq_min_keys": pq_min_keys(cfg.index), "measured": {}}
    if "throughput" not in skip:
        prepared_dataset()
        out["throughput"] = [r.as_dict() for r in throughput_bench(params, learner_names(params), cfg.throughput_tasks)]
        out["measured"]["throughput"] = stamp()
    if "memory" not in skip:
        recall = RecallParams.from_params(params)
        rows = memory_bench(EncoderParams.from_params(params).hidden, 784, cfg.memory_sizes, cfg.backends, cfg.index,
                            cfg.probes, recall.noise_std, recall.dropout)
        out["memory"] = [r.as_dict() for r in rows]
        out["measured"]["memory"] = stamp()
    root = repo_root()
    out["stages"] = [asdict(r) for r in stage_records(root)]
    out["reference_stages"] = [asdict(r) for r in stage_records(root / REFERENCE_DIR)]
    if out["stages"]:
        out["measured"]["stages"] = stamp()
    return carry_over(out, previous or {})


def carry_over(out: dict, previous: dict) -> dict:
    """`out` with what it did not measure taken from `previous`, each part with the stamp of its
    measurement: skipped parts whole, and the record of every stage that has not run here since."""
    stamps = previous.get("measured", {})
    for part in ("throughput", "memory"):
        if part == "memory" and previous.get("config") != out["config"]:
            continue  # measured with other backend settings: not this configuration's figures
        if part not in out["measured"] and previous.get(part):
            out[part] = previous[part]
            out["measured"][part] = stamps.get(part, LEGACY_STAMP)
    for key in ("stages", "reference_stages"):
        if key == "reference_stages" and out[key]:
            continue  # one `make reference` is one measurement: an older run's records never fill its gaps
        here = {r["stage"] for r in out[key]}
        kept = [r for r in previous.get(key, []) if r["stage"] not in here]
        out[key] = sorted(kept + out[key], key=lambda r: r["finished_at"])
        if key == "stages" and kept:
            before = stamps.get("stages", LEGACY_STAMP)
            now = out["measured"].get("stages")
            here_n = len(out["stages"]) - len(kept)
            out["measured"]["stages"] = (f"{now} for the {here_n} stage(s) run here; the other {len(kept)} as "
                                         f"recorded before: {before}" if now else before)
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
        previous = json.loads(files[0].read_text()) if files[0].exists() else None
        results = measure(params, set(filter(None, args.skip.split(","))), previous)
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
