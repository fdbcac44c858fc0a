#!/usr/bin/env bash
# A lent-GPU session (issue 8) in stages that each fit the device tool's 10-minute command
# limit. From the repository root on the device machine:
#
#   bash benchmarks/gpu_session.sh check      # versions, tools, one call of every family
#   bash benchmarks/gpu_session.sh tests      # the suite on the CuPy backend (not slow)
#   bash benchmarks/gpu_session.sh slow       # the >2^31-element tests
#   bash benchmarks/gpu_session.sh sanitize   # compute-sanitizer memcheck/racecheck on every op
#   bash benchmarks/gpu_session.sh bench      # python -m benchmarks (add "quick" for --quick)
#
# Logs go to $OUT (what the device tool brings back; /tmp/gpuops-out elsewhere) and the
# last lines printed are the summary. The emulator backend is off (GPUOPS_TEST_EMU=0): CI
# runs it. Kernels are cached in /tmp/gpuops-kernels, shared by the stages of one machine.
set -u
stage=${1:?usage: gpu_session.sh check|tests|slow|sanitize|bench [quick]}
OUT=${OUT:-/tmp/gpuops-out}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" GPUOPS_TEST_EMU=0
export CUPY_CACHE_DIR=${CUPY_CACHE_DIR:-/tmp/gpuops-kernels}
PYTEST=("$PY" -m pytest -p no:cacheprovider -q -rfE)

summary() { echo "== $stage: $*"; }

case "$stage" in
check)
    { nvidia-smi; date -u; "$PY" -m gpuops info
      "$PY" -c "import cupy, numpy, torch; print('cupy', cupy.__version__, 'cuda',
cupy.cuda.runtime.runtimeGetVersion(), 'driver', cupy.cuda.runtime.driverGetVersion());
print('numpy', numpy.__version__, 'torch', torch.__version__)"
      command -v compute-sanitizer g++ nvcc; } > "$OUT/check.log" 2>&1
    # one forward and gradient call of every operator on the GPU (compiles every family)
    timeout 500 "${PYTEST[@]}" -m gpu tests/ops/test_ops.py -k "parity and float32" -x \
        > "$OUT/check_pytest.log" 2>&1
    rc=$?
    tail -n 25 "$OUT/check.log"; tail -n 5 "$OUT/check_pytest.log"
    summary "pytest rc=$rc" ;;
tests)
    timeout 570 "${PYTEST[@]}" -m "gpu and not slow" --durations=15 \
        --junitxml="$OUT/junit.xml" > "$OUT/tests.log" 2>&1
    rc=$?
    grep -E "^(FAILED|ERROR)" "$OUT/tests.log" | head -n 40; tail -n 3 "$OUT/tests.log"
    summary "pytest rc=$rc (124: the time limit; rerun with a -k subset)" ;;
slow)
    timeout 570 "${PYTEST[@]}" -m "gpu and slow" -s > "$OUT/slow.log" 2>&1
    rc=$?
    tail -n 15 "$OUT/slow.log"
    summary "pytest rc=$rc" ;;
sanitize)
    # every operator's forward and gradients once (the float32 parity tests), under each tool;
    # then the planted bugs each tool must flag (tests/infrastructure/test_gpu_sanitizer.py)
    for tool in memcheck racecheck; do
        timeout 240 compute-sanitizer --tool "$tool" --error-exitcode 3 \
            "${PYTEST[@]}" -m gpu tests/ops/test_ops.py -k "parity and float32" -x \
            > "$OUT/sanitize_$tool.log" 2>&1
        echo "$tool rc=$?: $(grep -cE 'ERROR SUMMARY: [1-9]|Invalid|Race reported' \
            "$OUT/sanitize_$tool.log") report lines; $(tail -n 1 "$OUT/sanitize_$tool.log")"
    done
    timeout 100 "${PYTEST[@]}" tests/infrastructure/test_gpu_sanitizer.py > "$OUT/sanitize_planted.log" 2>&1
    echo "planted bugs rc=$?: $(tail -n 1 "$OUT/sanitize_planted.log")"
    summary "logs in sanitize_*.log (rc 3: the tool reported errors; 124: the time limit)" ;;
bench)
    args=()
    [ "${2:-}" = quick ] && args=(--quick)
    timeout 570 "$PY" -m benchmarks "${args[@]}" > "$OUT/bench.log" 2>&1
    rc=$?
    cp benchmarks/results/*.json benchmarks/results/*.md "$OUT/" 2>/dev/null
    tail -n 40 "$OUT/bench.log"
    summary "rc=$rc; results copied to \$OUT" ;;
*)
    echo "unknown stage $stage" >&2
    exit 2 ;;
esac
