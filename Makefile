# pocketops: `make run` opens the dashboard on demo data, `make test` runs the tests.
# Both create .venv and install everything on a fresh Linux machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install run test test-phone test-mobile mobile-env bench bench-check screenshots clean browser-deps

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch is pinned to the 2.13.0 CPU build through constraints.txt (an open range pulls CUDA).
	$(PY) -m pip install -q -c constraints.txt -e '.[all,dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(VENV)/bin/pocketops

# The cluster tests start and stop a local Ray head themselves (ray[default] comes with the
# `cluster` extra, part of `all`); under CI=true they fail instead of skipping without it.
# Two pytest workers (pytest-xdist), one test file each at a time: the suite waits on servers and
# subprocesses much of the time, so one process kept only ~1 of CI's 2 cores busy. Files stay
# whole on one worker (module fixtures, the cluster tests' one Ray head). PYTEST_WORKERS=0: serial.
PYTEST_WORKERS ?= 2
XDIST = $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadfile)
test: install browser-deps
	$(PY) -m pytest -q $(XDIST)

# Headless Chromium + onnxruntime-web for the static-page test. Skipped with a message when this
# is not root with apt-get (the test then says it was skipped); under CI=true the test fails
# if either is missing.
ORT_WEB_VERSION := 1.30.0
ORT_WEB := build/web/node_modules/onnxruntime-web/dist/ort.wasm.min.js
browser-deps:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "browser-deps: apt-get install chromium"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	    || echo "browser-deps: installing chromium failed; the static page test will be skipped (fails under CI=true)"; \
	else echo "browser-deps: no chromium and not root with apt-get: the static page test will be skipped (sudo apt-get install chromium to run it)"; fi
	@if [ -f $(ORT_WEB) ]; then :; \
	else \
	  if ! command -v npm >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null || true; fi; \
	  if command -v npm >/dev/null 2>&1; then \
	    echo "browser-deps: npm install onnxruntime-web@$(ORT_WEB_VERSION) into build/web"; \
	    npm install --silent --no-audit --no-fund --prefix build/web onnxruntime-web@$(ORT_WEB_VERSION) \
	      || echo "browser-deps: npm install failed; the static page test will be skipped (fails under CI=true)"; \
	  else echo "browser-deps: npm is missing: the static page test will be skipped (install nodejs + npm to run it)"; fi; \
	fi

# The phone profile: what a Termux user has without torch and onnx (no Termux build of onnx;
# torch's often breaks). The tests marked `phone` must pass there: dashboard, datasets,
# models add + bench, local serving, and train/export failing with one line naming the package.
PHONE_VENV ?= .venv-phone
PHONE_PY := $(PHONE_VENV)/bin/python
PHONE_STAMP := $(PHONE_VENV)/.installed
$(PHONE_STAMP): pyproject.toml constraints.txt
	test -x $(PHONE_PY) || $(PYTHON) -m venv $(PHONE_VENV)
	$(PHONE_PY) -m pip install -q --upgrade pip
	$(PHONE_PY) -m pip install -q -c constraints.txt -e . onnxruntime pytest pytest-timeout pytest-xdist anyio sqlite-utils
	@if $(PHONE_PY) -c 'import torch' 2>/dev/null || $(PHONE_PY) -c 'import onnx' 2>/dev/null; then \
	  echo "test-phone: torch or onnx got into $(PHONE_VENV); the phone profile must not have them"; exit 1; fi
	touch $(PHONE_STAMP)

test-phone: $(PHONE_STAMP)
	$(PHONE_PY) -m pytest -q -m phone $(XDIST)

# The app runtimes (ExecuTorch, LiteRT) in their own venv: their exporters pull ~1.5 GB (jax,
# transformers) and pin xdsl, which would downgrade typing_extensions/pydantic in .venv (see
# docs/mobile-runtimes.md). torch comes from the same constraints (2.13.0 CPU). The tests marked
# `mobile` run there; the main suite checks the clean refusals where these packages are missing.
MOBILE_VENV ?= .venv-mobile
MOBILE_PY := $(MOBILE_VENV)/bin/python
MOBILE_STAMP := $(MOBILE_VENV)/.installed
$(MOBILE_STAMP): pyproject.toml constraints.txt
	test -x $(MOBILE_PY) || $(PYTHON) -m venv $(MOBILE_VENV)
	$(MOBILE_PY) -m pip install -q --upgrade pip
	# (byte-compiled here, in the background build: with --no-compile the first imports in
	# test-mobile paid for it, 170 s instead of ~90 s)
	$(MOBILE_PY) -m pip install -q -c constraints.txt -e '.[train,export,serve,mobile]' pytest pytest-timeout pytest-xdist anyio
	touch $(MOBILE_STAMP)

mobile-env: $(MOBILE_STAMP)

test-mobile: $(MOBILE_STAMP)
	POCKETOPS_REQUIRE_MOBILE=1 $(MOBILE_PY) -m pytest -q -m mobile $(XDIST)

bench: install $(MOBILE_STAMP)
	$(PY) benchmarks/train_overhead.py
	$(PY) benchmarks/dashboard_startup.py
	$(MOBILE_PY) benchmarks/quantization.py
	$(PY) benchmarks/cold_start.py
	# the many-writers soak at full length (make test runs it for 15 s)
	POCKETOPS_MANY_WRITERS_S=60 $(PY) -m pytest -q -s tests/test_many_writers.py
	$(PY) benchmarks/scale.py
	$(PY) benchmarks/serve_load.py
	# --on overhead: starts and stops its own local Ray head (the cluster extra's ray[default])
	$(PY) benchmarks/remote.py
	POCKETOPS_FUZZ_FULL=1 $(PY) -m pytest -q -p no:cacheprovider tests/test_serve_fuzz.py

# Every benchmark in its short mode (~5 min on 2 cores); fails only on a clear regression (a
# figure past its target by more than its noise margin, see benchmarks/check.py). A script not
# in the tree (serve_load before it lands) is skipped with a line.
BENCHMARKS := train_overhead dashboard_startup quantization cold_start scale serve_load remote
# quantization runs in .venv-mobile: its table compares every runtime (ExecuTorch and LiteRT too).
bench-check: install $(MOBILE_STAMP)
	$(PY) benchmarks/check.py $(filter-out quantization,$(BENCHMARKS))
	$(MOBILE_PY) benchmarks/check.py quantization

screenshots: install
	$(PY) scripts/screenshots.py

clean:
	rm -rf $(VENV) $(PHONE_VENV) $(MOBILE_VENV) build *.egg-info
