# Two entry points (README.md): `make run` and `make test`. Both set up .venv first.
# `make run` installs what a run needs (the package and its dependencies); `make test` adds the
# `test` and `data` extras, the IWEC weather file and the node packages of the contracts;
# `make data` rebuilds the data tables (the `data` extra and the IWEC weather file).
PY      ?= python3
VENV    ?= .venv
PIP     := $(VENV)/bin/pip
PYBIN   := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
DATA_STAMP := $(VENV)/.installed-data
NODE_STAMP := contracts/node_modules/.installed
# The IWEC Sevilla weather file (the source of the irradiance tables) ships in accim-samples,
# whose `accim` dependency (EnergyPlus tooling) is not needed: it is installed without
# dependencies into a folder of its own, put on PYTHONPATH only for the data build and the
# tests, so that the environment itself stays consistent (`pip check`).
IWEC    := $(VENV)/iwec
WITH_IWEC := PYTHONPATH=$(abspath $(IWEC))

.PHONY: setup setup-test run test test-fast fuzz bench data clean

setup: $(STAMP)

setup-test: $(TEST_STAMP) $(NODE_STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e .
	$(PIP) check
	touch $(STAMP)

$(DATA_STAMP): $(STAMP)
	$(PIP) install -q -e '.[data]'
	$(PIP) install -q --no-deps --upgrade --target $(IWEC) accim-samples==0.8.2
	touch $(DATA_STAMP)

# The test set-up resolves and installs the package with both extras in one pip call (on a
# fresh machine, CI's case: the three steps one after the other resolved three times).
$(TEST_STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test,data]'
	$(PIP) install -q --no-deps --upgrade --target $(IWEC) accim-samples==0.8.2
	$(PIP) check
	touch $(STAMP) $(DATA_STAMP) $(TEST_STAMP)

$(NODE_STAMP): contracts/package.json
	cd contracts && npm ci --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

run: setup
	$(VENV)/bin/ecjax

data: $(DATA_STAMP)
	$(WITH_IWEC) $(PYBIN) -m ecjax.data.build

# pytest-xdist: one worker per core, at most 4 (each worker is a JAX process of its own).
# worksteal: each worker starts on a contiguous share of the tests (a module's fixtures are set
# up in one worker, not in every one) and an idle worker takes over the end of another's share.
XDIST   := -n auto --maxprocesses=4 --dist worksteal

# A test whose worker process crashed is run once more (pytest-rerunfailures; a failing test
# is never rerun): writing some executables to jax's persistent compilation cache, which the
# suite shares between tests, has segfaulted a worker now and then (jax 0.10.2, CPU).
RERUN   := --reruns 1 --only-rerun "worker crashed"

test: setup-test
	$(WITH_IWEC) $(PYBIN) -m pytest -q $(XDIST) $(RERUN)

fuzz: setup-test
	$(PYBIN) -m pytest -q -s $(XDIST) tests/qp/test_fuzz.py

test-fast: setup-test
	$(WITH_IWEC) $(PYBIN) -m pytest -q $(XDIST) $(RERUN) -m "not slow and not fuzz_slow"

BENCH_STAMP := $(VENV)/.bench-installed

# the structured QP solvers raced against ecjax (pyproject's `bench` extra)
$(BENCH_STAMP): $(TEST_STAMP) pyproject.toml
	$(PIP) install -q -e '.[test,data,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(PYBIN) experiments/benchmarks/qp_batch.py --quick
	$(PYBIN) experiments/benchmarks/closed_loop.py --quick

clean:
	rm -rf $(VENV) contracts/node_modules
