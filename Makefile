# realtime-pipeline: `make run` to see it work, `make test` to prove it.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PEER_VENV := .venv-peer
export PY
# Test workers (pytest-xdist): the integration tests mostly wait on the services, each with its own database,
# topics, Redis prefix and MQTT root, so more workers than the 2 cores pay. A test marked `serial` still runs alone
# (tests/conftest.py). TEST_WORKERS=0 runs everything in one process. With 6, on a slower machine, the fault tests,
# which break a service and wait for the daemon to notice, missed their 30 s waits; the quick tiers take 6
# (FAST_WORKERS). 4 -> 5 took the full run from 7 min 22 s to 6 min 15 s (README, Tests).
TEST_WORKERS ?= 5
FAST_WORKERS ?= 6
XDIST := -n $(TEST_WORKERS) --dist loadgroup
# Python's bytecode cache stays on: with PYTHONDONTWRITEBYTECODE set (some shells and images set it), every test
# worker re-rewrites the asserts of all test modules at collection and every daemon a test starts recompiles the
# package: 13 s of CPU per worker before the first test, 9 s of it for nothing.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: help venv dev-venv peer-venv services services-down status migrate run test test-fast test-unit test-integration test-faults bench bench-max clean

help:
	@echo "make run            set up everything, start the pipeline and the device simulator (Ctrl-C stops both)"
	@echo "make test           set up everything, run every test tier against the real services (what CI runs),"
	@echo "                    in parallel: TEST_WORKERS=5 pytest-xdist workers (0: one process)"
	@echo "make test-fast      the quick tiers: unit and integration tests without the fault-injection ones"
	@echo "make test-unit      unit tests only: pure logic, no services needed"
	@echo "make test-integration  integration tests only, fault injection included"
	@echo "make test-faults    only the slow fault-injection tests (kill, freeze, restart a service or the daemon)"
	@echo "make services       start the services that are not running (Kafka broker, PostgreSQL, Redis, Mosquitto)"
	@echo "make services-down  stop only what 'make services' started"
	@echo "make migrate        apply database migrations"
	@echo "make bench          every ratio target in one run: 10,000 msg/s against the bare path and a peer, 3 readings,"
	@echo "                    the highest sustainable rate, 60 % of it, 1,000 msg/s, idle (BENCH_ARGS=...)"
	@echo "make bench-max      step the rate up to the highest sustainable one"

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

# The Sparkplug B protobuf module, generated from the .proto by grpcio-tools' protoc (a build product: gitignored).
SPB_DIR := pipeline/operators/sparkplug
SPB_PB2 := $(SPB_DIR)/sparkplug_b_pb2.py
$(SPB_PB2): $(SPB_DIR)/sparkplug_b.proto $(VENV)/.installed
	$(PY) -m grpc_tools.protoc -I$(SPB_DIR) --python_out=$(SPB_DIR) $(SPB_DIR)/sparkplug_b.proto

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

# The benchmark's peer (Quix Streams) in a venv of its own: see requirements-peer.txt.
$(PEER_VENV)/.installed: requirements-peer.txt
	test -x $(PEER_VENV)/bin/python || $(PYTHON) -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(PEER_VENV)/bin/python -m pip install --quiet -r requirements-peer.txt
	touch $@

venv: $(VENV)/.installed $(SPB_PB2)
dev-venv: $(VENV)/.installed-dev $(SPB_PB2)
peer-venv: $(PEER_VENV)/.installed

services: venv
	bash scripts/services.sh up

services-down:
	bash scripts/services.sh down

status:
	bash scripts/services.sh status

migrate: services
	$(PY) migrations.py

run: migrate
	bash scripts/run.sh

test: dev-venv peer-venv services
	bash scripts/ensure-test-tools.sh
	$(PY) migrations.py
	$(VENV)/bin/lint-imports
	$(PY) -m pytest $(XDIST)

test-fast: dev-venv peer-venv services
	bash scripts/ensure-test-tools.sh
	$(PY) migrations.py
	$(PY) -m pytest -n $(FAST_WORKERS) --dist loadgroup -m "not faults"

test-unit: dev-venv
	$(PY) -m pytest -m unit

test-integration: dev-venv peer-venv services
	bash scripts/ensure-test-tools.sh
	$(PY) -m pytest $(XDIST) -m integration

test-faults: dev-venv peer-venv services
	bash scripts/ensure-test-tools.sh
	$(PY) -m pytest $(XDIST) -m faults

BENCH_ARGS ?= --suite --rate 10000 --duration 60 --step 1.15 --fresh-broker
bench: dev-venv peer-venv services
	$(PY) -m pipeline.tools.bench $(BENCH_ARGS)

bench-max: dev-venv peer-venv services
	$(PY) -m pipeline.tools.bench --find-max --rate 10000 --duration 30

clean:
	rm -rf $(VENV) $(PEER_VENV) .pytest_cache $(SPB_PB2)
