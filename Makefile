# Self-documenting: `make` or `make help` lists the targets with the `##` line above each.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Papermill and nbval runs are headless: log lines instead of live progress widgets.
export DIGITS_HEADLESS := 1

.PHONY: help env reproduce reproduce-full compare-recipes kaggle test test-unit test-notebooks smoke bench lab worker clean

## help: list the targets
help:
	@awk '/^## /{sub(/^## /,""); split($$0,a,": "); printf "  make %-14s %s\n", a[1], a[2]}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e .
	touch $@

## env: create .venv with the pinned dependencies (run by every target that needs it)
env: $(STAMP)

## reproduce: run notebooks 01 -> 07 headlessly with papermill; executed notebooks, figures and README numbers are written back
reproduce: $(STAMP)
	$(BIN)/python -m helpers.notebooks run
	$(BIN)/python -m helpers.readme

## reproduce-full: studies 04-06 at the seed's budget (20 epochs, every point, all digits) -> figures/full/
reproduce-full: $(STAMP)
	$(BIN)/python -m helpers.notebooks full $(if $(SEEDS),--seeds $(SEEDS))
	$(BIN)/python -m helpers.readme

## compare-recipes: the final model's candidate recipes, 3 seeds each, on validation -> figures/full/06_recipes.json; then the long MLP and the convnet beyond the budget -> figures/full/06_beyond.json and beyond/
compare-recipes: $(STAMP)
	$(BIN)/python -m helpers.final compare
	$(BIN)/python -m helpers.final beyond

## kaggle: the Kaggle round trip, MNIST as train.csv and test.csv (test labels held back), 01 -> 07 on them, submission.csv and a refit scored -> figures/kaggle.json (REFIT=0 skips the refit)
kaggle: $(STAMP)
	$(BIN)/python -m helpers.submit $(if $(filter 0,$(REFIT)),,--refit)
	$(BIN)/python -m helpers.readme

## test: the whole suite: unit tests, nbval on every committed notebook, a small papermill smoke run
test: test-unit test-notebooks smoke

## test-unit: unit and integration tests under tests/
test-unit: $(STAMP)
	$(BIN)/python -m pytest tests -q

## test-notebooks: nbval re-executes the committed notebooks (in a temporary folder), checks their marked outputs, then compares their fresh JSON results with the committed ones
test-notebooks: $(STAMP)
	$(BIN)/python -m helpers.notebooks nbval

## smoke: every notebook through papermill with small parameters, into a temporary folder
smoke: $(STAMP)
	$(BIN)/python -m helpers.notebooks smoke

## bench: loader, training-step and stacked-trainer benchmarks (seed-style pipeline vs ours vs the compute floor; hand-written backward vs autograd -> figures/bench_stacked.json and the README)
bench: $(STAMP)
	$(BIN)/python -m helpers.bench
	$(BIN)/python -m helpers.readme

## lab: open JupyterLab on the notebooks
lab: $(STAMP)
	DIGITS_HEADLESS= $(BIN)/jupyter lab notebooks $(if $(filter 0,$(shell id -u)),--allow-root)

## worker: join a study from another machine: DIGITS_STORAGE=postgresql://... make worker NOTEBOOK=06_grid_search
worker: $(STAMP)
	@test -n "$(NOTEBOOK)" || { echo "usage: DIGITS_STORAGE=postgresql://user@host/db make worker NOTEBOOK=<04_lr_sweep|05_batch_sweep|06_grid_search> [WORKERS=n]  (password: PGPASSWORD, ~/.pgpass or inside DIGITS_STORAGE)"; exit 2; }
	$(BIN)/python -m helpers.workers --notebook $(NOTEBOOK) $(if $(WORKERS),--workers $(WORKERS))

## clean: remove prepared data, checkpoints and study storage (keeps the downloaded archives)
clean:
	find data -mindepth 1 -maxdepth 1 ! -name raw ! -name README.md -exec rm -rf {} +
