# Two entry points (README.md): `make run` and `make test`. Both set up .venv first.
PY      ?= python3
VENV    ?= .venv
PIP     := $(VENV)/bin/pip
PYBIN   := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
NODE_STAMP := contracts/node_modules/.installed

.PHONY: setup run test test-fast fuzz bench clean

setup: $(STAMP) $(NODE_STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test,data]'
	# IWEC Sevilla weather file (source of the irradiance tables); its `accim` dependency is not needed
	$(PIP) install -q --no-deps accim-samples==0.8.2
	touch $(STAMP)

$(NODE_STAMP): contracts/package.json
	cd contracts && npm ci --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

run: setup
	$(VENV)/bin/ecjax

# pytest-xdist: one worker per core, at most 4 (each worker is a JAX process of its own).
# worksteal: each worker starts on a contiguous share of the tests (a module's fixtures are set
# up in one worker, not in every one) and an idle worker takes over the end of another's share.
XDIST   := -n auto --maxprocesses=4 --dist worksteal

# A test whose worker process crashed is run once more (pytest-rerunfailures; a failing test
# is never rerun): writing some executables to jax's persistent compilation cache, which the
# suite shares between tests, has segfaulted a worker now and then (jax 0.10.2, CPU).
RERUN   := --reruns 1 --only-rerun "worker crashed"

test: setup
	$(PYBIN) -m pytest -q $(XDIST) $(RERUN)

fuzz: setup
	$(PYBIN) -m pytest -q -s $(XDIST) tests/qp/test_fuzz.py

test-fast: setup
	$(PYBIN) -m pytest -q $(XDIST) $(RERUN) -m "not slow and not fuzz_slow"

BENCH_STAMP := $(VENV)/.bench-installed

# the structured QP solvers raced against ecjax (pyproject's `bench` extra)
$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(PIP) install -q -e '.[test,data,bench]'
	touch $(BENCH_STAMP)

bench: setup $(BENCH_STAMP)
	$(PYBIN) experiments/benchmarks/qp_batch.py --quick
	$(PYBIN) experiments/benchmarks/closed_loop.py --quick

clean:
	rm -rf $(VENV) contracts/node_modules
