# Self-documenting: `make` or `make help` lists the targets with the `##` line above each.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Papermill and nbval runs are headless: log lines instead of live progress widgets.
export DIGITS_HEADLESS := 1

.PHONY: help env reproduce test test-unit test-notebooks smoke bench lab sweep-worker clean

## help: list the targets
help:
	@awk '/^## /{sub(/^## /,""); split($$0,a,": "); printf "  make %-14s %s\n", a[1], a[2]}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e .
	touch $@

## env: create .venv with the pinned dependencies (run by every target that needs it)
env: $(STAMP)

## reproduce: run notebooks 01 -> 07 headlessly with papermill; executed notebooks and figures are written back
reproduce: $(STAMP)
	$(BIN)/python -m helpers.notebooks run

## test: the whole suite: unit tests, nbval on every committed notebook, a small papermill smoke run
test: test-unit test-notebooks smoke

## test-unit: unit and integration tests under tests/
test-unit: $(STAMP)
	$(BIN)/python -m pytest tests -q

## test-notebooks: nbval re-executes the committed notebooks and checks their marked outputs
test-notebooks: $(STAMP)
	$(BIN)/python -m pytest --nbval-lax --nbval-sanitize-with notebooks/nbval_sanitize.cfg -p no:cacheprovider notebooks -q

## smoke: every notebook through papermill with small parameters, into a temporary folder
smoke: $(STAMP)
	$(BIN)/python -m helpers.notebooks smoke

## bench: loader and training-step benchmarks (seed-style pipeline vs ours vs the compute floor)
bench: $(STAMP)
	$(BIN)/python -m helpers.bench

## lab: open JupyterLab on the notebooks
lab: $(STAMP)
	DIGITS_HEADLESS= $(BIN)/jupyter lab notebooks

## sweep-worker: join a study from another machine: make sweep-worker STUDY=06_grid_search STORAGE=postgresql://...
sweep-worker: $(STAMP)
	@test -n "$(STUDY)" -a -n "$(STORAGE)" || { echo "usage: make sweep-worker STUDY=<04_lr_sweep|05_batch_sweep|06_grid_search> STORAGE=postgresql://user:pass@host/db [WORKERS=n]"; exit 2; }
	$(BIN)/python -m helpers.sweep worker --study $(STUDY) --storage '$(STORAGE)' $(if $(WORKERS),--workers $(WORKERS))

## clean: remove prepared data, checkpoints and study storage (keeps the downloaded archives)
clean:
	find data -mindepth 1 -maxdepth 1 ! -name raw ! -name README.md -exec rm -rf {} +
