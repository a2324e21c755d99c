# Two commands on a fresh machine: `make demo` and `make test`. Both set up .venv/ first if missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1

.PHONY: setup demo test typecheck test-fast test-pythons device-locks bench lint ui sandbox sandbox-down sandbox-bad-model clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml device/pyproject.toml flows/pyproject.toml infra/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -e ./device -e ./flows -e ./infra -e '.[dev]'
	touch $@

demo: setup
	$(PY) -m edgefleet.demo $(DEMO_ARGS)

# Test files run on $(TEST_WORKERS) workers, each file on one worker (the files' tests keep their order), in
# the order tests/conftest.py sets: the longest files first (--no-loadscope-reorder keeps that order).
# 3 workers on the 2-core machine: the long files mostly wait on real processes (agents at a capped frame rate,
# sshd, emulators, polls), so a third worker fills idle time; every test waits on conditions, never on timers
# (the suite passes with a busy loop on every core).
TEST_WORKERS ?= 3
test: setup
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# pyright on the four source roots ([tool.pyright]: strict on device/src, basic elsewhere): 0 errors or it fails.
typecheck: setup
	$(VENV)/bin/pyright

test-fast: setup
	$(PY) -m pytest -m "not slow"

# The device tests under Debian's Python 3.9 and 3.13 as well (see .ci/device-pythons).
test-pythons: setup
	bash .ci/device-pythons

# The hashed locks deploy-agent installs on devices (flows/src/edgefleet/flows/locks/): after changing
# device/pyproject.toml's dependencies or edgetpu-pairs.toml there. uv resolves for each target
# Python and CPU (needs the registry).
device-locks: setup
	$(PY) -m pip install --quiet uv
	$(PY) -m edgefleet.flows.deploy_agent.locks --project .

ui: setup
	$(VENV)/bin/edgefleet ui

# A local fleet driven from the Prefect UI, until Ctrl-C or `make sandbox-down` (SANDBOX_DEVICES=5 for more).
SANDBOX_DEVICES ?= 3
SANDBOX_ARGS ?=
sandbox: setup
	SANDBOX_DEVICES=$(SANDBOX_DEVICES) $(PY) -m edgefleet.local.sandbox up $(SANDBOX_ARGS)

sandbox-down:
	$(PY) -m edgefleet.local.sandbox down

sandbox-bad-model: setup
	$(PY) -m edgefleet.local.sandbox bad-model

bench: setup
	$(PY) -m bench

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .cache/pythons .cache/systemd
