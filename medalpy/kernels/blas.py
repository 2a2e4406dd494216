"""NumPy's own OpenBLAS, called directly: thread control, and GEMM from Numba-compiled code.

Why the cpu backend calls BLAS itself instead of through ``np.matmul``: at the paper's batch
sizes (10-20 rows) every product of a training step is skinny, and OpenBLAS splits a skinny
product badly over its own threads. Two *single-threaded* calls on the two column halves of
the output, run side by side in a Numba parallel region ("lanes"), are faster: see
``benchmarks/cpu_choices.py`` and docs/performance.md for the measurements.

How: NumPy's Linux wheels bundle OpenBLAS built with 64-bit integers, its symbols renamed
with a ``scipy_`` prefix and a ``64_`` suffix (``scipy_cblas_sgemm64_``). :func:`find` looks
for it among the libraries mapped into this process, registers its ``cblas_sgemm`` and
``cblas_dgemm`` with LLVM under fixed names (:data:`SGEMM_SYMBOL`, :data:`DGEMM_SYMBOL`),
and :data:`sgemm` / :data:`dgemm` declare them as Numba external functions. Compiled kernels
then call them by name, which keeps them cacheable (``cache=True``): a ctypes function
pointer would be baked into the machine code and make caching impossible.

Where NumPy's BLAS is not such an OpenBLAS (a NumPy built against MKL, Accelerate or a
32-bit-integer OpenBLAS), :func:`available` is False and the cpu backend uses ``np.matmul``.
Nothing happens at import: the symbols are looked up and registered on the first call of
:func:`available` (the cpu backend's first session), before any kernel that calls them is
compiled.
"""

import ctypes
import os

import llvmlite.binding as llvm
import numpy as np
from numba import types

from medalpy import config

#: CBLAS enums (cblas.h).
ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112

SGEMM_SYMBOL = "medalpy_cblas_sgemm"
DGEMM_SYMBOL = "medalpy_cblas_dgemm"

# cblas_?gemm(order, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc) with
# 64-bit dimensions; pointers are passed as integers (the arrays' addresses).
_i32, _i64, _ptr = types.int32, types.int64, types.uintp
sgemm = types.ExternalFunction(SGEMM_SYMBOL, types.void(
    _i32, _i32, _i32, _i64, _i64, _i64, types.float32, _ptr, _i64, _ptr, _i64,
    types.float32, _ptr, _i64))
dgemm = types.ExternalFunction(DGEMM_SYMBOL, types.void(
    _i32, _i32, _i32, _i64, _i64, _i64, types.float64, _ptr, _i64, _ptr, _i64,
    types.float64, _ptr, _i64))

# (prefix, suffix) of the ILP64 symbol names, NumPy's wheels first.
_NAMINGS = (("scipy_", "64_"), ("", "64_"))
_THREAD_SETTERS = ("scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_",
                   "scipy_openblas_set_num_threads", "openblas_set_num_threads")


def loaded_openblas():
    """Paths of the OpenBLAS libraries mapped into this process (NumPy's, SciPy's...)."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.lower()}
    except OSError:
        return []
    return sorted(p for p in paths if p.startswith("/"))


def _numpy_openblas():
    """The ctypes library of NumPy's OpenBLAS with its GEMM names, or (None, None)."""
    np.matmul(np.ones((2, 2)), np.ones((2, 2)))  # make sure NumPy's BLAS is loaded
    numpy_dir = os.path.dirname(os.path.dirname(np.__file__))
    for path in loaded_openblas():
        if not os.path.realpath(path).startswith(os.path.realpath(numpy_dir)):
            continue  # SciPy's or another package's copy: not the one np.matmul uses
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix in _NAMINGS:
            s = getattr(lib, f"{prefix}cblas_sgemm{suffix}", None)
            d = getattr(lib, f"{prefix}cblas_dgemm{suffix}", None)
            if s is not None and d is not None:
                return lib, (s, d)
    return None, None


def _find():
    lib, funcs = _numpy_openblas()
    if lib is None or config.CPU_GEMM == "numpy":
        return False
    for symbol, func in zip((SGEMM_SYMBOL, DGEMM_SYMBOL), funcs):
        llvm.add_symbol(symbol, ctypes.cast(func, ctypes.c_void_p).value)
    return True


_FOUND = []  # [bool] once available() has looked


def available():
    """True when compiled kernels may call :data:`sgemm` and :data:`dgemm` (NumPy's OpenBLAS
    found and its GEMMs registered; ``MEDALPY_CPU_GEMM=numpy`` says no: config.py)."""
    if not _FOUND:
        _FOUND.append(_find())
    return _FOUND[0]


def core_name():
    """The CPU kernel NumPy's OpenBLAS chose at load time (e.g. ``Haswell``, ``SkylakeX``)."""
    lib, _ = _numpy_openblas()
    for name in ("scipy_openblas_get_corename64_", "openblas_get_corename64_",
                 "openblas_get_corename"):
        fn = getattr(lib, name, None) if lib is not None else None
        if fn is not None:
            fn.restype = ctypes.c_char_p
            return fn().decode()
    return None


_THREAD_FUNCTIONS = {}  # library path -> (name, setter, getter), or None when it has none


def _thread_functions():
    """[(library name, set_num_threads, get_num_threads)] for every loaded OpenBLAS (each
    library is opened once; the list follows libraries loaded later)."""
    for path in loaded_openblas():
        if path not in _THREAD_FUNCTIONS:
            _THREAD_FUNCTIONS[path] = _open_thread_functions(path)
    return [f for path, f in _THREAD_FUNCTIONS.items() if f is not None]


def _open_thread_functions(path):
    try:
        lib = ctypes.CDLL(path)
    except OSError:
        return None
    for name in _THREAD_SETTERS:
        setter = getattr(lib, name, None)
        getter = getattr(lib, name.replace("set_", "get_"), None)
        if setter is not None and getter is not None:
            setter.argtypes, getter.restype = [ctypes.c_int], ctypes.c_int
            return os.path.basename(path), setter, getter
    return None


def set_threads(n):
    """Set the thread count of every loaded OpenBLAS; returns {library: previous count}."""
    previous = {}
    for name, setter, getter in _thread_functions():
        previous[name] = getter()
        setter(int(n))
    return previous


def get_threads():
    """{library: thread count} of every loaded OpenBLAS."""
    return {name: getter() for name, _, getter in _thread_functions()}


def restore_threads(previous):
    """Undo :func:`set_threads`."""
    for name, setter, _ in _thread_functions():
        if name in previous:
            setter(previous[name])
