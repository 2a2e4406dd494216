"""Kernel backends: the same function names in every backend.

``numpy`` (:mod:`medalpy.kernels.reference`) is plain NumPy, the readable oracle.
``cpu`` (:mod:`medalpy.kernels.cpu`) sends matrix products to BLAS and runs fused
element-wise passes compiled by Numba. ``cuda`` (:mod:`medalpy.kernels.cuda`, the optional
``medalpy[cuda]`` extra) keeps its arrays on an NVIDIA GPU: numba.cuda kernels and cuBLAS.
A backend is a module; :func:`get_backend` imports it on first use so that importing medalpy
never compiles anything, and a backend whose dependencies are missing fails only when asked
for, with a :class:`BackendError` that says what to install.

The contract every backend keeps (:data:`CONTRACT`; the reference states the maths). ``B``
rows in a batch, ``D``/``k``/``m`` widths, ``C`` classes; arrays are the backend's own
(``to_device``), ``X`` and ``rows`` may also be on the host. "out" arguments are written in
place and nothing else is modified unless said; a kernel returns at most a scalar.

==============================================  ==========================================
kernel                                          shapes; what it writes
==============================================  ==========================================
``session()``                                   a context around a block of computations
``empty(shape, dtype)``, ``zeros(...)``         a new backend array
``to_device(a)``, ``to_host(a)``                the array on the backend / as NumPy
``gather(X, rows, out)``                        (N, D) -> out (B, D) = X[rows] (/255 if uint8)
``gather_<noise>(X, rows, level, seed,          as gather, corrupted by the noise kind
epoch, out)``                                   (:mod:`medalpy.corruption`)
``matmul(A, B, out)``                           (n, k) (k, m) -> out (n, m) = A B
``matmul_tn(A, B, out)``                        (n, k) (n, m) -> out (k, m) = A^T B
``matmul_nt(A, B, out)``                        (n, m) (k, m) -> out (n, k) = A B^T
``add_bias_sigmoid(Z, b, out)``                 (B, m) (m,) -> out = sigma(Z + b) (out may be Z)
``sigmoid_cross_entropy(Z, T, delta)``          (B, D) -> mean loss; delta = (sigma(Z) - T) / B
``softmax_cross_entropy(Z, labels, delta)``     (B, C) (B,) -> mean NLL; delta (B, C)
``softmax_predict(Z, out)``                     (B, C) -> out (B,) int64 arg-max
``sigmoid_backward(dH, H, out)``                out = dH H (1 - H) (out may be dH)
``column_sum(delta, out)``                      (B, m) -> out (m,)
``sum_of_squares(G)``                           -> float sum of G^2
``product_sq_norm(A, delta)``                   -> float ||A^T delta||^2
``sgd_update(P, G, V, lr, m, decay, scale)``    V = m V + lr (scale G + decay P); P -= V
``sgd_update_product(A, delta, P, V, ...)``     as sgd_update with G = A^T delta
==============================================  ==========================================
"""

import importlib

from medalpy.config import BACKENDS

#: The kernels every backend offers, with the reference's signatures.
CONTRACT = ("session", "empty", "zeros", "to_device", "to_host", "gather", "gather_masked",
            "gather_salt_pepper", "gather_gaussian", "matmul", "matmul_tn", "matmul_nt",
            "add_bias_sigmoid", "sigmoid_cross_entropy", "softmax_cross_entropy",
            "softmax_predict", "sigmoid_backward", "column_sum", "sum_of_squares",
            "product_sq_norm", "sgd_update", "sgd_update_product")

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
