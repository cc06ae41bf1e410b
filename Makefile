# Two commands set everything up from nothing: `make book` and `make test`.
# Each target creates .venv when it is missing and (re)installs when pyproject.toml changes.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CHAPTERS := $(sort $(wildcard chapters/[0-9][0-9]_*.py))
# Jupyter refuses to run as root without this; harmless otherwise.
export JUPYTER_ALLOW_ROOT := 1

.PHONY: install test book lab lint format preview clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (mist)" >/dev/null
	@touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

# Executes every chapter (the .py source is the truth; the paired .ipynb stores the outputs).
book: $(STAMP)
	@if [ -n "$(CHAPTERS)" ]; then \
	  $(VENV)/bin/jupytext --sync --execute --set-kernel python3 $(CHAPTERS); \
	else echo "No chapters yet: nothing to execute."; fi

lab: $(STAMP)
	$(VENV)/bin/jupyter lab --allow-root chapters/

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

preview: $(STAMP)
	$(PY) -m mistlib.data preview

clean:
	rm -rf _build .pytest_cache data/cache data/preview
