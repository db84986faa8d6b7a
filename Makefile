# Every target works on a fresh Debian machine (as root, with only Python present): it installs what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
APT_PACKAGES := ffmpeg espeak-ng sox
OFFLINE := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=offline

.PHONY: install test test-slow demo demo-pretrain lint benchmark gpu-check clean reproduce-table1 reproduce-fig4 reproduce-oof

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

# make reproduce-table1 [IEMOCAP_ROOT=.. MELD_ROOT=.. MOSI_ROOT=..] [SEEDS="0 1 2 3 4"] [OUT=runs/table1]
#   [TEXT_ENCODER=..] [SPEECH_ENCODER=care:..] [MSP_PODCAST_ROOT=.. LLM_MODEL=.. LLM_BASE_URL=.. LLM_API_KEY_ENV=..]
#   [GENERATED=1] [PARALLEL=N] [WANDB=1]   (see README, "Reproducing Table 1")
# make reproduce-fig4: the same variables; hierarchical vs end-to-end training on IEMOCAP (README, "Figure 4")
# make reproduce-oof: the same variables; the hierarchy on in-sample vs out-of-fold Stage I embeddings
REPRODUCE_ARGS = --seeds $(SEEDS) --out "$(OUT)" \
	  --parallel $(or $(PARALLEL),1) $(if $(filter 1,$(GENERATED)),--generated) $(if $(filter 1,$(WANDB)),--wandb) \
	  $(if $(IEMOCAP_ROOT),--iemocap-root "$(IEMOCAP_ROOT)") $(if $(MELD_ROOT),--meld-root "$(MELD_ROOT)") \
	  $(if $(MOSI_ROOT),--mosi-root "$(MOSI_ROOT)") $(if $(TEXT_ENCODER),--text-encoder "$(TEXT_ENCODER)") \
	  $(if $(SPEECH_ENCODER),--speech-encoder "$(SPEECH_ENCODER)") \
	  $(if $(MSP_PODCAST_ROOT),--msp-podcast-root "$(MSP_PODCAST_ROOT)") $(if $(LLM_MODEL),--llm-model "$(LLM_MODEL)") \
	  $(if $(LLM_BASE_URL),--llm-base-url "$(LLM_BASE_URL)") $(if $(LLM_API_KEY_ENV),--llm-api-key-env "$(LLM_API_KEY_ENV)")

REPRODUCTIONS := reproduce-table1 reproduce-fig4 reproduce-oof
$(REPRODUCTIONS): SEEDS ?= 0 1 2 3 4
$(REPRODUCTIONS): OUT ?= runs/$(patsubst reproduce-%,%,$@)
$(REPRODUCTIONS): install
	$(if $(filter 1,$(GENERATED)),$(OFFLINE)) $(BIN)/meritsl reproduce $(patsubst reproduce-%,%,$@) $(REPRODUCE_ARGS)

clean:
	rm -rf runs .pytest_cache
