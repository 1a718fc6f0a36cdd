# tinygrad_book: the book (notebooks in nbs/) and the package (tinygrad_book/) they export.
#   make book    create/reuse .venv, export the package, run the notebooks (incrementally), build the site
#   make test    the whole test suite, what CI (.ci/run) runs
#   make readme  regenerate README.md from nbs/index.ipynb
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := book

VENV  ?= .venv
BIN   := $(VENV)/bin
PY    := $(BIN)/python
# The install step reruns when the *content* of the packaging files changes, not their mtimes
# (nbdev_export rewrites pyproject.toml with the same text on every run).
DEPS_HASH := $(shell cat settings.ini setup.py pyproject.toml 2>/dev/null | sha256sum | cut -c1-16)
STAMP := $(VENV)/.stamp-$(DEPS_HASH)

# Compiled extensions are cached inside the project, not in ~/.cache
export TORCH_EXTENSIONS_DIR := $(CURDIR)/.cache/torch_extensions
# nbdev_export, nbdev_test, smalldocs... come from the venv
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: book test readme venv export execute site check-export check-readme ext check-cuda nbtest pytest clean

## ---------------------------------------------------------------- user-facing targets

book: $(STAMP)
	@echo "== nbdev_export"
	$(BIN)/nbdev_export
	@echo "== building the C++ extensions (once; the notebooks then load them from the cache)"
	$(PY) -m tinygrad_book.ext build
	@echo "== running the notebooks (unchanged ones are skipped; FORCE=1 reruns all)"
	$(PY) tools/run_nbs.py $(if $(FORCE),--force)
	$(PY) tools/readme.py
	@echo "== rendering the site"
	@index=$$($(PY) tools/build_site.py -q | tail -n 1); echo; echo "The book is at: $$index"

test: $(STAMP)
	@echo "== (a) nbdev_export must not change tinygrad_book/"
	$(PY) tools/check_export.py
	@echo "== (b) README.md must be up to date with nbs/index.ipynb"
	$(PY) tools/readme.py --check
	@echo "== (c) building the C++ extensions"
	$(PY) -m tinygrad_book.ext build
	@echo "== (d) CUDA extensions (only with nvcc)"
	@if command -v nvcc >/dev/null 2>&1; then echo "$(PY) -m tinygrad_book.ext check-cuda"; $(PY) -m tinygrad_book.ext check-cuda; else echo "nvcc not found: skipped"; fi
	@echo "== (e) nbdev_test (cells flagged $$(sed -n 's/^tst_flags *= *//p' settings.ini) are skipped)"
	$(BIN)/nbdev_test --n_workers 2
	@echo "== (f) pytest"
	$(PY) -m pytest tests/ -n 2

readme: $(STAMP)
	$(PY) tools/readme.py

## ---------------------------------------------------------------- pieces

# One pip call, with torch pinned beside everything that depends on it (a bare `torch` would pull a CUDA build).
$(STAMP):
	@test -x $(PY) || { echo "== creating $(VENV)"; python3 -m venv $(VENV); }
	$(BIN)/pip install torch==2.13.0 'nbdev<3' 'fastcore<1.13' 'execnb<0.2' 'ghapi<1.1' -e '.[dev]'
	rm -f $(VENV)/.stamp*
	touch $@

venv: $(STAMP)

export: $(STAMP)
	$(BIN)/nbdev_export

execute: export
	$(PY) tools/run_nbs.py $(if $(FORCE),--force)

site: $(STAMP)
	$(PY) tools/build_site.py

check-export: $(STAMP)
	$(PY) tools/check_export.py

check-readme: $(STAMP)
	$(PY) tools/readme.py --check

ext: $(STAMP)
	$(PY) -m tinygrad_book.ext build

check-cuda: $(STAMP)
	$(PY) -m tinygrad_book.ext check-cuda

nbtest: $(STAMP)
	$(BIN)/nbdev_test --n_workers 2

pytest: $(STAMP)
	$(PY) -m pytest tests/ -n 2

clean:
	rm -rf _site _proc .cache/exec build dist *.egg-info
