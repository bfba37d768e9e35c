# The two commands a newcomer types: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
PROMPT ?= Once upon a time, in a small village by the sea,
TOKENS ?= 64
# Development build in place (fastcpu/*.so next to the sources) with this interpreter.
DEV_PY ?= $(shell command -v python3)

.PHONY: run test install install-test dev bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

install: $(PY)
	$(PIP) install -q .

install-test: $(PY)
	$(PIP) install -q ".[test,oracle]"

run: install
	$(VENV)/bin/fastcpu pull smollm2-135m
	$(VENV)/bin/fastcpu generate -p "$(PROMPT)" -n $(TOKENS)

test: install-test
	$(VENV)/bin/pytest -q -rs

dev:
	cmake -S . -B build/dev -G Ninja -DFASTCPU_INPLACE=ON -DPython_EXECUTABLE=$(DEV_PY)
	cmake --build build/dev

bench: install-test
	$(VENV)/bin/pytest -q benchmarks --benchmark-only

clean:
	rm -rf build fastcpu/*.so
