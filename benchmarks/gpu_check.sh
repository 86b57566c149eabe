#!/usr/bin/env bash
# GPU check on one H100/H200 in under 9 minutes, without installing anything (benchmarks/gpu_check.py
# lists its sections, their time budgets and what each measures). It runs with the machine's own
# Python and torch ($PYTHON, default python3) and the repository's source (PYTHONPATH=src): no make,
# no pip, no network. The pure-Python packages atesd needs that such a machine may lack (omegaconf,
# math-verify and theirs) travel with the tree as wheels in .gpu-wheels/ (ignored by git, ~0.7 MB),
# downloaded beforehand on a machine with network by
#   bash benchmarks/gpu_check.sh --download-wheels
# and unpacked here into .gpu-wheels/site (a wheel is a zip archive; pure-Python ones need nothing
# else), which goes on PYTHONPATH after src/ when the machine lacks any of these packages.
#
#   bash benchmarks/gpu_check.sh --json results.json       # all sections (those needing a GPU skip without one)
#   bash benchmarks/gpu_check.sh --cpu --tiny --json r.json  # every section on CPU, tiny sizes (smoke test)
#   bash benchmarks/gpu_check.sh --install ...               # instead: the Makefile's venv ($VENV), as before
#
# On a borrowed GPU machine without network, carry .gpu-wheels/ with the tree (it is ignored by git)
# and run `bash benchmarks/gpu_check.sh --json "$OUT/gpu_check.json"` (under 9 minutes; let the
# command's own limit be ~10 minutes); commit the JSON it returns (e.g. benchmarks/gpu_results/).
#
# The report (JSON) is rewritten after every section, so a check cut short still leaves what
# finished. Without a CUDA device only the environment section runs (~30 s) and the script exits 0
# unless that section finds a failure (an atesd module that does not import, a torch API missing).
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=".gpu-wheels"
# omegaconf 2.4 needs PyYAML (transformers brings it); math-verify needs latex2sympy2_extended, which
# needs antlr4 and sympy (torch brings sympy). Versions: those the project's environment resolves.
WHEEL_SPECS=("omegaconf==2.4.0" "antlr4-python3-runtime==4.13.2" "math-verify==0.9.0" "latex2sympy2_extended==1.11.0")

if [ "${1:-}" = "--download-wheels" ]; then
  mkdir -p "$WHEELS"
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$WHEELS" "${WHEEL_SPECS[@]}"
  ls -l "$WHEELS"/*.whl
  exit 0
fi

if [ "${1:-}" = "--install" ]; then
  shift
  VENV="${VENV:-.venv}"
  TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
  if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import atesd, torch" 2>/dev/null; then
    make "$VENV/.atesd-installed" VENV="$VENV" TORCH_SPEC="$TORCH_SPEC"
  fi
  PYTHON="$VENV/bin/python"
else
  PYTHON="${PYTHON:-python3}"
  if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    for wheel in "$WHEELS"/*.whl; do  # unpack once per wheel (a marker per wheel name)
      marker="$WHEELS/site/.$(basename "$wheel").unpacked"
      if [ ! -e "$marker" ]; then
        mkdir -p "$WHEELS/site"
        "$PYTHON" -m zipfile -e "$wheel" "$WHEELS/site"
        touch "$marker"
      fi
    done
  fi
  # carried wheels only where the machine lacks the package: a package it has stays its own
  extra=""
  if [ -d "$WHEELS/site" ]; then
    extra="$("$PYTHON" - "$WHEELS/site" <<'PY'
import importlib.util, os, sys
site = sys.argv[1]
names = [n for n in os.listdir(site) if not n.endswith((".dist-info", ".unpacked")) and not n.startswith(".")]
def absent(name):
    try:
        return importlib.util.find_spec(name.removesuffix(".py")) is None
    except (ImportError, ValueError):
        return True
print(os.path.abspath(site) if any(absent(n) for n in names) else "")
PY
)"
  fi
  export PYTHONPATH="$PWD/src${extra:+:$extra}${PYTHONPATH:+:$PYTHONPATH}"
fi

if ! "$PYTHON" -c "import torch" 2>/dev/null; then
  echo "gpu_check: $PYTHON cannot import torch; set PYTHON to an interpreter with torch, or use --install" >&2
  exit 2
fi
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" TOKENIZERS_PARALLELISM="${TOKENIZERS_PARALLELISM:-false}"
exec "$PYTHON" benchmarks/gpu_check.py "$@"
