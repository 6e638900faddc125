# NexaNest market data pipeline. `make help` lists the targets.
# Two commands for a newcomer on a fresh machine:
#   make run    set up everything, start the local stack, run the pipeline on a synthetic feed
#   make test   set up everything, start the local stack, run lint, types and all tests

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STACK := deploy/local/stack.sh
DB ?= auth
# Options for `make run`, e.g. make run RUN_ARGS="--symbols 200 --rate 10000"
RUN_ARGS ?= --symbols 100 --rate 2000
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help setup env venv lock services stack-up stack-down stack-status migrate run test lint \
        services-up services-down services-status \
        unit integration community-up run-community bench bench-backfill bench-quick bench-record bench-plots bench-throughput bench-profile bench-venv db-start db-stop db-status \
        db-connect-postgres db-connect-timescale db-logs db-backup db-restore prometheus-status alerts-test helm-check clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-22s %s\n", $$1, $$2}'

# --- setup -------------------------------------------------------------------

env: ## generate .env with local credentials (an existing one only gains the entries it lacks)
	@deploy/local/env.sh

$(BIN)/python:
	@deploy/local/python.sh "$(PYTHON)" "$(VENV)"

# The editable install maps the nexanest.* namespace onto the top-level folders
# through a link tree of the modules; it is redone when a module is added or
# removed (the stamp's name carries a hash of the module and migration list) or
# dependencies change.
MODULES_HASH := $(shell find schemas pipeline ops consumers producers cli services \( -name '*.py' -o -name '*.sql' \) 2>/dev/null | sort | md5sum | cut -c1-12)
STAMP := $(VENV)/.installed-$(MODULES_HASH)

$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	@rm -f $(VENV)/.installed-*
	@echo "[python] installing nexanest and its dependencies into $(VENV) (log: $(VENV)/install.log)"
	@$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]' --config-settings editable_mode=strict \
	  >$(VENV)/install.log 2>&1 || { cat $(VENV)/install.log; exit 1; }
	@touch $@

venv: $(STAMP) ## create .venv and install the package with dev tools

lock: ## re-resolve the newest allowed versions into constraints.txt
	@rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv && .lock-venv/bin/pip install -q -U pip \
	  && .lock-venv/bin/pip install -q '.[dev]' && .lock-venv/bin/pip freeze --exclude nexanest > constraints.txt \
	  && rm -rf .lock-venv && echo "constraints.txt updated"

services: ## install the services (apt packages, TimescaleDB build, Kafka jars)
	@$(STACK) install

setup: env services venv ## everything `run` and `test` need, idempotent

# --- the stack ---------------------------------------------------------------

# KAFKA_BROKERS=3: the stack runs the three-node SASL/SCRAM Kafka cluster
# (deploy/local/kafka-cluster.sh, 19092-19094) instead of the single PLAINTEXT broker
# on 9092; processes connect to it as a user of their role (README "Kafka security").
KAFKA_BROKERS ?= 1
ifeq ($(filter $(KAFKA_BROKERS),1 3),)
$(error KAFKA_BROKERS is 1 (the single broker) or 3 (the SASL/SCRAM cluster), not '$(KAFKA_BROKERS)')
endif
STACK_SERVICES := $(if $(filter 3,$(KAFKA_BROKERS)),postgres timescaledb redis kafka-cluster prometheus,)

stack-up: env ## start PostgreSQL, TimescaleDB, Redis, Kafka and Prometheus with its exporters (installs what is missing); KAFKA_BROKERS=3: the SASL cluster instead of the single broker
	@$(STACK) up $(STACK_SERVICES)

stack-down: ## stop every service of the stack (and the HTTP services first)
	@if [ -x $(BIN)/nexanest ]; then deploy/local/services.sh stop; fi
	@$(STACK) down

stack-status: ## one line per service
	@$(STACK) status

# --- the HTTP services (services/) -------------------------------------------

services-up: venv stack-up migrate ## start auth (:8001), portfolio (:8002), market-data (:8003), notifications (:8004), analytics (:8005) in the background
	@deploy/local/services.sh start

services-down: ## stop the HTTP services
	@deploy/local/services.sh stop

services-status: ## one line per HTTP service (up = /readyz answers 200)
	@deploy/local/services.sh status

# The community edition (timescaledb.license = 'timescale') on 127.0.0.1:5434, built
# from source once (a few minutes) from NEXANEST_TIMESCALEDB_COMMUNITY_SOURCE (a path
# or URL of the 2.19.3 release tarball; default: the upstream release). `make test`
# starts it for the edition's tests; `make run` does not need it.
community-up: env ## build (once) and start the community-edition TimescaleDB cluster on 5434
	@$(STACK) up timescaledb-community

# A three-node Kafka cluster beside the single broker (issue 16): brokers on
# 127.0.0.1:19092-19094, replication factor 3, min.insync.replicas=2, SASL/SCRAM
# with ACLs. A process connects as the user of its role with the variables
# `deploy/local/kafka-cluster.sh env producer|consumer|ops` prints (README "Kafka security").
.PHONY: kafka-cluster-up kafka-cluster-down kafka-cluster-status
kafka-cluster-up: ## start the three-node local Kafka cluster (19092-19094), installing the jars if needed
	@deploy/local/kafka-cluster.sh start && deploy/local/kafka-cluster.sh status

kafka-cluster-down: ## stop the three-node Kafka cluster (the single broker on 9092 is not touched)
	@deploy/local/kafka-cluster.sh stop

kafka-cluster-status: ## one line per node of the Kafka cluster
	@deploy/local/kafka-cluster.sh status

# A TimescaleDB that fails over (issue 16): a primary and a streaming replica under
# Patroni and etcd, PostgreSQL on 127.0.0.1:5441/5442 (Patroni REST 8441/8442, etcd
# 2479). Point the pipeline at it with a multi-host DSN (README: "TimescaleDB high availability").
.PHONY: timescale-ha-up timescale-ha-down timescale-ha-status
timescale-ha-up: env ## start the Patroni-managed TimescaleDB primary + replica (5441/5442), installing etcd and Patroni if needed
	@deploy/local/timescale-ha.sh start && deploy/local/timescale-ha.sh status

timescale-ha-down: ## stop the TimescaleDB HA cluster (the single TimescaleDB on 5433 is not touched)
	@deploy/local/timescale-ha.sh stop

timescale-ha-status: ## one line per member of the TimescaleDB HA cluster, and etcd
	@deploy/local/timescale-ha.sh status

db-start: env ## start the databases (PostgreSQL, TimescaleDB, Redis)
	@$(STACK) up postgres timescaledb redis

db-stop: ## stop the databases
	@$(STACK) down postgres timescaledb redis

# `nexanest status` replaces `stack.sh status` here: it probes what the processes
# serve (versions, edition, lag, DLQ, backups), read-only; stack.sh status still
# shows the processes themselves. STATUS_ARGS=--json for scripts.
db-status: ## services up/down with version and port, TimescaleDB edition, lag, ticks/s, DLQ, last backup (exit 1 if down)
	@$(BIN)/nexanest status $(STATUS_ARGS)

db-connect-postgres: ## psql into a service database (DB=auth|portfolio|analytics|notifications)
	@PGPASSWORD=$$(grep -E '^NEXANEST_POSTGRES_PASSWORD=' .env | cut -d= -f2-) \
	  psql -h 127.0.0.1 -p 5432 -U nexanest -d $(DB)

db-connect-timescale: ## psql into TimescaleDB as the owner role
	@PGPASSWORD=$$(grep -E '^NEXANEST_TIMESCALE_PASSWORD=' .env | cut -d= -f2-) \
	  psql -h 127.0.0.1 -p 5433 -U timescale -d timescale

db-logs: ## the last lines of every service log (SERVICE=name -f to follow one)
	@if [ -n "$(SERVICE)" ]; then $(STACK) logs $(SERVICE) -f; else \
	  for s in postgres timescaledb redis kafka prometheus; do echo "== $$s"; $(STACK) logs $$s 2>/dev/null | tail -n 20; done; fi

# Backups: backups/<UTC time>/ (NEXANEST_BACKUP_DIR moves them), one pg_dump -Fc per
# database with MANIFEST and SHA256SUMS; the newest BACKUP_KEEP complete ones are kept.
BACKUP_KEEP ?= 7
db-backup: ## pg_dump every database (TimescaleDB's procedure) into backups/<UTC time>/ with checksums; keeps the newest BACKUP_KEEP (7)
	@deploy/local/backup.sh --keep $(BACKUP_KEEP)

db-restore: ## restore BACKUP=backups/<UTC time> into empty databases, after verifying its checksums
	@if [ -z "$(BACKUP)" ]; then echo "usage: make db-restore BACKUP=backups/<UTC time>  (deploy/local/restore.sh --help)" >&2; exit 2; fi
	@deploy/local/restore.sh "$(BACKUP)"

prometheus-status: ## Prometheus, its exporters and the health of every scrape target
	@deploy/local/prometheus.sh status; deploy/local/prometheus.sh targets

alerts-test: ## promtool check and unit-test the alert rules (deploy/prometheus); amtool check Alertmanager's configs
	@promtool check rules deploy/prometheus/rules/*.yml && promtool test rules deploy/prometheus/tests/*.yml
	@config=$$(mktemp) && trap 'rm -f "$$config"' EXIT \
	  && deploy/local/prometheus.sh alertmanager-config http://127.0.0.1:8004/alerts >"$$config" \
	  && amtool check-config "$$config" deploy/compose/alertmanager.yml

helm-check: ## lint, render and kubeconform-validate the Helm chart (deploy/helm; installs helm and kubeconform once)
	@deploy/helm/check.sh

# --- the pipeline --------------------------------------------------------------

migrate: venv ## apply schema migrations and create Kafka topics
	@$(BIN)/nexanest migrate && $(BIN)/nexanest topics

ifeq ($(KAFKA_BROKERS),3)
run:
	@echo "make run: nexanest run needs the producer's and the consumer's Kafka rights in one process; on the SASL cluster run them apart (README \"A local Kafka cluster\")" >&2; exit 2
else
run: setup stack-up migrate services-up ## set up, start the stack and the HTTP services, run producer + consumer with a live view (Ctrl-C stops)
	@$(BIN)/nexanest run $(RUN_ARGS)
endif

# The same, against the community cluster's database `timescale` (native continuous
# aggregates and policies instead of the pipeline's rollups): the two TimescaleDB
# DSNs of .env with port 5434, passed in the environment.
COMMUNITY_DSNS = NEXANEST_TIMESCALE__DSN="$$(sed -n 's/^NEXANEST_TIMESCALE__DSN=//p' .env | sed 's/:5433\//:5434\//')" \
  NEXANEST_TIMESCALE__ADMIN_DSN="$$(sed -n 's/^NEXANEST_TIMESCALE__ADMIN_DSN=//p' .env | sed 's/:5433\//:5434\//')"

run-community: setup stack-up community-up ## as `run`, with TimescaleDB's community edition (5434) as the database
	@$(COMMUNITY_DSNS) $(BIN)/nexanest migrate && $(BIN)/nexanest topics
	@$(COMMUNITY_DSNS) $(BIN)/nexanest run $(RUN_ARGS)

# --- quality -----------------------------------------------------------------

lint: venv ## ruff (lint + format check) and mypy --strict
	@$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy

unit: venv ## unit tests only (no services needed)
	@$(BIN)/pytest -m "not integration" $(PYTEST_ARGS)

test: setup stack-up community-up migrate lint ## set up, start the stack (and the community cluster), lint, and run every test
	@$(BIN)/pytest $(PYTEST_ARGS)

# --- benchmarks (issue 5) ----------------------------------------------------
bench-backfill: venv ## backfill rate (1M year-old ticks, Parquet file -> table, kill -9 + resume) next to the live rate, one run
	@$(BIN)/pytest -p no:cacheprovider tests/producers/feeds/test_backfill.py -k million -s -q 2>&1 | grep -E "^backfill:|passed|failed|Error"

# The suite compares the pipeline with tools that must not enter the project's
# .venv (Quix Streams, profilers): they live in a separate, git-ignored
# .venv-bench built from the pinned benchmarks/requirements-bench.txt.
BENCH_VENV ?= .venv-bench
BENCH_REQ := benchmarks/requirements-bench.txt
BENCH_STAMP := $(BENCH_VENV)/.installed-$(shell md5sum $(BENCH_REQ) 2>/dev/null | cut -c1-12)
# Extra options for the suite, e.g. make bench BENCH_ARGS="--ticks 2000000 --rates 5000,20000,50000"
BENCH_ARGS ?=
# Options for bench-profile, e.g. make bench-profile PROFILE_ARGS="--ticks 500000 --native"
PROFILE_ARGS ?=

$(BENCH_STAMP): $(BENCH_REQ)
	@[ -x $(BENCH_VENV)/bin/python ] || { echo "[bench] creating $(BENCH_VENV)"; $(PYTHON) -m venv $(BENCH_VENV); }
	@rm -f $(BENCH_VENV)/.installed-*
	@echo "[bench] installing $(BENCH_REQ) into $(BENCH_VENV) (log: $(BENCH_VENV)/install.log)"
	@$(BENCH_VENV)/bin/python -m pip install -q -U pip >$(BENCH_VENV)/install.log 2>&1 \
	  && $(BENCH_VENV)/bin/python -m pip install -q -r $(BENCH_REQ) >>$(BENCH_VENV)/install.log 2>&1 \
	  || { cat $(BENCH_VENV)/install.log; exit 1; }
	@touch $@

bench-venv: $(BENCH_STAMP) ## the separate benchmark venv (Quix Streams, py-spy), pinned

# The whole of issue 5, one scenario after another. Each run writes its JSON and
# Markdown section to the git-ignored benchmarks/results/ (plots to results/plots/):
# a run leaves the tree clean. BENCH_RECORD=--update-results (make bench-record)
# also inserts the sections into benchmarks/RESULTS.md and rewrites benchmarks/plots/;
# record only a run made on a quiet machine.
BENCH_RECORD ?=
BENCH_RUN = $(BIN)/python -m benchmarks

bench: setup stack-up migrate bench-venv ## every benchmark: growth to 10M rows (its reads feed the targets), limits, pipeline, alternatives, first row, freshness, memory, stall, scale-out, plots (about 25 minutes)
	@$(BENCH_RUN).scenarios.growth $(BENCH_RECORD)
	@$(BENCH_RUN).scenarios.suite $(BENCH_RECORD) $(BENCH_ARGS)
	@$(BENCH_RUN).scenarios.backpressure $(BENCH_RECORD)
	@$(BENCH_RUN).scenarios.scale_out $(BENCH_RECORD)
	@$(BENCH_VENV)/bin/python -m benchmarks.harness.plots $(BENCH_RECORD)

bench-quick: setup stack-up migrate bench-venv ## the same scenarios on fewer ticks and rows (about 5 minutes); results in benchmarks/results/
	@$(BENCH_RUN).scenarios.growth --quick $(BENCH_RECORD)
	@$(BENCH_RUN).scenarios.suite --quick $(BENCH_RECORD) $(BENCH_ARGS)
	@$(BENCH_RUN).scenarios.backpressure --quick $(BENCH_RECORD)
	@$(BENCH_RUN).scenarios.scale_out --quick $(BENCH_RECORD)
	@$(BENCH_VENV)/bin/python -m benchmarks.harness.plots $(BENCH_RECORD)

bench-record: ## make bench, and record it: its sections into benchmarks/RESULTS.md, its plots into benchmarks/plots/
	@$(MAKE) --no-print-directory bench BENCH_RECORD=--update-results

bench-plots: bench-venv ## plots of the newest results (benchmarks/results/plots/)
	@$(BENCH_VENV)/bin/python -m benchmarks.harness.plots

bench-throughput: setup stack-up migrate ## only the throughput rows: ceilings and the pipeline with exactly-once on and off
	@$(BENCH_RUN).scenarios.suite --skip naive,quix,consume,freshness $(BENCH_ARGS)

bench-profile: setup stack-up migrate bench-venv ## py-spy profile of the consumer at saturation, top costs
	@$(BENCH_RUN).scenarios.profile_consumer $(PROFILE_ARGS)

clean: ## remove the virtual environment and caches (not the services' data)
	rm -rf $(VENV) build .mypy_cache .ruff_cache .pytest_cache
