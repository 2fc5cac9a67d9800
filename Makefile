# Everything a fresh machine needs: `make demo` and `make test` create .venv themselves.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DLMINE_DATA_DIR ?= $(abspath ../shared/data)
# pytest-xdist workers; one test file stays on one worker (--dist loadfile)
TEST_WORKERS ?= 2
export DLMINE_DATA_DIR

.PHONY: demo test lint docs bench gpu-wheels clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/activate
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/activate
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@ $(VENV)/.installed

# Train and evaluate the digits CNN (scikit-learn's bundled data: no network needed).
demo: $(VENV)/.installed
	run=$$($(BIN)/dlmine train configs/digits_cnn.yaml) && $(BIN)/dlmine evaluate "$$run"

test: $(VENV)/.installed-test
	$(BIN)/ruff check dlmine tests benchmarks
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

lint: $(VENV)/.installed-test
	$(BIN)/ruff check dlmine tests benchmarks

# Regenerate the config reference in README.md from the schema.
docs: $(VENV)/.installed
	$(BIN)/python -m dlmine.config.reference --write README.md

# dlmine against the same model as a plain Keras script, alternated, on the real MNIST
# ($DLMINE_DATA_DIR/mnist.npz); rewrites docs/benchmarks.md. Several minutes.
bench: $(VENV)/.installed
	$(BIN)/python benchmarks/vs_plain_keras.py

# Wheels of dlmine, Keras and their small dependencies, and mnist.npz, in .gpu-wheels/ (ignored
# by git), for benchmarks/gpu_check.sh on a GPU machine with JAX and no package registry.
gpu-wheels: $(VENV)/.installed
	PYTHON=$(BIN)/python bash benchmarks/gpu_wheels.sh

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
