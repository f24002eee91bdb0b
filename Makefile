# Every command a reader or CI needs. Only python3 is required: the first target that
# needs the stack creates .venv/ and installs the pinned versions from pyproject.toml.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
NBMAKE_TIMEOUT ?= 600

.PHONY: help install lint format notebooks test unit book clean

help:
	@echo "make book       build the executed HTML book into _build/html"
	@echo "make test       lint + unit tests + execute every chapter (nbmake)"
	@echo "make unit       unit tests only (fast)"
	@echo "make notebooks  regenerate the Colab notebooks in notebooks/ from book/*.md"
	@echo "make format     apply ruff's formatter and import sorting"
	@echo "make clean      remove _build/ (keeps .venv/)"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check
	$(BIN)/ruff format --check

format: $(STAMP)
	$(BIN)/ruff check --fix
	$(BIN)/ruff format

notebooks: $(STAMP)
	$(BIN)/python tools/notebooks.py

unit: $(STAMP)
	$(BIN)/python -m pytest tests

# The unit tests check that notebooks/ matches book/; nbmake then executes every chapter.
test: lint $(STAMP)
	$(BIN)/python -m pytest --nbmake --nbmake-timeout=$(NBMAKE_TIMEOUT) tests notebooks

book: $(STAMP)
	$(BIN)/jupyter-book build . --builder html -W -n --keep-going

clean:
	rm -rf _build
