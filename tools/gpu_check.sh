#!/usr/bin/env bash
# The book's GPU check, for a machine with an NVIDIA GPU and a CUDA build of torch (never part of CI).
# Covers every chapter without a hard-coded list: builds every op library (CPU and CUDA halves), runs every
# test marked `cuda` under tests/, and every chapter's benchmark (chapters found by tinygrad_book.bench).
#   bash tools/gpu_check.sh [OUTDIR]      (a log is written to OUTDIR/gpu_log.txt)
#   QUICK=1 bash tools/gpu_check.sh       (benchmarks with --quick: checks they run, in seconds)
set -uo pipefail
OUTDIR=${1:-${OUT:-/tmp/tgb_gpu}}
mkdir -p "$OUTDIR"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-/tmp/tgb_ext} PYTHONUNBUFFERED=1
PY=${PY:-python3}
status=0
exec > >(tee "$OUTDIR/gpu_log.txt") 2>&1  # a log beside the terminal output
echo "== device"; nvidia-smi -L
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
echo "== CPU extensions"; time $PY -m tinygrad_book.ext build || status=1
echo "== nvcc -c"; $PY -m tinygrad_book.ext check-cuda || status=1
echo "== CUDA extensions (every op library with a .cu file)"
time $PY -c "
from tinygrad_book.ext import load_ops, cpu_extensions, CSRC
names = [n for n in cpu_extensions() if (CSRC/f'{n}.cu').exists()]
for n in names: load_ops(n, cuda=True); print('loaded', n, '(CPU + CUDA)')" || status=1
echo "== tests marked cuda"
$PY -m pytest tests/ -q -m cuda --maxfail=20 -p no:cacheprovider || status=1
echo "== GPT-2: a short training run on the GPU (bf16 autocast, fused AdamW, torch.compile)"
$PY -m tinygrad_book.gpt2 prepare && \
  $PY -m tinygrad_book.gpt2 train --preset cpu-tiny --device cuda --compile --max-steps 50 --out-dir .cache/gpt2/gpu-smoke || status=1
echo "== benchmarks (every chapter)"
for ch in $($PY -c "from tinygrad_book.bench import chapters; print(' '.join(sorted(chapters())))"); do
    echo "-- $ch"; $PY -m tinygrad_book.bench "$ch" ${QUICK:+--quick} --repeats 10 || status=1
done
echo "== gpu_check exit status: $status"
exit $status
