"""DVC stage `lm_prepare` (Test 6): each text domain from its pinned, checksummed source, cut into fixed
train / validation / test slices under data/text/ (`dualmem.lm.corpora`)."""

from __future__ import annotations

import _interpreter  # noqa: F401  (first: re-executes under the project's .venv if needed)
import argparse
import json

from dualmem.core.cli import run_stage
from dualmem.lm.corpora import prepare_corpora
from dualmem.lm.pipeline import TEXT_DIR, LMParams


def main(params: dict, args: argparse.Namespace) -> None:
    cfg = LMParams.from_params(params)
    summary = prepare_corpora(cfg.corpus, TEXT_DIR)
    (TEXT_DIR / "summary.json").write_text(json.dumps({"slices": cfg.corpus.sizes, "domains": summary}, indent=2))
    for domain, facts in summary.items():
        print(f"{domain}: {facts['text_bytes']:,} bytes of text, sha256 {facts['text_sha256'][:16]}…")


if __name__ == "__main__":
    run_stage(main, lambda args: [TEXT_DIR])
