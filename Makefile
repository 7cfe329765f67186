# Build and check the Weight Normalization book.
#
#   make book    set up .venv and the offline browser assets, build the HTML into _build/html
#   make test    the same setup, then: lint, unit tests, nbval, book build, browser test
#   make lock    re-resolve requirements.in into requirements.txt (the lock everything installs)
#
# `make -k test` runs every step even when an earlier one fails.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
JOBS ?= 2
VENV := .venv
BIN := $(VENV)/bin
# Re-install when the requirements or the package metadata change.
PY_STAMP := $(VENV)/.book-installed
NPM_STAMP := node_modules/.book-installed
# Served as _static/ by Sphinx (html_static_path in _config.yml). Not named _static on purpose:
# Jupyter Book injects every .js/.css found in a top-level _static/ into every page.
VENDOR := _vendor
VENDOR_STAMP := $(VENDOR)/mathjax/tex-mml-chtml.js
WIDGETS_DIST := node_modules/@jupyter-widgets/html-manager/dist

# Prints how long each step took, e.g. "==> nbval: 41 s".
TIMED = TIMEFORMAT="==> $@: %0R s"; time

.PHONY: help setup lock assets book test lint unit nbval notebooks site clean distclean
# The steps of `make test` run in order even under `make -j`: the browser test needs the build.
.NOTPARALLEL:

help:
	@echo "make book       build the HTML into _build/html (sets up .venv and assets first)"
	@echo "make test       lint, unit tests, nbval, book build, browser test"
	@echo "make lint       ruff check . and actionlint on .github/workflows"
	@echo "make unit       pytest unit tests in tests/ and wnlib's doctests (not the browser test)"
	@echo "make nbval      re-execute every book notebook and compare its outputs"
	@echo "make notebooks  re-execute every chapter in place (then commit the outputs)"
	@echo "make site       browser test of the built site (needs make book first)"
	@echo "make lock       re-resolve requirements.in into requirements.txt (then commit both)"
	@echo "make clean      remove the build, the browser assets and test artifacts"
	@echo "make distclean  clean, and remove .venv too"

# --- setup -----------------------------------------------------------------------------------

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(PY_STAMP): requirements.txt pyproject.toml book/pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --disable-pip-version-check -r requirements.txt -e . -e book
	@# Build matplotlib's font cache now. Otherwise the first notebook to import matplotlib
	@# prints "building the font cache" to stderr and nbval sees an output the notebook lacks.
	MPLBACKEND=Agg $(BIN)/python -c "import matplotlib.pyplot"
	touch $@

setup: $(PY_STAMP)

# The lock: every package of requirements.in and its dependencies at one exact version, for CPython 3.11
# on x86-64 Linux (the development machines, CI and Binder). Existing pins are kept unless
# requirements.in needs others; `make lock UPGRADE=--upgrade` moves everything to the newest versions.
# torch's CPU build comes from the local wheel folder where there is one, else from PyTorch's CPU index.
TORCH_SOURCE ?= $(if $(wildcard /opt/wheels/torch-*),--find-links /opt/wheels,--extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match)
lock: $(PY_STAMP)
	$(BIN)/uv pip compile requirements.in --output-file requirements.txt --python-version 3.11.7 \
	    --python-platform x86_64-manylinux_2_28 $(TORCH_SOURCE) --custom-compile-command "make lock" $(UPGRADE) >/dev/null

# MathJax, require.js and the ipywidgets embed manager, pinned by package-lock.json. Only their
# files are used, so no package's install script needs to run.
$(NPM_STAMP): package.json package-lock.json
	npm ci --ignore-scripts --no-audit --no-fund
	touch $@

$(VENDOR_STAMP): $(NPM_STAMP)
	rm -rf $(VENDOR)
	mkdir -p $(VENDOR)/widgets
	cp -R node_modules/mathjax/es5/. $(VENDOR)/mathjax/
	cp node_modules/mathjax/LICENSE $(VENDOR)/mathjax/
	cp node_modules/requirejs/require.js $(VENDOR)/widgets/
	cp $(WIDGETS_DIST)/embed-amd.js $(WIDGETS_DIST)/embed.js.LICENSE.txt $(VENDOR)/widgets/
	@# The widget bundle's icon fonts, referenced relative to embed-amd.js.
	cp $(WIDGETS_DIST)/*.woff2 $(WIDGETS_DIST)/*.woff $(WIDGETS_DIST)/*.ttf \
	   $(WIDGETS_DIST)/*.eot $(WIDGETS_DIST)/*.svg $(VENDOR)/widgets/
	touch $@

assets: $(VENDOR_STAMP)

# --- the book --------------------------------------------------------------------------------

# --all: a full rebuild every time, so a warning in an unchanged page still fails the build.
book: $(PY_STAMP) $(VENDOR_STAMP)
	@$(TIMED) $(BIN)/jupyter-book build . --all -W -n --keep-going
	@echo
	@echo "The book is in _build/html. Open file://$(CURDIR)/_build/html/index.html"
	@echo "or serve it: $(BIN)/python -m http.server -d _build/html 8000"

# --- checks ----------------------------------------------------------------------------------

test: lint unit nbval book site

# actionlint checks the workflows' syntax, expressions and action inputs (and their run: scripts with
# shellcheck, when it is installed).
lint: $(PY_STAMP)
	@$(TIMED) { $(BIN)/ruff check . && $(BIN)/actionlint .github/workflows/*.yml; }

# The browser test is deselected here by the `-m "not browser"` default in pyproject.toml.
# --doctest-modules runs the `>>>` examples in wnlib's docstrings (tests/ has none).
unit: $(PY_STAMP)
	@$(TIMED) $(BIN)/pytest -n $(JOBS) --doctest-modules tests wnlib

# The notebooks' printed numbers should come out the same on other x86-64 machines with AVX2: one thread
# (no thread-count-dependent reduction order) and the AVX2 code paths of ATen, MKL and oneDNN, both when
# the notebooks are executed for a commit (make notebooks) and when nbval re-executes them.
NB_ENV := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=AVX2 ONEDNN_MAX_CPU_ISA=AVX2
NOTEBOOKS := $(shell sed -n 's/^ *- file: \(book\/.*\)/\1/p' _toc.yml | grep -v references)

# Re-execute every chapter in place (after changing wnlib or a chapter), then commit the outputs.
notebooks: $(PY_STAMP)
	@for nb in $(NOTEBOOKS); do \
	    echo "executing $$nb.ipynb"; \
	    env $(NB_ENV) timeout 900 $(BIN)/jupyter execute --inplace $$nb.ipynb 2>&1 \
	        | { grep -v "NbClientApp\|TCP" || true; } || exit 1; \
	done

# Strict nbval: every output is compared, after book/_sanitize.cfg masks addresses, timings and
# paths. --dist loadscope keeps each notebook's cells on one worker (they share a kernel). A cell that
# hangs fails after 10 minutes instead of stalling the run.
nbval: $(PY_STAMP)
	@$(TIMED) env $(NB_ENV) $(BIN)/pytest --nbval --nbval-current-env --nbval-cell-timeout=600 \
	    --nbval-sanitize-with book/_sanitize.cfg -n $(JOBS) --dist loadscope book/

# Needs the built site (make book). Screenshots go to artifacts/screenshots/.
site: $(PY_STAMP)
	@$(TIMED) $(BIN)/pytest -m browser tests/test_site.py

clean:
	rm -rf _build $(VENDOR) node_modules artifacts .pytest_cache

distclean: clean
	rm -rf $(VENV)
