"""Denormals flushed to zero in the cpu backend's computations, and only there.

Each case has a result that is denormal in exact arithmetic (and in NumPy's, which keeps
denormals): 0 where medalpy computes it, the denormal again once its session is over.
"""

import numba
import numpy as np
import pytest

from medalpy.kernels import blas, cpu, denormals, lanes, reference

pytestmark = pytest.mark.skipif(not denormals.SUPPORTED, reason="flushing needs an x86-64 MXCSR")

TINY = np.float32(1e-40)  # denormal: below 2**-126


@pytest.fixture(autouse=True)
def cpu_session():
    """Outside the session the other kernel tests run in (conftest.py): these enter it
    themselves, or test the lanes on their own."""
    yield


def _denormal(x):
    x = np.abs(np.asarray(x, dtype=np.float64))
    return bool(np.all((x > 0) & (x < np.finfo(np.float32).tiny)))


def test_numpy_keeps_denormals_outside_a_session():
    assert _denormal(np.float32(1e-30) * np.float32(1e-10))


def test_the_session_flushes_the_element_wise_kernels_and_then_stops():
    Z = np.full((2, 3), -100.0, np.float32)  # sigma(-100) = 3.7e-44
    expected = np.zeros_like(Z)
    reference.add_bias_sigmoid(Z.copy(), np.zeros(3, np.float32), expected)
    assert _denormal(expected)
    out = np.ones_like(Z)
    with cpu.session():
        cpu.add_bias_sigmoid(Z.copy(), np.zeros(3, np.float32), out)
        assert np.float32(1e-30) * np.float32(1e-10) == 0  # the calling thread's NumPy too
    assert np.all(out == 0)
    assert _denormal(np.float32(1e-30) * np.float32(1e-10))  # restored


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2 or not blas.available(),
                    reason="needs two Numba threads and NumPy's OpenBLAS")
def test_every_lane_flushes_and_restores_its_thread():
    """The parallel kernels, called outside any session so that only their lanes' own
    setting counts: denormal operands read as 0 (16 x 1e-40 would be 1.6e-39), on both
    lanes, and the calling thread is as it was afterwards."""
    A = np.full((4, 16), TINY, np.float32)
    B = np.ones((16, 64), np.float32)
    C = np.ones((4, 64), np.float32)
    lanes._gemm_lanes(A, B, C, False, False, 2, 4)
    assert np.all(C == 0)
    assert _denormal((A @ B)[0, 0])

    D = np.full((4, 16), TINY, np.float32)
    W = np.ones((60, 16), np.float32)
    C = np.ones((4, 60), np.float32)
    lanes._matmul_nt_f32_lanes(D, W, C, 2)
    assert np.all(C == 0)

    # The fused update: P -= lr * (A^T delta) with a denormal gradient leaves P as it was
    # (without flushing, 1 - 1.6e-39 rounds to 1 as well, so use P = 0: -1.6e-39 or 0).
    A = np.full((16, 64), TINY, np.float32)
    delta = np.ones((16, 40), np.float32)
    P, V = np.zeros((64, 40), np.float32), np.zeros((64, 40), np.float32)
    scratch = np.empty((2, 32 * 40), np.float32)
    cpu._sgd_product_kernel(A, delta, P, V, 1.0, 0.0, 0.0, 1.0, scratch, 32, 2)
    assert np.all(P == 0) and np.all(V == 0)
    assert _denormal(np.float32(1e-30) * np.float32(1e-10))
