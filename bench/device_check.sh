#!/usr/bin/env bash
# The GPU-only checks, as one short script for a session that is lent a GPU machine
# (run from the repository root; writes its tables to $OUT or bench/out).
#   1. the CUDA tests (callback placement, bf16/16-mixed training, render on CUDA tensors);
#   2. the solver's bf16 autocast agreement test on the GPU;
#   3. bench/batch_size.py and bench/solver.py on cuda, for bench/README.md.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-bench/out}"
mkdir -p "$out"
python3 -m venv .venv-gpu
.venv-gpu/bin/pip install --quiet torch==2.14.1 torchvision==0.29.1 && .venv-gpu/bin/pip install --quiet -e ".[dev]"
py=.venv-gpu/bin/python
$py -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))" | tee "$out/device.txt"
$py -m pytest -q -p no:cacheprovider tests/test_callback.py tests/test_render.py -k cuda 2>&1 | tail -5 | tee "$out/cuda_tests.txt"
$py bench/batch_size.py --device cuda --sizes 1,8,32,64,128,256,512 2>&1 | tee "$out/batch_size_cuda.txt"
$py bench/solver.py --device cuda --repeats 3 2>&1 | tee "$out/solver_cuda.txt"
