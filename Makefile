# Two entry points: `make demo` (the main job on built-in data) and `make test` (the gates, then the suite).
# Both create .venv when it is missing. PyTorch is pinned here and installed first: an unpinned torch
# would pull a multi-gigabyte CUDA build.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-all explore bench venv clean lint typecheck doctest docs

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test,dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/pntk reproduce --out results

# The gates run in this order and stop at the first failure: lint, format, types, the `>>>` examples of
# every module, the docs build with warnings as errors, then the test suite.
test: $(STAMP)
	@$(MAKE) --no-print-directory lint
	@$(MAKE) --no-print-directory typecheck
	@$(MAKE) --no-print-directory doctest
	@$(MAKE) --no-print-directory docs
	$(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks docs/hooks.py docs/griffe_rst.py
	$(VENV)/bin/ruff format --check src tests benchmarks docs/hooks.py docs/griffe_rst.py

typecheck: $(STAMP)
	$(VENV)/bin/mypy

doctest: $(STAMP)
	$(PY) -m pytest -q --doctest-modules src/pntk

# The API reference and user guide, built into site/ (warnings are errors).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

test-all: $(STAMP)
	$(PY) -m pytest -q

# The property tests with newly drawn examples, ROUNDS times (the suite's own examples are fixed).
ROUNDS ?= 20
explore: $(STAMP)
	for round in $$(seq $(ROUNDS)); do PNTK_HYPOTHESIS=explore $(PY) -m pytest -q -x -m "not slow" \
		$$(grep -rl "@given" tests) || exit 1; done

clean:
	rm -rf $(VENV) results site .pytest_cache .hypothesis .mypy_cache .ruff_cache
