#!/usr/bin/env bash
# The GPU check in one command, for a lent GPU machine without network access.
#
#   bash benchmarks/run_gpu_check.sh [DATA_DIR]     (from anywhere; runs in the repository root)
#
# DATA_DIR holds mnist/ with MNIST's four IDX .gz files (default .gpudata, a git-ignored
# folder carried beside the code). Results go to $OUT (default benchmarks/results):
# gpu_check.json, gpu_check.log, gpu_tests.log. Nothing is installed: the repository goes on
# PYTHONPATH. Steps, each under its own time limit (about 5 minutes in all on an H100; the
# limits add up to 9):
#   1. the machine: GPU, driver, Python and the versions of the packages that matter;
#   2. benchmarks/gpu_check.py (--budget-s $GPU_CHECK_BUDGET_S, default 240);
#   3. the cuda kernels against the NumPy reference on the real GPU: the simulator cases of
#      tests/kernels/cuda_sim_cases.py, copied with their simulator-only guard removed (pytest
#      from DATA_DIR/pylib when the machine has none);
#   4. with GPU_FSWEEP_S set, the paper-scale fsweep on the GPU for that many seconds,
#      resumable (its finished cells come back in $OUT/fsweep-paper-cuda/);
#   5. a summary of gpu_check.json.
# Without a usable GPU (here, say) gpu_check.py says "no usable CUDA GPU", the tests are
# skipped and the exit status is 0. Exit status: gpu_check.py's (0: measured, or no GPU; 3: the
# preflight failed; 124: timed out), whatever the tests do.

set -u
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
DATA=${1:-.gpudata}
OUT=${OUT:-$ROOT/benchmarks/results}
BUDGET=${GPU_CHECK_BUDGET_S:-240}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS=0   # toy launches in the preflight and the tests
unset NUMBA_ENABLE_CUDASIM
T0=$SECONDS
stamp() { echo; echo "== $1 (at $((SECONDS - T0)) s)"; }

stamp "machine"
timeout 15 nvidia-smi -L || echo "nvidia-smi -L failed (status $?)"
timeout 15 nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used \
    --format=csv || true
echo "data: $DATA"; ls -l "$DATA/mnist" 2>&1 | tail -n +2
timeout 60 "$PY" - <<'EOF' || echo "version report failed (status $?)"
import importlib.metadata as md
import re
import sys

print("python", sys.version.replace("\n", " "), "at", sys.executable)
wanted = re.compile(r"^(numpy|numba|numba[-_]cuda|llvmlite|cupy.*|torch|scipy|h5py|click|"
                    r"cuda[-_].*|nvidia[-_].*|pytest)$", re.I)
seen = {}
for dist in md.distributions():
    name = dist.metadata["Name"] or ""
    if wanted.match(name):
        seen[name.lower()] = dist.version
print(" ".join(f"{k}=={v}" for k, v in sorted(seen.items())))
for mod in ("numpy", "numba", "numba.cuda", "cupy", "cupy_backends.cuda.libs.cublas"):
    try:
        m = __import__(mod, fromlist=["_"])
        print(f"import {mod}: ok {getattr(m, '__version__', '')}")
    except Exception as exc:
        print(f"import {mod}: FAILED {type(exc).__name__}: {exc}")
try:
    from numba import cuda
    print("numba.cuda.is_available():", cuda.is_available())
except Exception as exc:
    print(f"numba.cuda.is_available() FAILED {type(exc).__name__}: {exc}")
EOF

stamp "gpu_check.py (budget $BUDGET s)"
timeout -k 10 $((BUDGET + 80)) "$PY" benchmarks/gpu_check.py --data-dir "$DATA" \
    --out "$OUT/gpu_check.json" --budget-s "$BUDGET" 2>&1 \
    | tee "$OUT/gpu_check.log"
STATUS=${PIPESTATUS[0]}
echo "gpu_check.py exit status: $STATUS"

stamp "cuda kernels vs the NumPy reference on the GPU"
CASES=tests/kernels/cuda_sim_cases.py
TMP=$(mktemp -d)
if grep -q "no usable CUDA GPU" "$OUT/gpu_check.log"; then
    echo "skipped: no usable CUDA GPU"
elif [ "$STATUS" -eq 0 ] && "$PY" - "$CASES" "$TMP" <<'EOF'
import sys
from pathlib import Path

src, tmp = Path(sys.argv[1]), Path(sys.argv[2])
text = src.read_text()
guard = 'if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":\n'
if text.count(guard) != 1:
    sys.exit(f"{src}: its simulator guard changed; not run on the GPU")
(tmp / "test_cuda_kernels_on_gpu.py").write_text(text.replace(guard, "if False:\n"))
# Before the cases import the backend: the probe kernel, and the PTX version fallback when
# gpu_check.py needed it (see its preflight).
(tmp / "conftest.py").write_text(
    "import sys\n"
    f"sys.path.insert(0, {str(Path.cwd() / 'benchmarks')!r})\n"
    "import gpu_check\n"
    "from medalpy.kernels import get_backend\n"
    "get_backend('cuda')\n"
    "print('probe:', gpu_check.probe_kernels())\n")
EOF
then
    # pytest from the machine's environment, else the pure-Python copy carried in
    # $DATA/pylib (pytest and its dependencies, appended: installed packages win).
    TESTPATH=$PYTHONPATH
    if ! "$PY" -c "import pytest" 2>/dev/null && [ -d "$DATA/pylib" ]; then
        TESTPATH="$PYTHONPATH:$(cd "$DATA/pylib" && pwd)"
        echo "pytest from $DATA/pylib"
    fi
    (cd "$TMP" && PYTHONPATH=$TESTPATH timeout -k 5 100 "$PY" -m pytest -q -p no:cacheprovider \
        --tb=short -rfE \
        -W "ignore:overflow encountered:RuntimeWarning" -k "not simulator_and_host_gemm" \
        test_cuda_kernels_on_gpu.py) > "$OUT/gpu_tests.log" 2>&1
    echo "pytest exit status: $? (full log: gpu_tests.log)"
    grep -E "^(FAILED|ERROR)|passed|failed|error" "$OUT/gpu_tests.log" | tail -25
else
    echo "skipped (gpu_check.py status $STATUS, or the cases could not be prepared)"
fi
rm -rf "$TMP"

stamp "paper-scale fsweep on the GPU (${GPU_FSWEEP_S:-0} s)"
# medalpy experiment fsweep --scale paper --backend cuda, resumed from the cells committed
# under benchmarks/results/experiments/fsweep-paper-cuda; what finishes in GPU_FSWEEP_S
# seconds comes back as JSON in $OUT/fsweep-paper-cuda/ (commit it there to go on).
FSWEEP_S=${GPU_FSWEEP_S:-0}
FS=benchmarks/results/experiments/fsweep-paper-cuda
if [ "$FSWEEP_S" -gt 0 ] && [ "$STATUS" -eq 0 ] && ! grep -q "no usable CUDA GPU" "$OUT/gpu_check.log"; then
    timeout -k 10 "$FSWEEP_S" "$PY" -m medalpy experiment fsweep --scale paper --backend cuda \
        --data-dir "$DATA" --out "$FS" > "$OUT/fsweep-paper-cuda.log" 2>&1
    echo "fsweep exit status: $? (124: stopped at its time limit; rerun to resume)"
    tail -20 "$OUT/fsweep-paper-cuda.log"
    [ -d "$FS" ] && (cd "$FS" && find . \( -name '*.json' -o -name '*.md' \) \
        -exec install -D -m 644 {} "$OUT/fsweep-paper-cuda/{}" \;)
else
    echo "skipped (set GPU_FSWEEP_S to the seconds it may use)"
fi

stamp "summary"
[ -s "$OUT/gpu_check.json" ] && ! grep -q "no usable CUDA GPU" "$OUT/gpu_check.log" &&
"$PY" - "$OUT/gpu_check.json" <<'EOF' || true
import json
import sys

r = json.load(open(sys.argv[1]))
pre = r.get("preflight", {})
print("gpu:", r.get("gpu"), "| torch:", r.get("torch"), r.get("torch_device"),
      "| data:", r.get("data"))
print("toolchain:", pre.get("toolchain"), "| kernel:", pre.get("kernel"),
      "| ptx_clamp:", pre.get("ptx_clamp"), "| gemm default:", r.get("gemm_default"))
print("gemm paths:", json.dumps(pre.get("gemm")))
p = r.get("parity")
if p:
    print(f"parity: cpu {p['cpu']:.5f} cuda {p['cuda']:.5f} rel.diff "
          f"{p['relative_difference']:.2e} max|dW| {p['max_abs_weight_difference']:.2e} "
          f"{'PASS' if p['pass'] else 'FAIL'}")
for row in r.get("speed", []) + (r.get("cohorts") if isinstance(r.get("cohorts"), list)
                                  else []):
    print("speed:", " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                             for k, v in row.items()))
print("capture:", r.get("capture"))
print("mnist:", r.get("mnist"), "| seconds:", r.get("seconds"))
EOF
echo "total $((SECONDS - T0)) s; exit status $STATUS"
exit "$STATUS"
