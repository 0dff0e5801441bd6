# Set-up happens on first use: a .venv is created and the package installed with its test extras.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test test-fast bench install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/thoracic demo

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile -q

# The inner loop: everything but the end-to-end tests marked slow (CI runs `make test`, the full suite).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist load -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
