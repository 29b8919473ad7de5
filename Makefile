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

## Throughput: stock rq SimpleWorker vs aiorq worker on no-op jobs (private redis-server).
bench: $(STAMP)
	$(PY) benchmarks/bench.py $(ARGS)

docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) site build dist *.egg-info
