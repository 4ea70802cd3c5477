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
	$(VENV)/bin/uv pip install --python $(AIRFLOW_PY) -r requirements.txt -r requirements-dev.txt -e .
	touch $@

$(PVENV)/.installed: pipelines/requirements.txt
	test -x $(PIPELINE_PY) || $(PYTHON) -m venv $(PVENV)
	$(PVENV)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(PVENV)/bin/uv pip install --python $(PIPELINE_PY) -r pipelines/requirements.txt
	touch $@

lint: setup
	$(VENV)/bin/ruff check .

test: setup lint
	$(AIRFLOW_PY) -m pytest tests/bridge tests/dag tests/e2e
	$(PIPELINE_PY) -m pytest tests/pipeline

clean:
	rm -rf $(VAR)
