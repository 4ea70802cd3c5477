# kfp-bridge: two commands do everything on a fresh machine with Python 3.11 and make.
#   make demo   set up both environments, demo data, models, compiled pipeline; run both workflows once
#   make test   set up both environments; run the whole test suite and ruff
#   make test-fast  the inner loop: every test not marked e2e (docs/quickstart.md says when)
#   make bench  the benchmarks (prints figures; large data, takes minutes)
#   make airflow  the Airflow UI on 127.0.0.1 with the demo's settings (Ctrl-C stops it)
#   make compare  the KFP-only way beside ours over three target dates (one table; minutes)

PYTHON ?= python3.11
VENV := .venv
PVENV := .venv-pipeline
AIRFLOW_PY := $(VENV)/bin/python
PIPELINE_PY := $(PVENV)/bin/python
UV_VERSION := 0.13.9
VAR := var

# Target date of the demo: yesterday in Japan time unless DATE=YYYY-MM-DD is given.
DATE ?= $(shell TZ=Asia/Tokyo date -d yesterday +%F)

.PHONY: docs setup setup-pipeline check-compiled check-date demo airflow test test-airflow test-pipeline test-fast lint compare faketime bench bench-pipeline bench-scale bench-triggerer bench-triggerer-stack bench-dag-parse compile data model bigquery-emulator clean

setup: $(VENV)/.installed $(PVENV)/.installed

# The pipeline environment alone (CI jobs that compile or deploy need nothing else).
setup-pipeline: $(PVENV)/.installed

# The application (prediction_app/, beside dags/) is on the environment's path through a .pth
# file, as the dags folder puts it on Cloud Composer's; the provider is installed editable.
$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	test -x $(AIRFLOW_PY) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(VENV)/bin/uv pip install --python $(AIRFLOW_PY) --compile-bytecode -r requirements.txt -r requirements-dev.txt -e .
	$(AIRFLOW_PY) -c 'import sys, sysconfig; open(sysconfig.get_paths()["purelib"] + "/prediction_app.pth", "w").write(sys.argv[1] + "\n")' $(CURDIR)
	touch $@

$(PVENV)/.installed: pipelines/requirements.txt pipelines/pyproject.toml
	test -x $(PIPELINE_PY) || $(PYTHON) -m venv $(PVENV)
	$(PVENV)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(PVENV)/bin/uv pip install --python $(PIPELINE_PY) --compile-bytecode -r pipelines/requirements.txt -e pipelines
	touch $@

# The BigQuery emulator (local-bigquery, needs Python >= 3.13) for the pipeline's BigQuery
# tests, in its own virtualenv; DuckDB's extensions come from wheels into its own home folder
# (overrides.txt holds DuckDB at the release those wheels exist for; it says why).
# Without a Python 3.13 the emulator tests are skipped (and fail under CI).
BQ_EMULATOR := .venv-bigquery-emulator
BQ_EMULATOR_DIR := tests/pipeline/bigquery_emulator
BQ_EMULATOR_PYTHON ?= $(shell for p in $(wildcard $(HOME)/.pyenv/versions/3.13*/bin/python) python3.13; do \
	"$$p" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' 2>/dev/null && { echo "$$p"; break; }; done)

bigquery-emulator: $(BQ_EMULATOR)/.installed
$(BQ_EMULATOR)/.installed: $(BQ_EMULATOR_DIR)/requirements.txt $(BQ_EMULATOR_DIR)/overrides.txt $(BQ_EMULATOR_DIR)/install_extensions.py | $(VENV)/.installed
	@if [ -z "$(BQ_EMULATOR_PYTHON)" ]; then \
		echo "bigquery-emulator: no Python 3.13 found (set BQ_EMULATOR_PYTHON=...); BigQuery emulator tests will be skipped"; \
	else \
		set -e; \
		test -x $(BQ_EMULATOR)/bin/python || $(BQ_EMULATOR_PYTHON) -m venv $(BQ_EMULATOR); \
		$(VENV)/bin/uv pip install --quiet --python $(BQ_EMULATOR)/bin/python --compile-bytecode -r $(BQ_EMULATOR_DIR)/requirements.txt \
			--overrides $(BQ_EMULATOR_DIR)/overrides.txt; \
		HOME=$(CURDIR)/$(BQ_EMULATOR)/home $(BQ_EMULATOR)/bin/python $(BQ_EMULATOR_DIR)/install_extensions.py; \
		touch $@; \
	fi

WAREHOUSE := $(VAR)/warehouse
MODEL := $(VAR)/models/demo_model.pkl

# Demo source tables (deterministic; 60 JST days ending on DATE) and the demo model (trained once).
# The data window ends on DATE, so a later DATE regenerates (a few seconds); the model stays.
data: $(WAREHOUSE)/.generated-$(DATE)
$(WAREHOUSE)/.generated-$(DATE): | check-date $(PVENV)/.installed
	$(PIPELINE_PY) -m kfp_prediction.demo_data --warehouse $(WAREHOUSE) --size demo --end-date $(DATE)
	touch $@

# The second demo workflow (workflows/morning_ranking.yaml) has a model of its own: a
# gradient-boosted tree from the same code and data (a few seconds).
RANKING_MODEL := $(VAR)/models/ranking_model.pkl
model: $(MODEL) $(RANKING_MODEL)
$(MODEL): | $(WAREHOUSE)/.generated-$(DATE)
	$(PIPELINE_PY) -m kfp_prediction.demo_model --warehouse $(WAREHOUSE) --out $(MODEL)
$(RANKING_MODEL): | $(WAREHOUSE)/.generated-$(DATE)
	$(PIPELINE_PY) -m kfp_prediction.demo_model --warehouse $(WAREHOUSE) --out $(RANKING_MODEL) --kind tree

# Recompiles the checked-in pipeline YAML when its sources changed (a test fails when stale):
# the product's files, then the KFP-only variants of the comparison (benchmarks/kfp_only/).
COMPILED := pipelines/compiled/daily_prediction.yaml
compile: $(COMPILED)
$(COMPILED): $(wildcard pipelines/src/kfp_prediction/*.py pipelines/src/kfp_prediction/*/*.py benchmarks/kfp_only/*.py) | $(PVENV)/.installed
	$(PIPELINE_PY) -m kfp_prediction.compile
	$(PIPELINE_PY) -m benchmarks.kfp_only.compile
	touch $@

# Fails when pipelines/compiled differs from a fresh compile (CI runs it before deploying).
check-compiled: $(PVENV)/.installed
	scripts/check_compiled.sh

# Airflow for the demo: SQLite metadata and logs under var/airflow, this repo's dags/ and
# plugins/, the kfp_default connection on the local backend, the model digest as a Variable;
# links (the local run page) on the api-server `make airflow` starts, on the same host name.
AIRFLOW_ENV = AIRFLOW_HOME=$(CURDIR)/$(VAR)/airflow \
	AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/dags \
	AIRFLOW__CORE__PLUGINS_FOLDER=$(CURDIR)/plugins \
	AIRFLOW__CORE__LOAD_EXAMPLES=False \
	AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=sqlite:///$(CURDIR)/$(VAR)/airflow/airflow.db \
	AIRFLOW_CONN_KFP_DEFAULT='{"conn_type": "kfp", "extra": {"backend": "local"}}' \
	AIRFLOW_CONN_KFP_RECOMMENDATION='{"conn_type": "kfp", "extra": {"backend": "local"}}' \
	AIRFLOW_VAR_DAILY_PREDICTION_MODEL_SHA256=$$(cut -d' ' -f1 $(MODEL).sha256) \
	AIRFLOW_VAR_MORNING_RANKING_MODEL_SHA256=$$(cut -d' ' -f1 $(RANKING_MODEL).sha256) \
	AIRFLOW__API__BASE_URL=http://127.0.0.1:$(AIRFLOW_PORT) \
	KFP_BRIDGE_HOME=$(CURDIR) \
	DAILY_PREDICTION_POLL_SECONDS=1 \
	MORNING_RANKING_POLL_SECONDS=1

# The main job for one target date: the 06:00 JST run of DATE, through real Airflow.
AIRFLOW_DB := $(VAR)/airflow/airflow.db
$(AIRFLOW_DB): $(VENV)/.installed
	@mkdir -p $(VAR)/airflow
	@echo "make demo: creating the Airflow metadata database ($@, SQLite)"
	@$(AIRFLOW_ENV) $(VENV)/bin/airflow db migrate > $(VAR)/airflow/migrate.log 2>&1 \
		|| { tail -n 40 $(VAR)/airflow/migrate.log; exit 1; }
	@touch $@

# DATE is checked before anything uses it (the data generator would name its own flag).
check-date:
	@$(PYTHON) -c "import datetime, sys; datetime.date.fromisoformat(sys.argv[1])" '$(DATE)' \
		2>/dev/null || { echo "make demo: DATE=$(DATE) is not a date (YYYY-MM-DD)"; exit 2; }

# scripts/demo.py runs `airflow dags test`, shows progress and the failing step's error,
# stops everything it started on Ctrl-C/SIGTERM and tidies the metadata DB afterwards.
# Both demo workflows of the registry, each at its own time for DATE, each with its summary:
# WORKFLOW:TABLE (the table is the entry's output.table).
DEMO_WORKFLOWS := daily_prediction:predictions morning_ranking:ranking_predictions
demo: check-date setup data model compile $(AIRFLOW_DB)
	@set -e; for entry in $(DEMO_WORKFLOWS); do \
		dag=$${entry%%:*}; table=$${entry#*:}; log=$(VAR)/airflow/dags-test-$$dag.log; \
		$(AIRFLOW_ENV) $(AIRFLOW_PY) scripts/demo.py --date $(DATE) --dag-id $$dag --log $$log; \
		echo; echo "== $$dag for target date $(DATE) (JST): table $$table =="; \
		$(PIPELINE_PY) -m kfp_prediction.summary --target-date $(DATE) --warehouse $(WAREHOUSE) --table $$table; \
		$(AIRFLOW_ENV) $(AIRFLOW_PY) scripts/demo_run_link.py $(DATE) $$dag; \
		echo "Airflow log of this run: $$log"; \
		echo "Query all dates: $(PIPELINE_PY) -c \"import duckdb; duckdb.sql(\\\"FROM read_parquet('$(WAREHOUSE)/$$table/*.parquet')\\\").show()\""; \
		echo; \
	done

# api-server, scheduler, dag-processor and triggerer on 127.0.0.1:$(AIRFLOW_PORT) with the
# demo's settings; prints the URL and the login. Ctrl-C stops every process it started.
AIRFLOW_PORT ?= 8080
airflow: setup data model compile $(AIRFLOW_DB)
	@$(AIRFLOW_ENV) $(VENV)/bin/airflow db migrate > $(VAR)/airflow/migrate.log 2>&1 \
		|| { tail -n 40 $(VAR)/airflow/migrate.log; exit 1; }
	@$(AIRFLOW_ENV) $(AIRFLOW_PY) scripts/local_airflow.py --port $(AIRFLOW_PORT)

# ruff, and the GitHub Actions workflows through actionlint and zizmor (offline).
lint: setup
	$(VENV)/bin/ruff check .
	scripts/lint_workflows.sh .github/workflows

# tests/e2e and tests/browser start their own PostgreSQL and Airflow stacks; the browser tests
# need Debian's chromium (.ci/run installs it and postgresql; without CI they are skipped);
# tests/compare needs faketime.
# The docs site (Sphinx, as Airflow's providers use; docs/conf.py says why), warnings as errors.
docs: setup
	$(VENV)/bin/sphinx-build -q -W --keep-going -b html docs $(VAR)/docs

# Both cores (pytest-xdist). make test: a worker takes a whole module at a time (its Airflow
# stack or home is set up once), the e2e modules first (tests/conftest.py), so the long waits
# of one stack overlap the other workers' work: three workers, as the stacks mostly wait
# (two kept the machine about 60% busy). Each side prints its 20 slowest tests (where
# the suite's time goes). The two environments' suites run side by side.
AIRFLOW_TESTS := tests/package tests/bridge tests/dag tests/plugin tests/e2e tests/browser tests/ci tests/compare
PIPELINE_TESTS := tests/pipeline tests/contract tests/deploy
XDIST := -n 3 --dist loadscope --no-loadscope-reorder
PIPELINE_XDIST := -n 2 --dist loadscope --no-loadscope-reorder
PYTEST_ARGS := --durations=20

test: setup lint docs bigquery-emulator faketime
	@$(MAKE) --no-print-directory -j2 --output-sync=target test-airflow test-pipeline

test-airflow: setup
	$(AIRFLOW_PY) -m pytest -p no:cacheprovider $(XDIST) $(PYTEST_ARGS) $(AIRFLOW_TESTS)

test-pipeline: setup bigquery-emulator
	$(PIPELINE_PY) -m pytest -p no:cacheprovider $(PIPELINE_XDIST) $(PYTEST_ARGS) $(PIPELINE_TESTS)

# The inner loop: every test not marked e2e (no Airflow stack, `airflow dags test`, browser,
# fresh virtualenv or comparison; see tests/conftest.py). These wait on their stand-ins more
# than they compute, so the Airflow side takes four workers and single tests (a module's
# fixtures are cheap here). Before a push, `make test` (what CI runs) still runs everything.
test-fast: setup bigquery-emulator
	$(VENV)/bin/ruff check .
	@$(MAKE) --no-print-directory -j2 --output-sync=target XDIST="-n 4 --dist load" \
		PYTEST_ARGS='-q --durations=10 -m "not e2e"' \
		AIRFLOW_TESTS="tests/bridge tests/dag tests/plugin tests/ci" test-airflow test-pipeline

# Debian's faketime (benchmarks/compare.py fakes the clock of the processes that compile and
# run the naive KFP-only variant): apt-get as root or with passwordless sudo; otherwise one
# line (the compare test is then skipped, and fails under CI).
faketime:
	@command -v faketime > /dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ]; then sudo=""; elif sudo -n true 2> /dev/null; then sudo="sudo -n"; \
		else echo "faketime is missing: sudo apt-get install -y faketime"; exit 0; fi; \
		DEBIAN_FRONTEND=noninteractive $$sudo apt-get update -q \
			&& DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -q faketime; }

# Both KFP-only variants (kfp.local) and the real DAG (airflow dags test) over the same three
# target dates with one injected failure; prints one side-by-side table (README quotes it).
compare: setup faketime
	$(AIRFLOW_PY) benchmarks/compare.py

bench: bench-pipeline bench-triggerer bench-triggerer-stack bench-dag-parse

bench-pipeline: setup
	$(PIPELINE_PY) benchmarks/bench_pipeline.py

# 10M users (~200M page views over 60 days) generated with DuckDB SQL, then the pipeline at
# 10M and at 1M users with the linear demo model and with a tree ensemble (scoring-bound):
# peak RSS per step and seconds per million users (takes about 20 minutes). Both models run
# even when the first misses its target; the target fails if either missed.
bench-scale: setup
	status=0; \
	$(PIPELINE_PY) benchmarks/bench_scale.py --model-kind linear || status=1; \
	$(PIPELINE_PY) benchmarks/bench_scale.py --model-kind tree || status=1; \
	exit $$status

bench-triggerer: setup
	$(AIRFLOW_PY) benchmarks/bench_triggerer.py

# 200 deferred runs held by a real `airflow triggerer` (real scheduler, dag-processor,
# api-server; ~7 min). Log serving is off, as with remote logging on Cloud Composer.
bench-triggerer-stack: setup
	$(AIRFLOW_PY) benchmarks/bench_triggerer_stack.py --skip-serve-logs

bench-dag-parse: setup
	$(AIRFLOW_PY) benchmarks/bench_dag_parse.py

clean:
	rm -rf $(VAR)
