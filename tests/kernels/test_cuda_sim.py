"""The ``cuda`` backend without a GPU: simulator oracle tests, PTX compilation, clear errors.

numba reads ``NUMBA_ENABLE_CUDASIM`` when ``numba.cuda`` is first imported, so the simulator
cases (``cuda_sim_cases.py``) run in a fresh interpreter with the variable set; this process
stays as it was, and a later ``get_backend("cuda")`` here still sees the real (absent) GPU.
The PTX check compiles every kernel for sm_90 with NVVM, which needs no GPU but does need the
CUDA compiler libraries (``nvidia-nvvm``, ``nvidia-cuda-nvrtc``); it skips without them. It
catches what the simulator cannot: code that runs as Python but does not type or compile
for the device.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from medalpy.kernels import BackendError, get_backend

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env.update(extra)
    return env


def _has_numba_cuda():
    try:
        import numba.cuda  # noqa: F401  (this process has no simulator: only importability)
    except Exception:
        return False
    return True


@pytest.mark.skipif(not _has_numba_cuda(), reason="numba.cuda is not importable")
def test_cuda_kernels_on_the_simulator_equal_the_reference():
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "-W", "ignore:overflow encountered:RuntimeWarning", str(HERE / "cuda_sim_cases.py")],
        cwd=ROOT, env=_env(NUMBA_ENABLE_CUDASIM="1"), capture_output=True, text=True,
        timeout=600)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout.splitlines()[-1]


@pytest.mark.skipif(not _has_numba_cuda(), reason="numba.cuda is not importable")
def test_cuda_kernels_compile_to_ptx():
    proc = subprocess.run([sys.executable, str(HERE / "cuda_ptx_check.py")], cwd=ROOT,
                          env=_env(), capture_output=True, text=True, timeout=600)
    if proc.returncode == 3:
        pytest.skip(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]


def test_asking_for_cuda_without_a_gpu_is_one_clear_error():
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        pytest.skip("the simulator is on in this process")
    try:
        from numba import cuda
        if cuda.is_available():
            pytest.skip("a GPU is present")
    except Exception:
        pass
    with pytest.raises(BackendError, match="numba-cuda package and a CUDA GPU"):
        get_backend("cuda")
