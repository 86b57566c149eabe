#!/usr/bin/env bash
# GPU check on one H100/H200 in about 12 minutes (see benchmarks/gpu_check.py for what it measures):
# (a) chunked divergence in bf16 vs a float32 reference (bf16 and float32 logits), (b) 5 ATESD steps
# of a ~100M-parameter random Qwen3 (HF backend; vLLM when it imports), (c) tokens/s, MFU and peak
# memory, (d) FSDP2 and ZeRO-3 runs through configs/accelerate/ on one GPU (ZeRO-3 needs the
# deepspeed extra), (e) vLLM sleep mode's memory, (f) `atesd eval --backend vllm` vs the HF backend.
# The vLLM parts need vLLM in $VENV (pip install -e '.[vllm]'); without it they are reported skipped.
#
#   bash benchmarks/gpu_check.sh [--json results.json] [--peak-tflops T]
#   bash benchmarks/gpu_check.sh --cpu --tiny       # smoke test of the script itself, on CPU
#
# The virtual environment ($VENV, default .venv) is created with the Makefile when it is missing or
# cannot import atesd. On a GPU machine torch must be the CUDA build: the Makefile installs
# TORCH_SPEC (default torch==2.13.0), which from PyPI on Linux x86_64 is the CUDA build; where pip
# is configured for CPU wheels, point it at a CUDA index matching the driver, e.g.
#   PIP_INDEX_URL=https://download.pytorch.org/whl/cu128 PIP_EXTRA_INDEX_URL=https://pypi.org/simple \
#     VENV=.venv-gpu bash benchmarks/gpu_check.sh
# A venv that already holds a CPU-only torch is not reinstalled: remove it (make clean-venv) or
# choose another VENV. Without a CUDA device the script exits with status 2 and says why.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
PY="$VENV/bin/python"

if [ ! -x "$PY" ] || ! "$PY" -c "import atesd, torch" 2>/dev/null; then
  make "$VENV/.atesd-installed" VENV="$VENV" TORCH_SPEC="$TORCH_SPEC"
fi

cpu_only=0
for arg in "$@"; do [ "$arg" = "--cpu" ] && cpu_only=1; done
if [ "$cpu_only" = 0 ]; then
  if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    build="$("$PY" -c "import torch; print(torch.__version__, 'CUDA', torch.version.cuda)")"
    echo "gpu_check: no CUDA device visible to torch ($build)." >&2
    if "$PY" -c "import sys, torch; sys.exit(0 if torch.version.cuda is None else 1)"; then
      echo "gpu_check: this torch is a CPU-only build; reinstall the CUDA build (see the header of $0)." >&2
    else
      echo "gpu_check: check nvidia-smi and CUDA_VISIBLE_DEVICES; or run with --cpu --tiny for a smoke test." >&2
    fi
    exit 2
  fi
fi

export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" TOKENIZERS_PARALLELISM="${TOKENIZERS_PARALLELISM:-false}"
exec "$PY" benchmarks/gpu_check.py "$@"
