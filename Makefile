# k2.iceberg_offload — the two commands are `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= $(or $(K2_VENV),$(CURDIR)/.venv)
PY := $(VENV)/bin/python
export K2_VENV := $(VENV)
export ANSIBLE_COLLECTIONS_PATH := $(CURDIR)/.collections
LAB := cd lab && $(PY) -m k2lab

.PHONY: setup test test-long faults cold-engines matrix demo lab-build lab-up lab-down lab-status lab-check build bench chaos chaos-spark clean lint units docs gates ee-context

setup:            ## venv, Debian packages, dockerd, collections path
	@bash scripts/setup.sh

test: setup       ## every test: unit, integration (real servers), sanity, molecule, lab
	@bash scripts/test.sh

test-long: setup  ## tests marked long: each role's molecule scenario, every lab fault's symptom healed by the lab
	@K2_TEST_PATHS="tests/molecule tests/lab" K2_TEST_MARK=long bash scripts/test.sh

faults: setup     ## the whole lab fault matrix through the playbooks (make test runs one per scenario and the never-worse cases)
	@K2_TEST_PATHS="tests/lab/test_playbooks.py tests/lab/test_runbook_cases.py tests/lab/test_lab_down.py" K2_TEST_MARK=all bash scripts/test.sh

cold-engines: setup  ## both cold-tier engines on the lab: every variant, and the regression fault recovered with k2_cold_engine=spark
	@K2_TEST_PATHS="tests/lab/test_cold_engines.py tests/lab/test_lab_down.py" K2_TEST_MARK=all bash scripts/test.sh

matrix: setup     ## the version matrix: ansible-core floor/current/newest, PostgreSQL 15 and 18, ClickHouse 18.16 vs 26.x
	@bash scripts/matrix.sh all

demo: setup       ## bring the lab up, break it, show what the collection sees, recover, take it down
	@$(LAB).demo

lab-build: setup
	@$(LAB) build
lab-up: setup
	@$(LAB) up
lab-down:
	@$(LAB) down
lab-status:
	@$(LAB) status
lab-check:
	@$(LAB) check

build: setup      ## the collection tarball (what ansible-galaxy collection install takes)
	@rm -f .cache/dist/k2-iceberg_offload-*.tar.gz
	@$(VENV)/bin/ansible-galaxy collection build --force --output-path .cache/dist .

ee-context: build ## the execution environment's build context (ansible-builder create), in .cache/ee-context
	@$(VENV)/bin/ansible-builder create -f execution-environment.yml -c .cache/ee-context

lint: setup       ## ansible-lint, production profile, whole repository (.ansible-lint)
	@$(VENV)/bin/ansible-lint

units: setup      ## the unit tests through ansible-test units, in ansible-test's own venv
	@bash scripts/units.sh

docs: setup       ## the HTML docsite (antsibull-docs + Sphinx, offline): .cache/docsite/build/html
	@$(PY) scripts/docsite.py

gates: setup      ## every community gate (tests/gates) and ansible-test sanity
	@K2_TEST_PATHS="tests/gates tests/sanity" bash scripts/test.sh

bench: setup      ## benchmarks; results go to docs/benchmarks.md
	@bash bench/run.sh

chaos: setup      ## several seeded fault sequences recovered by the playbooks (make test runs one short seed)
	@bash bench/run.sh chaos

chaos-spark: setup  ## the same sequences with the cold tier on Spark (k2_cold_engine=spark, local[2])
	@bash bench/run.sh chaos --seeds 1,2,3 --engine spark

clean:
	@$(LAB) down || true
	rm -rf .cache .collections tests/output
