# The two commands at the top of the README:
#   make images   build the runner and worker images (no registry, no Docker daemon)
#   make test     create the environment and run the whole test suite
# The environment (.venv: Python 3.11, 3.12 or 3.13, the classifiers of pyproject.toml, checked by
# tools/supported_python.py) holds exactly requirements/dev.lock.txt, every file
# checked by sha256 (the build toolchain of requirements/build.lock.txt at the same versions,
# plus the test and lint tools), then lockstep itself with --no-deps: nothing else is
# resolved or downloaded. `make lock-builder` refreshes the locks.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
LOCK   := requirements/dev.lock.txt
# checkov pins packaging<24, which dev.lock.txt cannot take: its own hash-checked lock and
# environment, inside .venv so that removing .venv removes it too.
CHECKOV := $(VENV)/checkov/bin/checkov

# MkDocs builds the site from docs/ (mkdocs.yml): its own hash-checked lock and environment,
# like checkov's, so the site's tools never touch the dev lock.
MKDOCS := $(VENV)/docs/bin/mkdocs

# The tests' independent verifiers from npm (tests/node: @sigstore/verify), exactly the
# versions and integrity hashes of tests/node/package-lock.json.
NODE_MODULES := tests/node/node_modules/.package-lock.json

.PHONY: images test lint format bench clean lock-builder docs

$(BIN)/lockstep: pyproject.toml $(LOCK)
	@$(PYTHON) tools/supported_python.py $(PYTHON)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation --no-index -e .
	$(BIN)/python -m pip check
	touch $@

$(CHECKOV): requirements/checkov.lock.txt
	$(PYTHON) -m venv $(VENV)/checkov
	$(VENV)/checkov/bin/python -m pip install --quiet --require-hashes --no-deps -r $<
	$(VENV)/checkov/bin/python -m pip check
	touch $@

$(MKDOCS): requirements/docs.lock.txt
	$(PYTHON) -m venv $(VENV)/docs
	$(VENV)/docs/bin/python -m pip install --quiet --require-hashes --no-deps -r $<
	$(VENV)/docs/bin/python -m pip check
	touch $@

# The site, into site/ (strict: a broken link or a page missing from nav fails).
docs: $(MKDOCS)
	$(MKDOCS) build --strict --site-dir site

# Re-resolve requirements/build.lock.txt and dev.lock.txt from PyPI (tools/lock-builder says
# how): `make lock-builder`, or with LOCK_ARGS=--upgrade / LOCK_ARGS='-P docker'.
lock-builder: $(BIN)/lockstep
	tools/lock-builder $(LOCK_ARGS)

images: $(BIN)/lockstep
	$(BIN)/lockstep build all --out out

# Without npm the tests that need it skip (and fail under LOCKSTEP_REQUIRE_ALL=1, as in CI).
$(NODE_MODULES): tests/node/package.json tests/node/package-lock.json
	@if command -v npm >/dev/null; then \
	  cd tests/node && npm ci --ignore-scripts --no-audit --no-fund && touch node_modules/.package-lock.json; \
	else \
	  echo "make: npm not found: tests/node is not installed, its tests will skip" >&2; \
	fi

test: $(BIN)/lockstep $(CHECKOV) $(MKDOCS) $(NODE_MODULES)
	$(BIN)/pytest -ra $(PYTEST_ARGS)

lint: $(BIN)/lockstep
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy src bench

format: $(BIN)/lockstep
	$(BIN)/ruff format src tests bench

bench: $(BIN)/lockstep
	$(BIN)/python bench/bench_build.py
	$(BIN)/python bench/bench_runtime.py
	$(BIN)/python bench/bench_release.py
	$(BIN)/python bench/bench_replay.py

clean:
	rm -rf out site
