# Everything runs in .venv/, created on first use and re-installed when pyproject.toml or
# uv-overrides.txt change. `make help` lists the targets.
#   make test    the default test suite (no `slow`, no `gpu` tests)
#   make demo    a small synthetic corpus and a preview image in outputs/demo/

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
PYTEST_ARGS ?=

# The install stamp is named after the content of the install inputs, not their times: a fresh clone
# (new file times) reuses a cached venv, and any edit re-installs. .ci/run keys its venv cache on it.
INSTALL_INPUTS := pyproject.toml uv-overrides.txt
INSTALL_HASH := $(shell cat $(INSTALL_INPUTS) | sha256sum | cut -c1-16)
STAMP := $(VENV)/.installed-$(INSTALL_HASH)

.PHONY: help install test demo clean distclean install-hash

help:
	@echo "make install   create .venv/ and install the project (editable) with its dev extras"
	@echo "make test      run the default test suite (PYTEST_ARGS='-m slow' for the slow tests)"
	@echo "make demo      write a synthetic corpus and a preview to outputs/demo/"
	@echo "make clean     remove caches, build metadata and outputs/demo/ (keeps .venv/ and runs)"
	@echo "make distclean clean, and remove .venv/"

install: $(STAMP)

# uv's --compile-bytecode matters here: this environment sets PYTHONDONTWRITEBYTECODE, and without .pyc
# files every process (test, DDP rank, data worker) takes twice as long to import torch and friends.
$(STAMP):
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@test -x $(UV) || $(PY) -m pip install --quiet --disable-pip-version-check "uv>=0.5"
	$(UV) pip install --python $(PY) --compile-bytecode --override uv-overrides.txt -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

install-hash:
	@echo $(INSTALL_HASH)

test: install
	rc=0; $(PY) -m pytest $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; exit $$rc

demo: install
	$(PY) -m data_prep.synthetic --out outputs/demo/corpus --speakers 4 --clips-per-speaker 2 \
		--seconds 4 --seed 0 --preview outputs/demo/preview.png
	$(PY) -m data_prep.synthetic.check outputs/demo/corpus --every 4 2>/dev/null
	@echo "demo corpus: outputs/demo/corpus/"
	@echo "preview:     outputs/demo/preview.png"

clean:
	rm -rf outputs/demo .pytest_cache *.egg-info build
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
