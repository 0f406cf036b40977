# Two commands on a fresh machine: `make quick` (the main job) and `make test`.
# Each target first builds .venv with the tested versions pinned in constraints.txt.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install quick test lint format bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt -e ".[study,images,ray,dev]"
	touch $(STAMP)

quick: $(STAMP)  ## the main job: the `quick` study on MNIST-1D, then its results table
	$(BIN)/demon-optim run quick

test: $(STAMP)  ## the whole test suite
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks examples

bench: $(STAMP)  ## optimizer step speed against torch's own implementations
	$(BIN)/python benchmarks/step_speed.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
