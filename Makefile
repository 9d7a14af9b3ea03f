# The two commands: `make run` (the app on the embedded default) and `make test` (every test).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch, pinned: an unpinned torch pulls gigabytes of CUDA wheels.
TORCH := torch==2.13.0

.PHONY: run test test-unit test-system install install-test chromium bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet "$(TORCH)" -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet "$(TORCH)" -e ".[test]"
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test chromium

chromium:
	@command -v chromium >/dev/null 2>&1 || { echo "installing Debian's chromium for the browser tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

run: install
	bash scripts/run.sh

test: install-test
	bash scripts/test.sh

bench: install-test
	@echo "Benchmarks: run the scripts in bench/ one at a time, e.g. $(BIN)/python bench/embed_throughput.py"

clean:
	rm -rf $(VENV) var
