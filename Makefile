# Two commands set everything up from nothing: `make book` and `make test`.
# Each target creates .venv when it is missing and (re)installs when pyproject.toml changes.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CHAPTERS := $(sort $(wildcard chapters/[0-9][0-9]_*.py))
# Jupyter refuses to run as root without this; harmless otherwise.
export JUPYTER_ALLOW_ROOT := 1

.PHONY: install test test-kernels test-noise book lab lint format preview clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt docs/lab/overrides.json
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (mist)" >/dev/null
	@# JupyterLab in this environment opens a .py chapter as a notebook (jupytext pairs it with its .ipynb)
	@mkdir -p $(VENV)/share/jupyter/lab/settings
	cp docs/lab/overrides.json $(VENV)/share/jupyter/lab/settings/overrides.json
	@touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

# Stored chapter outputs and float comparisons must not depend on the processor. This reruns the suite (all
# but the browser tests) with the AVX2 kernels of oneDNN (convolutions) and of PyTorch, on one thread: what
# an AVX2 machine prints, seen from an AVX-512 one. CI runs it after `make test` (default kernels, 2 threads).
test-kernels: $(STAMP)
	ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 OMP_NUM_THREADS=1 $(PY) -m pytest -m "not browser" -p no:cacheprovider

# A diagnostic, not a gate: perturbs the last bits of every float kernel (tests/float_noise) and reruns the
# chapters under nbval with SEED (default 1). An output that changes here can change on another processor.
test-noise: $(STAMP)
	MIST_FLOAT_NOISE=$${SEED:-1} PYTHONPATH=$(CURDIR)/tests/float_noise $(PY) -m pytest chapters -p no:cacheprovider

# Builds the website into _build/html from the committed, executed chapters/*.ipynb, with warnings as errors.
# Execution is off (book.yml says why: nbval in `make test` re-runs every notebook and fails on any changed
# output, and a test keeps each .ipynb in sync with its .py). `make book EXECUTE=1` re-executes the chapters
# first (the .py is the source; jupytext stores the outputs in the paired .ipynb).
book: $(STAMP)
ifeq ($(EXECUTE),1)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(VENV)/bin/jupytext --sync --execute --set-kernel python3 $(CHAPTERS)
endif
	$(VENV)/bin/jupyter-book build . --config book.yml --toc toc.yml -W --keep-going
	@echo ""
	@echo "The site is in _build/html. Open it with:"
	@echo "    $(PY) -m http.server -d _build/html 8000   # then browse http://127.0.0.1:8000"
	@echo "(or open _build/html/index.html directly in a browser)"

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
