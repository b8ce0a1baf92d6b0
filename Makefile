# One-command set-up, demo and tests. See README.md.
SHELL := /bin/bash
#: PYTHON the Python that creates .venv (3.11)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := $(CURDIR)/.venv
PY := $(VENV)/bin/python
# GPU=1 installs the CUDA flavour (CUDA torch wheel of the pinned version, Horovod with NCCL); default: 1 when nvcc
# is on PATH and nvidia-smi lists a GPU (a CUDA toolkit alone is no GPU), else the CPU flavour.
#: GPU 1: the CUDA flavour of torch and Horovod with NCCL (default: 1 when nvcc and a GPU are found)
GPU ?= $(if $(and $(shell command -v nvcc),$(shell nvidia-smi -L 2>/dev/null | grep -m1 '^GPU')),1,0)
STAMP := $(VENV)/.installed$(if $(filter 1,$(GPU)),-gpu)
TORCH_VERSION := $(shell sed -n 's/^torch==\([0-9.]*\)+cpu$$/\1/p' requirements.txt)

#: DATASET dataset name (a spec in include/datasets) or spec path, for train, score, drift and clean-data
DATASET ?= churn
#: SPEC dataset name or spec path that check-spec validates (default: DATASET)
SPEC ?= $(DATASET)
#: CONF JSON params of the training run (`make train CONF='{"epochs": 3}'`)
CONF ?= {}
#: DEMO_ROWS rows of the demo's landing batches
DEMO_ROWS ?= 100000
#: DEMO_BAD_FRACTION share of malformed demo rows (they are quarantined)
DEMO_BAD_FRACTION ?= 0.01
# The demo trains on 4 daily batches from 2026-11-01, scores and checks a clean next day, then a drifted one.
DEMO_SCORING_DATE := 2026-11-05
DEMO_DRIFT_DATE := 2026-11-06
#: DATE the logical date scored or checked (default: today, UTC)
DATE ?= $(shell date -u +%F)
#: VERSION the model version rollback makes @champion again
VERSION ?=
#: REASON why rollback moves @champion (tagged on both versions, kept in the history)
REASON ?=
#: ON a date: history says which version held @champion at its end (UTC)
ON ?=
#: INPUT a file or glob to score instead of the spec's batch of DATE
INPUT ?=
#: WINDOW dates per drift check (default: the spec's monitoring.window)
WINDOW ?=
REGISTRY_POOL := mlflow_registry
# Runs a DAG ($(1)) through `airflow dags test` with conf $(2) [and logical date $(3)]; on failure the last line
# is the error that failed it.
DAG_TEST = set -o pipefail; airflow dags test $(1) $(3) --conf "$(2)" 2>&1 | tee $(AIRFLOW_HOME)/last-run.log \
	|| { echo; { grep -E 'ERROR continuous_training: ' $(AIRFLOW_HOME)/last-run.log \
	|| grep -E '^[A-Za-z_.]*(Exception|Error): ' $(AIRFLOW_HOME)/last-run.log; } | tail -1; exit 1; }

export PATH := $(VENV)/bin:$(PATH)
export AIRFLOW_HOME ?= $(CURDIR)/.airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW_CONN_SPARK_DEFAULT ?= {"conn_type": "spark", "host": "local[*]"}
export PYSPARK_PYTHON := $(PY)
# Spark's class-data-sharing archive (made by setup), mapped by every driver JVM; a JVM that does not match it warns
# once and starts as usual. A SPARK_SUBMIT_OPTS of your own replaces this.
SPARK_CLASS_ARCHIVE := $(VENV)/spark-classes.jsa
# Driver JVMs compile with C1 alone (every task is a short spark-submit); `make train SPARK_DRIVER_JIT=` brings C2
# back for runs on millions of rows (see benchmarks/README.md).
#: SPARK_DRIVER_JIT JVM flags of the Spark drivers (empty: the full JIT, for large runs)
SPARK_DRIVER_JIT ?= -XX:TieredStopAtLevel=1
export SPARK_SUBMIT_OPTS ?= -XX:SharedArchiveFile=$(SPARK_CLASS_ARCHIVE) $(SPARK_DRIVER_JIT)

.PHONY: help setup check-spec demo demo-data train score drift rollback history up down test lint bench clean clean-data soak docs

help:  ## List the targets and the variables they read
	@awk -F':.*  ## ' '/^[a-z][a-z-]*:.*  ## /{printf "  make %-11s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@printf '\nVariables (make <target> NAME=value):\n'
	@awk '/^#: /{name=$$2; $$1=$$2=""; sub(/^ +/, ""); printf "  %-18s %s\n", name, $$0}' $(MAKEFILE_LIST)
	@printf '  %-18s %s\n' DRY_RUN '1: clean-data only lists what it would remove'

# The DAG runs these targets start load models with MLflow's pickle deserialization off (the project logs its models
# from code); MLFLOW_ALLOW_PICKLE_DESERIALIZATION=true lets them score a model logged before that.
demo train score drift up soak: export MLFLOW_ALLOW_PICKLE_DESERIALIZATION ?= false

setup: $(STAMP) $(SPARK_CLASS_ARCHIVE)  ## Create .venv with the pinned packages and Horovod (GPU=1: the CUDA flavour)

$(STAMP): requirements.txt pyproject.toml scripts/install_horovod.sh
	bash scripts/check_prerequisites.sh $(PYTHON)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip==25.3"
	$(PY) -m pip install --quiet -r requirements.txt
	if [ "$(GPU)" = 1 ]; then $(PY) -m pip uninstall --quiet --yes torch \
		&& $(PY) -m pip install --quiet "torch==$(TORCH_VERSION)"; fi
	GPU=$(GPU) bash scripts/install_horovod.sh $(VENV)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

$(SPARK_CLASS_ARCHIVE): $(STAMP) scripts/spark_class_archive.py
	SPARK_SUBMIT_OPTS=-XX:ArchiveClassesAtExit=$@.tmp spark-submit --master "local[2]" scripts/spark_class_archive.py \
		> $(VENV)/spark-class-archive.log 2>&1 || (tail -40 $(VENV)/spark-class-archive.log; exit 1)
	mv $@.tmp $@

# A stamp, not airflow.db itself: anything importing Airflow (the tests do) may leave an empty, unmigrated airflow.db.
AIRFLOW_DB := $(AIRFLOW_HOME)/.db-migrated
$(AIRFLOW_DB): $(STAMP)
	mkdir -p $(AIRFLOW_HOME)
	airflow db migrate > $(AIRFLOW_HOME)/db-migrate.log 2>&1 || (cat $(AIRFLOW_HOME)/db-migrate.log; exit 1)
	airflow pools set $(REGISTRY_POOL) 1 "Serialises MLflow registry moves (register, promote)" > /dev/null
	touch $@

check-spec: setup  ## Validate SPEC and list what its source glob finds now, without running a DAG
	$(PY) -m continuous_training.spec_check '$(SPEC)'

demo-data: setup  ## Write the demo's landing batches, scoring days and labels under DATA_DIR
	$(PY) -m continuous_training.demo --rows $(DEMO_ROWS) --bad-fraction $(DEMO_BAD_FRACTION) --scoring-days 2 --drifted-scoring-days 1

demo: demo-data $(AIRFLOW_DB)  ## The whole loop on demo data: train, score, check drift, retrain under the scheduler
	$(call DAG_TEST,training__churn,{})
	$(PY) -m continuous_training.summary --dataset churn
	$(call DAG_TEST,batch_scoring__churn,{},$(DEMO_SCORING_DATE))
	$(PY) -m continuous_training.summary --dataset churn --scored-for $(DEMO_SCORING_DATE)
	$(call DAG_TEST,drift_check__churn,{},$(DEMO_SCORING_DATE))
	$(PY) -m continuous_training.summary --dataset churn --checked-for $(DEMO_SCORING_DATE)
	$(call DAG_TEST,batch_scoring__churn,{},$(DEMO_DRIFT_DATE))
	$(PY) -m continuous_training.summary --dataset churn --scored-for $(DEMO_DRIFT_DATE)
	$(call DAG_TEST,drift_check__churn,{},$(DEMO_DRIFT_DATE))
	$(PY) -m continuous_training.summary --dataset churn --checked-for $(DEMO_DRIFT_DATE)
	bash scripts/run_triggered_training.sh churn $(DEMO_DRIFT_DATE)

train: setup $(AIRFLOW_DB)  ## Train DATASET once through `airflow dags test` (CONF: JSON params) and summarise
	dag=$$($(PY) -m continuous_training.summary --dataset '$(DATASET)' --dag training) || exit 1; \
	$(call DAG_TEST,$$dag,$$($(PY) -c 'import json, sys; print(json.dumps({"dataset": sys.argv[1], **json.loads(sys.argv[2])}))' '$(DATASET)' '$(CONF)'))
	$(PY) -m continuous_training.summary --dataset '$(DATASET)'

score: setup $(AIRFLOW_DB)  ## Score DATASET's batch of DATE with @champion (INPUT: another file) and summarise
	dag=$$($(PY) -m continuous_training.summary --dataset '$(DATASET)' --dag scoring) || exit 1; \
	$(call DAG_TEST,$$dag,$$($(PY) -c 'import json, sys; print(json.dumps({"dataset": sys.argv[1], "input": sys.argv[2] or None}))' '$(DATASET)' '$(INPUT)'),$(DATE))
	$(PY) -m continuous_training.summary --dataset '$(DATASET)' --scored-for '$(DATE)'

drift: setup $(AIRFLOW_DB)  ## Check DATASET's scored window ending at DATE for drift (WINDOW: dates) and summarise
	dag=$$($(PY) -m continuous_training.summary --dataset '$(DATASET)' --dag drift) || exit 1; \
	$(call DAG_TEST,$$dag,$$($(PY) -c 'import json, sys; print(json.dumps({"dataset": sys.argv[1], **({"window": int(sys.argv[2])} if sys.argv[2] else {})}))' '$(DATASET)' '$(WINDOW)'),$(DATE))
	$(PY) -m continuous_training.summary --dataset '$(DATASET)' --checked-for '$(DATE)'

rollback: setup  ## Move DATASET's @champion back to VERSION (default: the version it replaced), tagging REASON
	$(PY) -m continuous_training.registry rollback --dataset '$(DATASET)' $(if $(VERSION),--version '$(VERSION)') \
		$(if $(REASON),--reason '$(REASON)')

history: setup  ## Every move of DATASET's @champion: who, when, why, metrics (ON=date: who held it that day)
	$(PY) -m continuous_training.registry history --dataset '$(DATASET)' $(if $(ON),--on '$(ON)')

up: setup $(AIRFLOW_DB)  ## Start the Airflow services and an MLflow server on 127.0.0.1 (logins in AIRFLOW_HOME)
	$(PY) scripts/services.py up

down:  ## Stop what `make up` started, task processes included
	$(PY) scripts/services.py down

test: setup  ## Run the tests (real Spark, MLflow, Airflow, Horovod, PostgreSQL)
	$(PY) -m pytest -n 2 --no-loadscope-reorder

# detect-secrets over every file git tracks or would add: a finding fails; a genuine test fixture is marked inline
# with `pragma: allowlist secret`.
lint: setup  ## ruff, the layer contracts and detect-secrets
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	git ls-files -z --cached --others --exclude-standard | xargs -0 $(VENV)/bin/detect-secrets-hook

bench: SPARK_DRIVER_JIT :=
bench: setup  ## The benchmarks (figures in benchmarks/README.md)
	$(PY) benchmarks/data_stages.py
	$(PY) benchmarks/training_throughput.py

# The soak (docs/operations.md "What the system survives"): SOAK_DAYS simulated days through the real services, in a workspace
# of its own (SOAK_DIR, ports 8090 and 5010), with a week of retention so that its steady state shows; the services
# stop at the end whatever the outcome. The figures go to $(SOAK_DIR)/report.json.
#: SOAK_DIR the soak's workspace
SOAK_DIR ?= $(CURDIR)/.soak
#: SOAK_DAYS simulated days of the soak
SOAK_DAYS ?= 30
#: SOAK_DRIFT_DAYS days of the soak whose data drifts
SOAK_DRIFT_DAYS ?= 10,20
soak: export AIRFLOW_HOME := $(SOAK_DIR)/airflow
soak: export DATA_DIR := $(SOAK_DIR)/data
soak: export MLFLOW_TRACKING_URI := sqlite:///$(SOAK_DIR)/mlflow.db
soak: export MLFLOW_ARTIFACT_ROOT := $(SOAK_DIR)/artifacts
soak: export AIRFLOW_PORT ?= 8090
soak: export MLFLOW_PORT ?= 5010
soak: export MLFLOW_UI_URL := http://127.0.0.1:$(MLFLOW_PORT)
soak: export TMPDIR := $(SOAK_DIR)/tmp
soak: export SPARK_LOCAL_DIRS := $(SOAK_DIR)/tmp
soak: export RETENTION_DAYS ?= 7
soak: export MLFLOW_RETENTION_DAYS ?= 7
soak: setup  ## SOAK_DAYS simulated days through the real services in SOAK_DIR; report in SOAK_DIR/report.json
	mkdir -p $(AIRFLOW_HOME) $(TMPDIR)
	airflow db migrate > $(AIRFLOW_HOME)/db-migrate.log 2>&1 || (cat $(AIRFLOW_HOME)/db-migrate.log; exit 1)
	airflow pools set $(REGISTRY_POOL) 1 "Serialises MLflow registry moves (register, promote)" > /dev/null
	$(PY) scripts/services.py up
	$(PY) scripts/soak.py --days $(SOAK_DAYS) --drift-days $(SOAK_DRIFT_DAYS) --report $(SOAK_DIR)/report.json; \
		status=$$?; $(PY) scripts/services.py down; exit $$status

# Retention (docs/operations.md "Storage"): removes what the cleanup DAG would, for DATASET or every spec; DRY_RUN=1 only lists it.
clean-data: setup  ## Remove what retention would (DATASET, else every spec; DRY_RUN=1 only lists it)
	$(PY) -m continuous_training.retention $(if $(filter-out file,$(origin DATASET)),--dataset '$(DATASET)') \
		$(if $(DRY_RUN),--dry-run)

# The reference pages generated from the code: docs/configuration.md, docs/spec-reference.md and the spec's JSON Schema.
docs: setup  ## Regenerate docs/configuration.md, docs/spec-reference.md and the spec's JSON Schema
	$(PY) scripts/reference_docs.py

clean:  ## Remove the local Airflow home, MLflow store and data (not .venv)
	rm -rf $(AIRFLOW_HOME) .mlflow data
