# The two set-up commands of the README. Each installs what it needs, then runs.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
FASHION_MNIST ?= /usr/share/datasets/fashion-mnist

.PHONY: demo test test-extended install install-dev fashion-mnist lint bench

fashion-mnist:
	@test -f $(FASHION_MNIST)/train-images-idx3-ubyte.gz || \
	  { (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null || \
	    echo "could not install dataset-fashion-mnist (needs root and Debian's registry); tests that need it will skip"; }

install: fashion-mnist
	$(PIP) install -q -e .

install-dev: fashion-mnist
	$(PIP) install -q -e ".[dev]"

# Main job on the embedded default: local Ray, Fashion-MNIST, EfficientNet-Lite0.
demo: install
	rmd-ray run --output runs/demo

# The test suite (what CI runs). Ray tests start their own local instance under a timeout.
test: install-dev
	$(PYTHON) -m pytest -q

# Multi-node scenarios whose paths the default suite covers elsewhere (docs/design.md 7.6): ~6 min more.
test-extended: install-dev
	$(PYTHON) -m pytest -q -m extended

lint:
	ruff check rmd_ray tests benchmarks jobs
	lint-imports

bench:
	$(PYTHON) benchmarks/stats_throughput.py
