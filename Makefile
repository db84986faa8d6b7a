# Every target works on a fresh Debian machine (as root, with only Python present): it installs what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
APT_PACKAGES := ffmpeg espeak-ng sox
OFFLINE := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=offline

.PHONY: install test test-slow demo demo-pretrain lint benchmark gpu-check clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@missing=""; for p in $(APT_PACKAGES); do command -v $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "missing system packages:$$missing (run: sudo apt-get install$$missing)"; exit 1; fi; \
	fi
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

test: install
	$(OFFLINE) $(BIN)/python -m pytest -q -m "not slow"

test-slow: install
	$(OFFLINE) $(BIN)/python -m pytest -q -m slow

demo: install
	$(OFFLINE) $(BIN)/meritsl demo --out runs/demo --strict

demo-pretrain: install
	$(OFFLINE) $(BIN)/meritsl demo-pretrain --out runs/demo-pretrain

lint: install
	$(BIN)/ruff check meritsl_lightning tests benchmarks

benchmark: install
	$(OFFLINE) $(BIN)/python benchmarks/startup.py
	$(OFFLINE) $(BIN)/python benchmarks/stage2_cache.py --paper-sized-text
	$(OFFLINE) $(BIN)/python benchmarks/text_pretrain_throughput.py --device cpu --small
	$(OFFLINE) $(BIN)/python benchmarks/care_throughput.py --device cpu --small

gpu-check: install
	$(OFFLINE) $(BIN)/python benchmarks/gpu_check.py

clean:
	rm -rf runs .pytest_cache
