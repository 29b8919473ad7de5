# Every target creates the virtualenv and installs aiorq into it on first use.
PYTHON ?= python3
VENV ?= .venv
# A pip constraints file for the install (CI's oldest-Python leg: constraints/lowest.txt, the
# lowest versions of the dependencies setup.cfg claims); empty = the newest that pip finds.
CONSTRAINTS ?=
PY := $(VENV)/bin/python
# Named after the constraints too, so a virtualenv installed without them is installed again.
STAMP := $(VENV)/.installed-stamp$(if $(CONSTRAINTS),-$(notdir $(CONSTRAINTS)))

.PHONY: demo test unit lint docs bench bench-dashboard clean

$(STAMP): setup.cfg setup.py pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e '.[dev]'
	touch $(STAMP)

## The main job: a worker processing the demo queue against a local (private) Redis.
demo: $(STAMP)
	$(PY) examples/demo.py $(ARGS)

## The tests: lint, types, then the suite against private redis-server instances.
test: lint unit

unit: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

# Types are checked against the newest dependencies only: before 8.0, redis-py annotates every
# asyncio command as `Awaitable[T] | T`, so mypy refuses each `await` under the lowest pins.
lint: $(STAMP)
	$(VENV)/bin/ruff check aiorq aiorq_worker tests examples benchmarks
ifeq ($(CONSTRAINTS),)
	$(VENV)/bin/mypy
else
	@echo "mypy: skipped under CONSTRAINTS=$(CONSTRAINTS) (types are checked with the newest dependencies)"
endif

## Every benchmark case, aiorq vs stock rq vs arq vs saq vs streaQ, in one run (private redis-server),
## from its own virtualenv: aiorq (editable, uvloop comes with it) + arq + saq (saq 0.26 imports
## typing_extensions without declaring it) + streaQ (Python 3.11+ only; the suite reports it "not
## installed" elsewhere).
## `make bench ARGS='--quick'` is the smoke test; benchmarks/bench.py and scheduler_lag.py run on their own.
BENCH_VENV ?= .venv-bench
BENCH_PY := $(BENCH_VENV)/bin/python
BENCH_STAMP := $(BENCH_VENV)/.installed-stamp

$(BENCH_STAMP): setup.cfg setup.py pyproject.toml
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_PY) -m pip install --quiet --upgrade pip
	$(BENCH_PY) -m pip install --quiet -e . arq saq typing_extensions 'streaq; python_version >= "3.11"' uvloop
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BENCH_PY) benchmarks/suite.py $(ARGS)

## Issue 17's benchmark: each page's server time in aiorq's dashboard and in rq-dashboard, on 200,000
## failed jobs and 50 queues (private redis-server), from its own virtualenv: aiorq[web] (editable) +
## httpx + rq-dashboard (never a dependency of aiorq) + six (rq-dashboard imports it undeclared).
## `make bench-dashboard ARGS='--quick'` is the smoke test; ARGS='--write-results' updates RESULTS.md.
BENCH_DASH_VENV ?= .venv-bench-dashboard
BENCH_DASH_PY := $(BENCH_DASH_VENV)/bin/python
BENCH_DASH_STAMP := $(BENCH_DASH_VENV)/.installed-stamp

$(BENCH_DASH_STAMP): setup.cfg setup.py pyproject.toml
	$(PYTHON) -m venv $(BENCH_DASH_VENV)
	$(BENCH_DASH_PY) -m pip install --quiet --upgrade pip
	$(BENCH_DASH_PY) -m pip install --quiet -e '.[web]' httpx rq-dashboard==0.9.0 six
	touch $(BENCH_DASH_STAMP)

bench-dashboard: $(BENCH_DASH_STAMP)
	$(BENCH_DASH_PY) benchmarks/dashboard_bench.py $(ARGS)

docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) .venv-* site build dist *.egg-info
