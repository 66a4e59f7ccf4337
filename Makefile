# Set-up in two commands: `make demo` and `make test` create the virtualenv when it is missing,
# install the package (and the test extra), then run the demo / the test suite. Idempotent: stamp
# files in the virtualenv record what is installed; a changed setup.py reinstalls the package.
#
#   make demo                          # the CPU demo (README "Demo"); DEMO_ARGS='--iters 500' ...
#   make test                          # the whole suite, one pytest-xdist worker per core (PYTEST_WORKERS=0: one process);
#                                      # PYTEST_ARGS='tests/test_spandrel.py -x' narrows it
#   make test PYTHON=python3.12 VENV=.venv312   # another interpreter (a virtualenv each)
#   make wheelhouse                    # tools/build_wheelhouse.sh (offline wheels)

PYTHON ?= python3
VENV ?= .venv
DEMO_ARGS ?= --out demo_output
PYTEST_ARGS ?=
PYTEST_WORKERS ?= auto

VPY := $(VENV)/bin/python
PIP := $(VPY) -m pip

# a virtualenv made by another Python is an error, not silently reused
PY_VERSION = import sys; print(*sys.version_info[:2], sep=".")
ifneq ($(wildcard $(VPY)),)
ifneq ($(shell $(VPY) -c '$(PY_VERSION)'),$(shell $(PYTHON) -c '$(PY_VERSION)'))
$(error $(VENV) was made by Python $(shell $(VPY) -c '$(PY_VERSION)'), not $(PYTHON): remove it or set VENV to another folder)
endif
endif

.PHONY: demo test wheelhouse
.DELETE_ON_ERROR:

demo: $(VENV)/.stamp-package
	$(VPY) tools/demo.py $(DEMO_ARGS)

test: $(VENV)/.stamp-test
	$(VPY) -m pytest -q -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

wheelhouse: $(VENV)/.stamp-test
	PYTHON="$(abspath $(VPY))" bash tools/build_wheelhouse.sh

# torch first: basicsr 1.4.2 is a source package that imports torch in its build (hence
# --no-build-isolation).
$(VENV)/.stamp-base:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip setuptools wheel
	$(PIP) install torch torchvision
	$(PIP) install --no-build-isolation basicsr==1.4.2
	touch $@

$(VENV)/.stamp-package: setup.py $(VENV)/.stamp-base
	$(PIP) install -e .
	touch $@

$(VENV)/.stamp-test: setup.py $(VENV)/.stamp-base
	$(PIP) install -e ".[test]"
	touch $@
