# kfp-bridge: two commands do everything on a fresh machine with Python 3.11 and make.
#   make demo   set up both environments, demo data, model, compiled pipeline; run the DAG once
#   make test   set up both environments; run the whole test suite and ruff
#   make bench  the benchmarks (prints figures; large data, takes minutes)

PYTHON ?= python3.11
VENV := .venv
PVENV := .venv-pipeline
AIRFLOW_PY := $(VENV)/bin/python
PIPELINE_PY := $(PVENV)/bin/python
UV_VERSION := 0.13.9
VAR := var

# Target date of the demo: yesterday in Japan time unless DATE=YYYY-MM-DD is given.
DATE ?= $(shell TZ=Asia/Tokyo date -d yesterday +%F)

.PHONY: setup demo test lint bench compile data model clean

setup: $(VENV)/.installed $(PVENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	test -x $(AIRFLOW_PY) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(VENV)/bin/uv pip install --python $(AIRFLOW_PY) --compile-bytecode -r requirements.txt -r requirements-dev.txt -e .
	touch $@

$(PVENV)/.installed: pipelines/requirements.txt pipelines/pyproject.toml
	test -x $(PIPELINE_PY) || $(PYTHON) -m venv $(PVENV)
	$(PVENV)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(PVENV)/bin/uv pip install --python $(PIPELINE_PY) --compile-bytecode -r pipelines/requirements.txt -e pipelines
	touch $@

WAREHOUSE := $(VAR)/warehouse
MODEL := $(VAR)/models/demo_model.pkl

# Demo source tables (deterministic; 60 JST days ending on DATE) and the demo model (trained once).
# The data window ends on DATE, so a later DATE regenerates (a few seconds); the model stays.
data: $(WAREHOUSE)/.generated-$(DATE)
$(WAREHOUSE)/.generated-$(DATE): | $(PVENV)/.installed
	$(PIPELINE_PY) -m kfp_prediction.demo_data --warehouse $(WAREHOUSE) --size demo --end-date $(DATE)
	touch $@

model: $(MODEL)
$(MODEL): | $(WAREHOUSE)/.generated-$(DATE)
	$(PIPELINE_PY) -m kfp_prediction.demo_model --warehouse $(WAREHOUSE) --out $(MODEL)

# Recompiles the checked-in pipeline YAML (a test fails when it is stale).
compile: $(PVENV)/.installed
	$(PIPELINE_PY) -m kfp_prediction.compile

lint: setup
	$(VENV)/bin/ruff check .

test: setup lint
	$(AIRFLOW_PY) -m pytest tests/bridge tests/dag tests/e2e
	$(PIPELINE_PY) -m pytest tests/pipeline

clean:
	rm -rf $(VAR)
