"""Kernel backends: the same function names in every backend.

``numpy`` (:mod:`medalpy.kernels.reference`) is plain NumPy, the readable oracle.
``cpu`` (:mod:`medalpy.kernels.cpu`) sends matrix products to BLAS and runs fused
element-wise passes compiled by Numba. ``cuda`` (:mod:`medalpy.kernels.cuda`, the optional
``medalpy[cuda]`` extra) keeps its arrays on an NVIDIA GPU: numba.cuda kernels and cuBLAS.
A backend is a module; :func:`get_backend` imports it on first use so that importing medalpy
never compiles anything, and a backend whose dependencies are missing fails only when asked
for, with a :class:`BackendError` that says what to install.
"""

import importlib

from medalpy.config import BACKENDS

_MODULES = {
    "numpy": "medalpy.kernels.reference",
    "cpu": "medalpy.kernels.cpu",
    "cuda": "medalpy.kernels.cuda",
}


class BackendError(ValueError):
    """An unknown backend name, or one whose dependencies are missing."""


def get_backend(name):
    """Return the kernel module called ``name`` (one of ``medalpy.config.BACKENDS``)."""
    if name not in _MODULES:
        raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    try:
        return importlib.import_module(_MODULES[name])
    except BackendError:
        raise
    except Exception as exc:  # ImportError, numba's CudaSupportError (an ImportError), ...
        if name != "cuda":
            raise
        raise BackendError(
            "the cuda backend needs the numba-cuda package and a CUDA GPU; install "
            f"medalpy[cuda] on a machine with an NVIDIA driver ({type(exc).__name__}: {exc})"
        ) from exc
