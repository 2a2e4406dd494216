"""Compile every kernel of ``medalpy.kernels.cuda``, ``cuda_step`` and ``cuda_cohort`` to PTX for sm_90, without a GPU.

Run by ``test_cuda_sim.py`` in a fresh interpreter. Exit status 0: all compiled; 3: the CUDA
compiler libraries (NVVM/NVRTC) are missing here, nothing was checked; anything else: a
kernel failed to type or compile. The availability check of the backend and numba's query
of the current device are patched out, which is why this runs in its own process.
"""

import sys
import types

from numba import cuda
from numba import types as nt

cuda.is_available = lambda: True
try:
    import numba.cuda.dispatcher as _dispatcher
    # Device functions are compiled for the current device's compute capability.
    _dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=(9, 0))
except ImportError:
    pass

import medalpy.kernels.cuda as K  # noqa: E402
import medalpy.kernels.cuda_cohort as C  # noqa: E402
import medalpy.kernels.cuda_step as S  # noqa: E402


def A(dtype, ndim):
    return nt.Array(dtype, ndim, "C")


def main():
    f64, u8, i64, u64, b1 = nt.float64, nt.uint8, nt.int64, nt.uint64, nt.boolean
    cases = []
    for f in (nt.float32, nt.float64):
        cases += [
            (K._fill_kernel, (A(f, 1), f)),
            (K._gather_kernel, (A(u8, 2), A(i64, 1), b1, f, i64, u64, u64, A(f, 2))),
            (K._gather_kernel, (A(f, 2), A(i64, 1), b1, f, i64, u64, u64, A(f, 2))),
            (K._gaussian_kernel, (A(u8, 2), A(i64, 1), b1, f, u64, f64, A(f, 2))),
            (K._bias_sigmoid_kernel, (A(f, 2), A(f, 1), A(f, 2))),
            (K._sigmoid_ce_kernel, (A(f, 2), A(f, 2), A(f, 2), A(f64, 1))),
            (K._softmax_ce_kernel, (A(f, 2), A(i64, 1), A(f, 2), A(f64, 1))),
            (K._argmax_rows_kernel, (A(f, 2), A(i64, 1))),
            (K._sigmoid_backward_kernel, (A(f, 2), A(f, 2), A(f, 2))),
            (K._column_sum_kernel, (A(f, 2), A(f, 1))),
            (K._sum_of_squares_kernel, (A(f, 1), A(f64, 1))),
            (K._sgd_kernel, (A(f, 1), A(f, 1), A(f, 1), f, f, f, f)),
            (S._gather_at_kernel, (A(u8, 2), A(i64, 1), A(i64, 1), A(i64, 1), f, i64,
                                   A(u64, 1), u64, f64, A(f, 2))),
            (S._gather_at_kernel, (A(f, 2), A(i64, 1), A(i64, 1), A(i64, 1), f, i64,
                                   A(u64, 1), u64, f64, A(f, 2))),
            (S._sgd_at_kernel, (A(f, 1), A(f, 1), A(f, 1), A(f64, 2), A(i64, 1), i64, f, f,
                                A(f64, 1), i64)),
            (C._gather_kernel, (A(u8, 3), A(i64, 2), A(i64, 1), A(i64, 1), f, i64, A(u64, 1),
                                u64, f64, A(f, 3))),
            (C._gather_kernel, (A(f, 3), A(i64, 2), A(i64, 1), A(i64, 1), f, i64, A(u64, 1),
                                u64, f64, A(f, 3))),
            (C._bias_sigmoid_kernel, (A(f, 3), A(f, 2), A(f, 3))),
            (C._sigmoid_ce_kernel, (A(f, 3), A(f, 3), A(f, 3), A(f64, 2))),
            (C._softmax_ce_kernel, (A(f, 3), A(i64, 2), A(f, 3), A(f64, 2))),
            (C._column_sum_kernel, (A(f, 3), A(f, 2))),
            (C._sum_of_squares_kernel, (A(f, 2), nt.Array(f64, 2, "A"))),
            (C._sgd_kernel, (A(f, 2), A(f, 2), A(f, 2), A(f64, 3), A(i64, 1), i64, f, f,
                             A(f64, 2))),
        ]
    cases += [
        (S._labels_at_kernel, (A(i64, 1), A(i64, 1), A(i64, 1), A(i64, 1), A(i64, 1))),
        (S._accumulate_kernel, (A(f64, 1), A(f64, 1))),
        (S._norm_scale_kernel, (A(f64, 1), A(f64, 1), i64)),
        (S._advance_kernel, (A(i64, 1),)),
        (C._labels_kernel, (A(i64, 2), A(i64, 2), A(i64, 1), A(i64, 1), A(i64, 2))),
        (C._accumulate_kernel, (A(f64, 2), A(f64, 1))),
        (C._norm_scale_kernel, (nt.Array(f64, 2, "A"), A(f64, 2), i64)),
    ]
    try:
        cuda.compile_ptx(K._fill_kernel.py_func, (A(nt.float32, 1), nt.float32), cc=(9, 0))
    except Exception as exc:  # NVVM/NVRTC libraries absent
        print(f"cannot compile PTX here: {type(exc).__name__}: {str(exc).splitlines()[0]}")
        return 3
    for kernel, sig in cases:
        ptx, _ = cuda.compile_ptx(kernel.py_func, sig, cc=(9, 0))
        if sig[-1] != f64 and str(sig[0]).startswith("array(float32"):
            # float32 element-wise kernels must not silently promote to double precision
            if kernel in (K._bias_sigmoid_kernel, K._sigmoid_backward_kernel, K._sgd_kernel,
                          K._gather_kernel, K._column_sum_kernel, C._bias_sigmoid_kernel,
                          C._column_sum_kernel):
                assert ".f64" not in ptx, f"{kernel.py_func.__name__} computes in float64"
        print(f"ok {kernel.py_func.__name__} {sig[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
