#!/usr/bin/env bash
# A GPU session's checks in one go: the gpu-marked tests, a dry run of each kind of model on CuPy,
# and the benchmark beside PyTorch on CUDA (LSTM reference and default, Transformer, adaptive).
#
#     bash bench/gpu_check.sh [OUT_DIR]        # logs into OUT_DIR (default $OUT, else /tmp/gpu-check)
#
# Needs CuPy, a CUDA GPU, pytest, and PyTorch with CUDA for the comparison; no network, no ../shared
# (the dry runs use the bundled WikiText-2). About 5 minutes on an H100 / H200.
set -uo pipefail
out=${1:-${OUT:-/tmp/gpu-check}}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" MYTORCH_DATA="${MYTORCH_DATA:-/tmp/mytorch-data}"
py=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
$py -c "import cupy, numpy, sys; print('cupy', cupy.__version__, 'numpy', numpy.__version__, 'python', sys.version.split()[0])" \
    | tee -a "$out/gpu.txt"
echo "== gpu tests"
timeout 300 $py -m pytest -q -m gpu tests -p no:cacheprovider 2>&1 | tee "$out/gpu-tests.log" | tail -25
echo "== dry runs on CuPy"
for args in "" "--carry --no-tied --adaptive 2000,10000" "--model transformer" "--model transformer --adaptive 2000,10000"; do
    echo "-- train.py --dry-run --backend cupy $args"
    # shellcheck disable=SC2086
    timeout 150 $py train.py --dry-run --backend cupy --no-progress $args 2>&1 | tail -2
done
echo "== benchmarks"
bench() {
    local name=$1; shift
    echo "-- bench.train_step --backend cupy $*"
    timeout 200 $py -m bench.train_step --backend cupy --steps 30 --warmup 5 "$@" >"$out/bench-$name.txt" 2>&1
    grep -E "^(mytorch|  |PyTorch|ratio)" "$out/bench-$name.txt" | grep -v "^  *[0-9]"
}
bench reference
bench default --preset default
bench transformer --preset transformer
bench adaptive --preset default --no-tied --adaptive 2000,10000
bench transformer-adaptive --preset transformer --adaptive 2000,10000
