# Every target creates the virtualenv and installs aiorq into it on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test unit lint docs bench clean

$(STAMP): setup.cfg setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## The main job: a worker processing the demo queue against a local (private) Redis.
demo: $(STAMP)
	$(PY) examples/demo.py $(ARGS)

## The tests: lint, types, then the suite against private redis-server instances.
test: lint unit

unit: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check aiorq aiorq_worker tests examples benchmarks
	$(VENV)/bin/mypy

## Every benchmark case, aiorq vs stock rq vs arq vs saq, in one run (private redis-server), from its
## own virtualenv: aiorq (editable) + arq + saq (saq 0.26 imports typing_extensions without declaring it).
## `make bench ARGS='--quick'` is the smoke test; benchmarks/bench.py and scheduler_lag.py run on their own.
BENCH_VENV ?= .venv-bench
BENCH_PY := $(BENCH_VENV)/bin/python
BENCH_STAMP := $(BENCH_VENV)/.installed-stamp

$(BENCH_STAMP): setup.cfg setup.py pyproject.toml
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_PY) -m pip install --quiet --upgrade pip
	$(BENCH_PY) -m pip install --quiet -e . arq saq typing_extensions
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BENCH_PY) benchmarks/suite.py $(ARGS)

docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) .venv-* site build dist *.egg-info
