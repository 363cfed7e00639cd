# Two commands do all the set-up on a fresh machine with Python 3.11:
#   make demo   # creates .venv, installs what the models need, trains every model on `digits`
#   make test   # creates/updates .venv, adds torch and the test tools, runs the test suite
#   make lint   # ruff over the tree
# Every package is installed at the exact version in constraints.txt (pip -c), so results
# reproduce; setup.cfg keeps version ranges for library users.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-models
WORKDIR ?= runs/demo
PYTEST_ARGS ?=
PIP = $(VENV)/bin/python -m pip install -q -c constraints.txt

.PHONY: demo test test-all test-slow lint venv clean

venv: $(STAMP)

$(DEMO_STAMP): requirements.txt constraints.txt setup.cfg pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(PIP) -r requirements.txt
	$(VENV)/bin/python -m pip install -q --no-deps -e .
	touch $(DEMO_STAMP)

$(STAMP): $(DEMO_STAMP) requirements-test.txt
	$(PIP) -r requirements-test.txt
	touch $(STAMP)

demo: $(DEMO_STAMP)
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
