# `make test` and `make bench` each create .venv and install what they need,
# so either works alone on a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
OPTAX018_STAMP := $(VENV)/.optax018-stamp
BENCH_ARGS ?=
# The monte_carlo folder of an optax 0.1.8 installation; empty: download the
# optax 0.1.8 wheel from PyPI (needs network).
OPTAX018_TESTS ?=

.PHONY: install test test-deep bench optax-conformance clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --doctest-modules scoregrad tests

# The property-based conformance suite with 10x the examples (about 20-30
# minutes on 2 cores); `make test` runs its default profile.
test-deep: $(STAMP)
	HYPOTHESIS_PROFILE=deep $(PY) -m pytest -q -n 2 tests/test_conformance.py

bench: $(STAMP)
	$(PY) -m benchmarks.run $(BENCH_ARGS)

$(OPTAX018_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install --quiet -e '.[dev,optax018]'
	touch $(OPTAX018_STAMP)

# optax 0.1.8's own monte_carlo tests, unmodified, against
# scoregrad.compat.optax_monte_carlo (about 4 minutes on 2 cores). Without
# OPTAX018_TESTS=<dir> it pip-downloads the optax 0.1.8 wheel: needs network.
optax-conformance: $(OPTAX018_STAMP)
	$(PY) tests/optax018/run_optax_tests.py $(if $(OPTAX018_TESTS),--optax-tests $(OPTAX018_TESTS))

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
