# pocketops: `make run` opens the dashboard on demo data, `make test` runs the tests.
# Both create .venv and install everything on a fresh Linux machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install run test test-fast bench screenshots clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch is pinned to the 2.13.0 CPU build through constraints.txt (an open range pulls CUDA).
	$(PY) -m pip install -q -c constraints.txt -e '.[all,dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(VENV)/bin/pocketops

test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

bench: install
	$(PY) benchmarks/train_overhead.py
	$(PY) benchmarks/dashboard_startup.py

screenshots: install
	$(PY) scripts/screenshots.py

clean:
	rm -rf $(VENV) build *.egg-info
