#!/usr/bin/env bash
# Everything to run once on a machine with one NVIDIA GPU, from the repository root: about 6 min by
# estimate (not yet run on a GPU), 8.1 min at the worst (every step cut by its timeout):
#
#     bash bench/gpu_all.sh                          # output and log.txt in $OUT (default bench/out/gpu)
#     OUT=$OUT PYTHON=python3 bash bench/gpu_all.sh  # on a lent machine: its $OUT comes back
#     CPU=1 PYTHON=.venv/bin/python bash bench/gpu_all.sh   # the same steps on CPU, --quick (or: --dry)
#
# Steps, each under `timeout` so one that hangs cannot eat the others' time:
#   1. nvidia-smi; torch, CUDA and cuDNN versions
#   2. python -m pytest tests/test_cuda.py -q            (skipped test by test where torch sees no GPU)
#   3. python -m bench.images --device cuda --json $OUT/images.json        (kdflow vs a RepDistiller loop)
#   4. python -m bench.gpu_share --device cuda --json $OUT/gpu_share.json  (N jobs sharing the GPU)
# Everything printed is also appended to $OUT/log.txt. kdflow need not be installed: src/ is put
# on PYTHONPATH. The exit status is 0 only if every step succeeded; a failed step does not stop the next.

set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
PYTHON=${PYTHON:-python}
OUT=${OUT:-bench/out/gpu}
CPU=${CPU:-0}
if [[ "${1:-}" == "--dry" ]]; then CPU=1; fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"

if [[ "$CPU" == 1 ]]; then
    DEVICE=(--device cpu --quick)
else
    DEVICE=(--device cuda)
fi

failed=()

# step NAME SECONDS COMMAND...: run COMMAND under a timeout, say how it ended and how long it took.
step() {
    local name=$1 limit=$2
    shift 2
    echo
    echo "=== $name ($(date -u +%H:%M:%S) UTC, limit ${limit} s): $*"
    local start=$SECONDS
    timeout --kill-after=10 "$limit" "$@"
    local rc=$?
    if [[ $rc -eq 124 || $rc -eq 137 ]]; then
        echo "=== $name: TIMED OUT after ${limit} s"
    fi
    echo "=== $name: exit $rc in $((SECONDS - start)) s"
    if [[ $rc -ne 0 ]]; then failed+=("$name (exit $rc)"); fi
    return 0
}

main() {
    echo "bench/gpu_all.sh at $(git rev-parse --short HEAD 2>/dev/null || echo '?') on $(hostname)," \
        "$(nproc) cores; PYTHON=$PYTHON OUT=$OUT CPU=$CPU"
    if command -v nvidia-smi >/dev/null; then
        step nvidia-smi 20 nvidia-smi
    else
        echo "nvidia-smi: not found"
    fi
    step versions 30 "$PYTHON" -c 'import sys, torch
print("python", sys.version.split()[0], "| torch", torch.__version__, "| CUDA", torch.version.cuda,
      "| cuDNN", torch.backends.cudnn.version(), "| GPU", torch.cuda.is_available()
      and torch.cuda.get_device_name())'
    step cuda-tests 75 "$PYTHON" -m pytest tests/test_cuda.py -q
    step images 210 "$PYTHON" -m bench.images "${DEVICE[@]}" --json "$OUT/images.json"
    step gpu-share 150 "$PYTHON" -m bench.gpu_share "${DEVICE[@]}" --json "$OUT/gpu_share.json"
    echo
    if [[ ${#failed[@]} -eq 0 ]]; then
        echo "all steps succeeded in $SECONDS s; results in $OUT"
    else
        echo "FAILED after $SECONDS s: ${failed[*]}"
        return 1
    fi
}

main 2>&1 | tee -a "$OUT/log.txt"
exit "${PIPESTATUS[0]}"
