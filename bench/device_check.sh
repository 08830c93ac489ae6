#!/usr/bin/env bash
# The GPU-only checks, as one short script for a session that is lent a GPU machine.
# That machine's image already holds torch, pytorch-lightning, lightning, torchmetrics,
# tensorboard and pytest, and it reaches no registry: the package runs from the
# working tree through PYTHONPATH. Tables go to $OUT (the device tool's folder) or bench/out.
#   1. the CUDA tests (callback placement and mixed precision, render on CUDA tensors);
#   2. bench/batch_size.py, bench/solver.py and bench/memory.py on cuda, for bench/README.md.
# Usage (device tool): bash bench/device_check.sh     (about 6 minutes on an H200)
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-bench/out}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))" 2>&1 | tee "$out/device.txt"
python3 -m pytest -q -p no:cacheprovider tests/test_callback.py tests/test_render.py tests/test_solver.py \
    -k "cuda or bf16" 2>&1 | tail -15 | tee "$out/cuda_tests.txt"
python3 bench/batch_size.py --device cuda --threads 16 --sizes 1,8,32,64,128,256,512 2>&1 | tee "$out/batch_size_cuda.txt"
python3 bench/solver.py --device cuda --threads 16 --repeats 3 2>&1 | tee "$out/solver_cuda.txt"
python3 bench/memory.py --device cuda --threads 16 2>&1 | grep -v "^USDT\|^ERROR" | tee "$out/memory_cuda.txt"
