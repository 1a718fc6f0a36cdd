#!/usr/bin/env bash
# The book's GPU check, for a machine with an NVIDIA GPU and a CUDA build of torch (never part of CI):
# builds the CPU and CUDA extensions, runs every test marked `cuda`, and the GPU benchmarks.
#   bash tools/gpu_check.sh [OUTDIR]      (a log is written to OUTDIR/gpu_log.txt)
set -uo pipefail
OUTDIR=${1:-${OUT:-/tmp/tgb_gpu}}
mkdir -p "$OUTDIR"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-/tmp/tgb_ext} PYTHONUNBUFFERED=1
PY=${PY:-python3}
{
  echo "== device"; nvidia-smi -L
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
  echo "== CPU extensions"; time $PY -m tinygrad_book.ext build
  echo "== nvcc -c"; $PY -m tinygrad_book.ext check-cuda
  echo "== CUDA extensions"
  time $PY -c "from tinygrad_book.ext import load_ops; [load_ops(n) for n in ('silu', 'softmax')]; print('loaded')"
  echo "== tests marked cuda"; $PY -m pytest tests/test_softmax.py tests/test_ext.py -q -m cuda --maxfail=20 -p no:cacheprovider
  echo "== benchmarks"; $PY -m tinygrad_book.bench softmax --repeats 10
} 2>&1 | tee "$OUTDIR/gpu_log.txt"
