# The two commands at the top of the README:
#   make images   build the runner and worker images (no registry, no Docker daemon)
#   make test     create the environment and run the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: images test lint format bench clean

$(BIN)/lockstep: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

images: $(BIN)/lockstep
	$(BIN)/lockstep build all --out out

test: $(BIN)/lockstep
	$(BIN)/pytest -ra $(PYTEST_ARGS)

lint: $(BIN)/lockstep
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy src

format: $(BIN)/lockstep
	$(BIN)/ruff format src tests bench

bench: $(BIN)/lockstep
	$(BIN)/python bench/bench_build.py
	$(BIN)/python bench/bench_runtime.py
	$(BIN)/python bench/bench_release.py
	$(BIN)/python bench/bench_replay.py

clean:
	rm -rf out
