# Everything a fresh machine needs: `make demo` and `make test` create .venv themselves.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DLMINE_DATA_DIR ?= $(abspath ../shared/data)
# pytest-xdist workers; one test file stays on one worker (--dist loadfile)
TEST_WORKERS ?= 2
export DLMINE_DATA_DIR

.PHONY: demo test chromium postgres lint docs bench movielens bench-recommend gpu-wheels constraints clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# constraints.txt pins every package to the version the suite passed with
$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/activate
	$(BIN)/python -m pip install -q -c constraints.txt -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml constraints.txt | $(BIN)/activate
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[test]"
	touch $@ $(VENV)/.installed

# Train and evaluate the digits CNN (scikit-learn's bundled data: no network needed).
demo: $(VENV)/.installed
	run=$$($(BIN)/dlmine train configs/digits_cnn.yaml) && $(BIN)/dlmine evaluate "$$run"

# The report test opens report.html in headless Chromium (Debian's package).
chromium:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
		|| { echo "make test needs Debian's chromium (apt-get install chromium)"; exit 1; }

# The shared-study tests start a throwaway PostgreSQL server (Debian's package: initdb, pg_ctl).
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
		|| { echo "make test needs Debian's postgresql (apt-get install postgresql)"; exit 1; }

test: $(VENV)/.installed-test chromium postgres
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

# MovieLens-100K (from the recbole==1.2.1 wheel) as CSVs in data/movielens/ (git-ignored: its
# licence forbids redistribution).
movielens: $(VENV)/.installed
	$(BIN)/python scripts/movielens.py

# dlmine's recommenders against Surprise and implicit on MovieLens-100K; rewrites the
# recommender section of docs/benchmarks.md.
bench-recommend: movielens
	$(BIN)/python -m pip install -q -e ".[bench]"
	$(BIN)/python benchmarks/recommend.py

# Wheels of dlmine, Keras and their small dependencies, and mnist.npz, in .gpu-wheels/ (ignored
# by git), for benchmarks/gpu_check.sh on a GPU machine with JAX and no package registry.
gpu-wheels: $(VENV)/.installed
	PYTHON=$(BIN)/python bash benchmarks/gpu_wheels.sh

# After an upgrade that the suite passed with: pin the versions it passed with.
constraints: $(VENV)/.installed-test
	(sed -n 1,2p constraints.txt; $(BIN)/python -m pip freeze --exclude-editable | grep -v '^dlmine') > constraints.new
	mv constraints.new constraints.txt

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
