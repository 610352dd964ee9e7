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

.PHONY: install test test-slow test-all test-deep bench gpu-check optax-conformance clean lint docs docs-check notebooks wheel-check test-min

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# `make test`: the whole suite (notebooks and doctests included) except the
# slow tier (multi-process/sharding subprocesses, benchmark smoke runs, the
# property-based conformance suite: SLOW in tests/conftest.py; and the tests
# listed in tests/slow_tier.txt, each 3.6 s or more on 2 cores). `make
# test-slow` runs that tier; `make test-all` both (as .ci/run does).
test: $(STAMP)
	$(PY) -m pytest -q -n 2 --doctest-modules -m "not slow" scoregrad tests
	@echo "make test: done; the slow tier (subprocess sharding, benchmark smoke runs, the conformance suite, tests/slow_tier.txt) is 'make test-slow' (both: 'make test-all', as .ci/run)."

test-slow: $(STAMP)
	$(PY) -m pytest -q -n 2 -m slow tests

test-all: test test-slow

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

# Static checks (run by .ci/run before the tests): ruff lint, ruff format and
# mypy, configured in pyproject.toml.
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy scoregrad

DOCS_STAMP := $(VENV)/.docs-stamp
$(DOCS_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install --quiet -e '.[dev,docs]'
	touch $(DOCS_STAMP)

# The HTML site in docs/_build/html (Sphinx, warnings are errors; about 20 s
# on 2 cores), then a check that every public name has an entry in the built
# API pages. The notebooks are rendered from their committed outputs.
docs: $(DOCS_STAMP)
	$(PY) -m sphinx -W --keep-going -b html docs docs/_build/html
	$(PY) .ci/check_docs.py docs/_build/html

# Screenshots of the built site in headless Chromium (Debian's `chromium`
# package): the index, the score_function API entry, notebook 01 and the
# Mohamed benchmark page, saved under docs/_build/screenshots/; fails when a
# page errors or renders blank, its maths is not typeset, or an image is
# missing. Not in .ci/run (CI machines need not have Chromium).
docs-check: docs
	$(PY) .ci/screenshots.py docs/_build/html docs/_build/screenshots

# Re-executes every notebook in place, refreshing its committed outputs and
# figures (about 2 minutes on 2 cores). `make test` checks they still run.
notebooks: $(STAMP)
	JAX_PLATFORMS=cpu $(PY) -m jupyter nbconvert --to notebook --execute --inplace \
	  --ExecutePreprocessor.timeout=900 notebooks/*.ipynb

# Builds the sdist and wheel, runs twine check, installs the wheel without
# extras into a bare venv and runs an estimate (needs PyPI for jax/optax).
wheel-check: $(STAMP)
	$(PY) .ci/wheel_check.py

# A fresh venv at the lowest supported versions (.ci/minimum-versions.txt),
# running a smoke subset of the tests. Needs network; not part of .ci/run.
MIN_VENV := .venv-min
test-min:
	test -x $(MIN_VENV)/bin/python || $(PYTHON) -m venv $(MIN_VENV)
	$(MIN_VENV)/bin/python -m pip install --quiet -c .ci/minimum-versions.txt -e . pytest hypothesis scipy
	JAX_PLATFORMS=cpu $(MIN_VENV)/bin/python -m pytest -q -p no:cacheprovider -o addopts= \
	  tests/test_public_api.py tests/test_score_function.py tests/test_pathwise.py

# The GPU check (issue 22): fast tests, throughput and memory bandwidth on a
# GPU machine, under 10 minutes (benchmarks/gpu_check.sh says how).
gpu-check:
	bash benchmarks/gpu_check.sh

clean:
	rm -rf $(VENV) $(MIN_VENV) *.egg-info .pytest_cache docs/_build docs/api
