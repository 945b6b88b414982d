# causelog — developer entry points. `make run` and `make test` are the two commands a fresh
# machine needs (see README.md).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: help install kafka-jars run up down status test unit integration security faults fuzz lint bench clean helm helm-check

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)  ## create .venv and install causelog with dev tools

kafka-jars:  ## fetch the Kafka broker jars from Maven Central (once)
	@bash deploy/kafka/kafka.sh fetch

run: install kafka-jars  ## start broker + worker on the embedded store, load the sample, show the timeline
	@h="$${CAUSELOG_HOME:-.causelog}"; mkdir -p "$$h" && cp -n deploy/sample/topology.yaml deploy/sample/identities.yaml "$$h"/ 2>/dev/null || true
	$(VENV)/bin/causelog up --detach
	$(VENV)/bin/causelog produce deploy/sample/changes.jsonl --wait 120
	$(VENV)/bin/causelog timeline --since '2026-11-27 00:00' --until '2026-11-27 02:14'
	$(VENV)/bin/causelog why orders-db --at '2026-11-27 02:14' --window 3h
	$(VENV)/bin/causelog status
	@echo "stack is running; try: $(VENV)/bin/causelog --help   (stop with: make down)"

up: install kafka-jars  ## start the stack in the background
	$(VENV)/bin/causelog up --detach

down:  ## stop the stack
	$(VENV)/bin/causelog down

status:  ## broker, worker, lag, rows
	$(VENV)/bin/causelog status

# pytest exits 5 when it collected nothing; that is a failure of the suite, not a pass.
test: install kafka-jars  ## unit + corpus + integration + security + fault + fuzz smoke tests (start their own Kafka brokers)
	$(PY) -m pytest -q -ra --durations=10 $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 1; fi; exit $$rc

unit: install  ## fast tests only (no broker)
	$(PY) -m pytest -q tests/unit tests/corpus

integration: install kafka-jars  ## integration tests only
	$(PY) -m pytest -q tests/integration

security: install kafka-jars  ## access-control probes and query limits (a real broker and worker; part of `make test`)
	$(PY) -m pytest -q tests/security

faults: install kafka-jars  ## fault suite only (stops and restarts a broker of its own; ~4 min)
	$(PY) -m pytest -q tests/faults

# Inputs per fuzz target; `make test` runs the same targets with 1,000 each (tests/fuzz).
FUZZ_INPUTS ?= 100000
fuzz: install  ## every fuzz target with FUZZ_INPUTS inputs: prints inputs tried and crashes per target
	$(PY) tests/fuzz/runner.py --inputs $(FUZZ_INPUTS)

lint: install  ## ruff + mypy
	$(VENV)/bin/ruff check pipeline tests
	$(VENV)/bin/ruff format --check pipeline || true
	$(VENV)/bin/mypy pipeline

# Query latency sizes (stored events); e.g. make bench BENCH_SIZES=1000000 for a quicker run.
BENCH_SIZES ?= 1000000,10000000
# Where the benches leave their results for tests/bench/summary.py (emptied at the start).
BENCH_OUT ?= .bench
# Each bench runs even if the one before failed (`-`); the summary at the end says what was not
# measured and then fails the target.
bench: install kafka-jars  ## correlation, worker vs raw baseline, freshness, rules, query latency; then one table of figures vs targets
	@rm -rf $(BENCH_OUT) && mkdir -p $(BENCH_OUT)
	-$(PY) tests/bench/bench_correlate.py --json $(BENCH_CORRELATE_ARGS) > $(BENCH_OUT)/correlate.out; cat $(BENCH_OUT)/correlate.out
	-$(PY) tests/bench/bench_e2e.py --out $(BENCH_OUT)/e2e.json $(BENCH_ARGS)
	-$(PY) tests/bench/bench_freshness.py --out $(BENCH_OUT)/freshness.json $(BENCH_FRESHNESS_ARGS)
	-$(PY) tests/bench/bench_rules.py --json $(BENCH_RULES_ARGS) > $(BENCH_OUT)/rules.out; cat $(BENCH_OUT)/rules.out
	-$(PY) tests/bench/bench_queries.py --sizes $(BENCH_SIZES) $(BENCH_QUERY_ARGS)
	$(PY) tests/bench/summary.py $(BENCH_OUT)

# Helm is built from its Go module (cached in deploy/helm/.bin); the chart is linted, rendered with
# deploy/helm/causelog/ci/test-values.yaml and the manifests checked against Kubernetes schemas.
HELM_VERSION ?= v3.21.4
HELM         := deploy/helm/.bin/helm-$(HELM_VERSION)
K8S_VERSION  ?= 1.33.0
CHART        := deploy/helm/causelog

$(HELM):
	bash deploy/helm/install-helm.sh $(HELM_VERSION)

helm: $(HELM)  ## build helm from its Go module once (deploy/helm/.bin)

helm-check: install $(HELM)  ## helm lint + helm template of deploy/helm/causelog, manifests validated offline
	$(HELM) lint --strict $(CHART) -f $(CHART)/ci/test-values.yaml
	$(HELM) template causelog $(CHART) -f $(CHART)/ci/test-values.yaml > deploy/helm/.bin/rendered.yaml
	$(PY) -m kubernetes_validate --strict -k $(K8S_VERSION) deploy/helm/.bin/rendered.yaml

clean:  ## remove local state (.causelog) and caches
	-$(VENV)/bin/causelog down
	rm -rf .causelog .pytest_cache .mypy_cache .ruff_cache
