# Two commands do all the set-up on a fresh machine with Python 3.11:
#   make demo   # creates .venv, installs everything, trains every model on `digits`
#   make test   # creates/updates .venv, runs the whole test suite
#   make lint   # ruff over the tree
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed
WORKDIR ?= runs/demo
PYTEST_ARGS ?=

.PHONY: demo test test-all test-slow lint venv clean

venv: $(STAMP)

$(STAMP): requirements.txt setup.cfg pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q -r requirements.txt
	$(VENV)/bin/python -m pip install -q --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/dgmjax demo --workdir $(WORKDIR)

test: $(STAMP)
	$(VENV)/bin/python -m pytest -n 2 -q $(PYTEST_ARGS)

# ruff with the style in pyproject.toml (2-space indentation, 100 columns).
lint: $(STAMP)
	$(VENV)/bin/ruff check .

# Also the tests marked slow (minutes).
test-all: $(STAMP)
	$(VENV)/bin/python -m pytest -n 2 -q -m "" $(PYTEST_ARGS)

# Only the tests marked slow (CI runs `test`, then this: together, `test-all`).
test-slow: $(STAMP)
	$(VENV)/bin/python -m pytest -n 2 -q -m slow $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs
