"""Kernel backends: the same function names in every backend.

``numpy`` (:mod:`medalpy.kernels.reference`) is plain NumPy, the readable oracle.
``cpu`` (:mod:`medalpy.kernels.cpu`) sends matrix products to BLAS and runs fused
element-wise passes compiled by Numba. A backend is a module; :func:`get_backend` imports it
on first use so that importing medalpy never compiles anything.
"""

import importlib

from medalpy.config import BACKENDS

_MODULES = {"numpy": "medalpy.kernels.reference", "cpu": "medalpy.kernels.cpu"}


class BackendError(ValueError):
    """An unknown backend name, or one whose dependencies are missing."""


def get_backend(name):
    """Return the kernel module called ``name`` (one of ``medalpy.config.BACKENDS``)."""
    if name not in _MODULES:
        raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return importlib.import_module(_MODULES[name])
