"""DVC stage `train_encoder@<stream>`: one encoder per seed, fit under the leakage rule
(`encoder.mode`: first_task = the stream's first task only; random = untrained)."""

from __future__ import annotations

import _interpreter  # noqa: F401  (first: re-executes under the project's .venv if needed)
import argparse

from tqdm import tqdm

from dualmem.core import paths
from dualmem.core.cli import run_stage
from dualmem.core.tracking import StageTracker
from dualmem.data.splits import STREAMS
from dualmem.encoders import EncoderParams, save_encoder, train_stream_encoder
from dualmem.runner import open_stream, prepared_dataset, stream_seeds


def main(params: dict, args: argparse.Namespace) -> None:
    cfg = EncoderParams.from_params(params)
    seeds = stream_seeds(params, args.stream)
    prepared_dataset()
    tracker = StageTracker(args.stage, params)
    for seed in tqdm(seeds, desc=f"encoders ({args.stream})"):
        stream = open_stream(params, args.stream, seed)
        encoder, fitted = train_stream_encoder(stream, cfg)
        save_encoder(encoder, fitted, cfg, paths.encoder_path(args.stream, seed))
        tracker.add_run(f"encoder/{args.stream}", "encoder", seed, {"encoder": params["encoder"]},
                        stream=args.stream, fitted_classes=str(fitted))
    tracker.flush()


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stream", choices=STREAMS, required=True)


if __name__ == "__main__":
    run_stage(main, lambda args: [paths.encoder_dir(args.stream)], configure,
              stage=lambda args: f"train_encoder@{args.stream}")
