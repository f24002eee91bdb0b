# Every command a reader or CI needs. Only python3 is required: the first target that
# needs the stack creates .venv/ and installs the pinned versions from pyproject.toml.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# matplotlib's font cache describes the fonts of one installation: keep it with that
# installation, so a cache written by another clone's .venv (since deleted) is never read.
export MPLCONFIGDIR := $(abspath $(VENV))/matplotlib

.PHONY: help install browser lint format notebooks lab test unit book pdf bench mutation clean

help:
	@echo "make book       build the executed HTML book into _build/html"
	@echo "make pdf        the whole book as one PDF, _build/pdf/vaebook.pdf (builds the book if missing)"
	@echo "make test       lint, unit tests, clean book build checked in Chromium, every notebook run"
	@echo "make unit       unit tests only (fast; skips the book build and the Colab run)"
	@echo "make bench      time every chapter and the kernels; writes benchmarks/results.md"
	@echo "make mutation   mutation-test each module against its own test file (MODULE=gaussian:"
	@echo "                one module); writes benchmarks/mutation.md. Not part of make test"
	@echo "make notebooks  regenerate the notebooks in notebooks/ and the study guide's tables"
	@echo "make lab        open the chapters' notebooks (notebooks/) in JupyterLab"
	@echo "make format     apply ruff's formatter and import sorting"
	@echo "make clean      remove _build/ (keeps .venv/)"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

install: $(STAMP)

# The browser tests drive Debian's chromium through Debian's chromedriver; nothing is downloaded.
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
browser:
	@test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || { \
	  echo "installing Debian's chromium and chromium-driver for the browser tests"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) apt-get install -y -qq --no-install-recommends chromium chromium-driver; }

lint: $(STAMP)
	$(BIN)/ruff check
	$(BIN)/ruff format --check

format: $(STAMP)
	$(BIN)/ruff check --fix
	$(BIN)/ruff format

notebooks: $(STAMP)
	$(BIN)/python tools/notebooks.py
	$(BIN)/python tools/studyguide.py

# JupyterLab on the chapters as notebooks. They are generated from book/*.md (the sources):
# edit a chapter there, then `make notebooks`.
lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

unit: $(STAMP)
	$(BIN)/python -m pytest -m "not book" tests

# Everything: the unit tests; the book built from clean with `make clean book` and every page
# checked in Chromium; every Colab notebook executed in a fresh kernel, gluing the numbers the
# book build glued (tests/test_reproducible.py); one of them run in a fresh virtualenv as Colab.
test: lint browser $(STAMP)
	$(BIN)/python -m pytest --durations=15 tests

# Only the chapters whose code changed are executed again (jupyter-cache); a change to vaebook's
# sources or to the pins clears the cache first (tools/bookcache.py).
book: $(STAMP)
	$(BIN)/python tools/bookcache.py
	$(BIN)/jupyter-book build . --builder html -W -n --keep-going

# One PDF of the book: every page of _toc.yml printed by Debian's chromium (math typeset,
# solutions open), merged by pypdf with a bookmark per page. Nothing is downloaded; the book
# is built first only when there is none (`make book` rebuilds an old one).
pdf: browser $(STAMP)
	test -f _build/html/index.html || $(MAKE) book
	$(BIN)/python tools/bookpdf.py _build/html -o _build/pdf/vaebook.pdf

# Wall time and memory of every chapter, make test / make book from a fresh clone, and the
# kernel micro-benchmarks: about 45 minutes. Run it on an otherwise idle machine.
bench: browser $(STAMP)
	$(BIN)/python benchmarks/run.py --out benchmarks/results.md

# Mutation testing with mutmut (the `mutation` extra): each vaebook/<module>.py against
# tests/test_<module>.py only, one worker, in scratch copies under .mutation/: minutes to most
# of an hour per module (benchmarks/mutation.md has the times). MODULE=gaussian selects one.
MODULE ?=
MUTATION_STAMP := $(VENV)/.mutation-stamp
$(MUTATION_STAMP): pyproject.toml $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[mutation]"
	touch $@

mutation: $(MUTATION_STAMP)
	$(BIN)/python tools/mutation.py $(MODULE)

clean:
	rm -rf _build
