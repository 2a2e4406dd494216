"""The ``cuda`` backend: numba.cuda kernels and cuBLAS matrix products on an NVIDIA GPU.

Every public function has the name, signature and semantics of its twin in
:mod:`medalpy.kernels.reference` (the oracle; read it for the equations). Arrays live on the
device: :func:`empty`, :func:`zeros` and :func:`to_device` return numba device arrays, and
:func:`to_host` copies back. What differs from the ``cpu`` backend is where the work runs:

- Matrix products go to cuBLAS (``sgemm``/``dgemm`` through CuPy's bindings) on the row-major
  arrays in place: no copies, no temporaries. They sit behind one seam, :func:`_gemm`, which
  under numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, no CuPy, no GPU) is a NumPy
  stand-in working on the simulator's host-backed arrays.
- Element-wise work is fused as on the CPU, one launch per step of the chain: bias + sigmoid;
  cross-entropy loss and output delta from the pre-activations (one block per row, the row's
  loss reduced in shared memory, the few row sums added on the host); softmax + NLL + delta;
  the hidden delta through the sigmoid; the column sum; the whole SGD step over P, G, V; the
  gather of a uint8 batch with its 1/255 scaling and its masking noise.
- Masking noise is the reference's counter-based splitmix64 hash, evaluated per element on
  the device: a unit's mask bit depends only on (seed, epoch, sample index, feature index),
  so the masks are identical to the reference's and the cpu backend's.
- Functions that return a float (the losses, :func:`sum_of_squares`) copy a few partial sums
  back and so synchronise with the device; nothing else does.

Row indices and labels may be host (NumPy) or device arrays; host ones are copied into a
per-thread device buffer. A dataset ``X`` should be put on the device once per phase with
:func:`to_device`; a host ``X`` still works (its rows are gathered on the host and copied).

Results agree with the reference to a few ulps: the GPU's ``exp``/``log1p`` and its fused
multiply-adds round differently from NumPy's, and cuBLAS sums the products of a GEMM in its
own order.
"""

import contextlib
import math
import threading

import numpy as np

from medalpy import config
from medalpy.config import (
    NOISE_BITS,
    noise_epoch_key,
    noise_threshold,
)
from medalpy.kernels import BackendError

NAME = "cuda"

_HINT = ("the cuda backend needs the numba-cuda package and a CUDA GPU; install medalpy[cuda] "
         "(numba-cuda and the CuPy wheel of the machine's CUDA major version: cupy-cuda12x, "
         "cupy-cuda13x, ...) on a machine with an NVIDIA driver, or set "
         "NUMBA_ENABLE_CUDASIM=1 before starting Python to run its kernels on numba's CUDA "
         "simulator (slow; meant for tests)")

# numba-cuda 0.30 registers an overload for np.row_stack when it first compiles a kernel;
# NumPy 2.5 removed that alias of np.vstack, so every compilation would fail, and numba-cuda
# will not change (NVIDIA/numba-cuda#907). The cuda extra pins numpy < 2.5; say so here
# rather than patch NumPy for the whole process.
if not hasattr(np, "row_stack"):
    raise BackendError(f"the cuda backend's numba-cuda needs numpy < 2.5, found {np.__version__}"
                       " (NVIDIA/numba-cuda#907): pip install 'numpy<2.5'")

try:
    from numba import cuda
except ImportError as exc:  # numba-cuda missing, or a numba without its CUDA target
    raise BackendError(f"{_HINT} ({exc})") from exc


def _simulator_enabled():
    try:
        from numba.cuda.core import config as cuda_config  # numba-cuda
    except ImportError:  # the CUDA target bundled with older numba
        from numba import config as cuda_config
    return bool(getattr(cuda_config, "ENABLE_CUDASIM", False))


#: True when the kernels run on numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``).
SIMULATOR = _simulator_enabled()

try:
    _available = cuda.is_available()
except Exception:  # a broken driver install raises instead of answering False
    _available = False
if not _available:
    raise BackendError(f"{_HINT} (numba.cuda found no usable GPU)")

from numba import float64  # noqa: E402  (after the availability check, on purpose)

# Threads per block of the element-wise kernels and of the shared-memory reductions. The
# simulator runs each thread of a block as a Python thread, so it gets small blocks.
_TPB = 32 if SIMULATOR else 256
_RB = 8 if SIMULATOR else 128          # a power of two: the tree reduction halves it
_SS_BLOCKS = 2 if SIMULATOR else 120   # blocks of the sum-of-squares reduction

# The hash's constants, typed for Numba (config.py says why).
_GAMMA, _M1, _M2 = config.U64_GAMMA, config.U64_M1, config.U64_M2
_S30, _S27, _S31, _SHIFT = config.U64_S30, config.U64_S27, config.U64_S31, config.U64_SHIFT

# ----------------------------------------------------------------------------------------
# Arrays: device memory.
# ----------------------------------------------------------------------------------------


def _is_device(a):
    """True for numba device arrays (real or simulated) and other CUDA-array-interface objects."""
    return getattr(a, "__cuda_ndarray__", False) or hasattr(a, "__cuda_array_interface__")


def session():
    """A context for a block of computations: nothing to set up on the device."""
    return contextlib.nullcontext()


def empty(shape, dtype):
    """A new uninitialised device array of ``shape``."""
    return cuda.device_array(shape, dtype=np.dtype(dtype))


def zeros(shape, dtype):
    """A new zero device array of ``shape``."""
    a = cuda.device_array(shape, dtype=np.dtype(dtype))
    if a.size:
        flat = a.reshape(a.size)
        _fill_kernel[_blocks(a.size), _TPB](flat, flat.dtype.type(0))
    return a


def to_device(a):
    """``a`` as a device array: copied from host memory, unchanged when already on the device.

    Objects exposing ``__cuda_array_interface__`` (CuPy, PyTorch) are wrapped without a copy.
    """
    if getattr(a, "__cuda_ndarray__", False):
        return a
    if hasattr(a, "__cuda_array_interface__"):
        return cuda.as_cuda_array(a)
    return cuda.to_device(np.ascontiguousarray(a))


def to_host(a):
    """``a`` as a NumPy array in host memory (a copy when ``a`` is on the device)."""
    if _is_device(a):
        return to_device(a).copy_to_host()
    return np.asarray(a)


def _blocks(n):
    return max(1, (n + _TPB - 1) // _TPB)


def _flat(a):
    """A 1-D view of a C-contiguous device array (every parameter and workspace is one)."""
    if a.ndim == 1:
        return a
    if not a.is_c_contiguous():
        raise ValueError("the cuda backend updates contiguous arrays only")
    return a.reshape(a.size)


_scratch = threading.local()


def _device_scratch(key, n, dtype):
    """A per-thread device vector of at least ``n`` elements, allocated once and reused."""
    bufs = getattr(_scratch, "device", None)
    if bufs is None:
        bufs = _scratch.device = {}
    k = (key, np.dtype(dtype).char)
    buf = bufs.get(k)
    if buf is None or buf.shape[0] < n:
        buf = bufs[k] = cuda.device_array(max(n, 1024), dtype=np.dtype(dtype))
    return buf[:n]


def _host_scratch(key, n, dtype):
    """A per-thread pinned host vector (plain NumPy under the simulator), grown as needed."""
    bufs = getattr(_scratch, "host", None)
    if bufs is None:
        bufs = _scratch.host = {}
    k = (key, np.dtype(dtype).char)
    buf = bufs.get(k)
    if buf is None or buf.shape[0] < n:
        buf = bufs[k] = cuda.pinned_array(max(n, 1024), dtype=np.dtype(dtype))
    return buf[:n]


def _upload_ints(key, values):
    """Host integer indices as an int64 device vector (device arrays pass through)."""
    if _is_device(values):
        return values
    values = np.asarray(values)
    n = values.shape[0]
    host = _host_scratch(key, n, np.int64)
    host[...] = values
    dev = _device_scratch(key, n, np.int64)
    if n:
        dev.copy_to_device(host)
    return dev


def _row_sums_to_float(partial, n):
    """Sum of the first ``n`` device float64 partial sums, in float64 on the host."""
    host = _host_scratch("partials", n, np.float64)
    if n:
        partial[:n].copy_to_host(host)
    return float(np.sum(host, dtype=np.float64))


@cuda.jit
def _fill_kernel(a, value):
    i = cuda.grid(1)
    if i < a.shape[0]:
        a[i] = value


# ----------------------------------------------------------------------------------------
# Counter-based noise.
# ----------------------------------------------------------------------------------------


@cuda.jit(device=True)
def _mix(z):
    """splitmix64 finaliser on a uint64 scalar (wrapping arithmetic)."""
    z = z + _GAMMA
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


# ----------------------------------------------------------------------------------------
# Batch formation.
# ----------------------------------------------------------------------------------------


#: Kinds of :func:`_gather_kernel` (the noise types of ``medalpy.corruption``).
CLEAN, MASKING, SALT_PEPPER, GAUSSIAN = 0, 1, 2, 3
_TWO_PI = 2.0 * math.pi
_UNIFORM_SCALE = 2.0 ** -NOISE_BITS


@cuda.jit(device=True)
def _uniform(h):
    """The reference's ``unit_uniforms``: a float64 in (0, 1) from the top 53 bits."""
    return (float64(h >> _SHIFT) + 0.5) * _UNIFORM_SCALE


@cuda.jit
def _gather_kernel(X, rows, staged, scale, kind, epoch_key, threshold, out):
    # One thread per element: load, convert to out's dtype, scale, corrupt as the reference's
    # gather_<kind> (clean, masking, salt-and-pepper: no float64 arithmetic). ``staged``: X
    # holds the batch's rows already (gathered on the host), in order; ``rows`` keys the noise.
    idx = cuda.grid(1)
    n, d = out.shape
    if idx < n * d:
        i = idx // d
        j = idx - i * d
        r = rows[i]
        src = i if staged else r
        v = out.dtype.type(X[src, j]) * scale
        if kind != CLEAN:
            h = _mix(_mix(epoch_key ^ np.uint64(r)) ^ np.uint64(j))
            if (h >> _SHIFT) < threshold:
                v = v * out.dtype.type(0) if kind == MASKING else out.dtype.type(h & np.uint64(1))
        out[i, j] = v


@cuda.jit
def _gaussian_kernel(X, rows, staged, scale, epoch_key, sigma, out):
    # As _gather_kernel, with the reference's gather_gaussian: the Box-Muller draw is made in
    # float64 as in the reference, rounded to out's dtype, added and clipped to [0, 1].
    idx = cuda.grid(1)
    n, d = out.shape
    if idx < n * d:
        i = idx // d
        j = idx - i * d
        r = rows[i]
        v = out.dtype.type(X[i if staged else r, j]) * scale
        h = _mix(_mix(epoch_key ^ np.uint64(r)) ^ np.uint64(j))
        u1, u2 = _uniform(h), _uniform(_mix(h))
        z = sigma * (math.sqrt(-2.0 * math.log(u1)) * math.cos(_TWO_PI * u2))
        out[i, j] = min(max(v + out.dtype.type(z), out.dtype.type(0)), out.dtype.type(1))


def _gather(X, rows, out, kind, epoch_key, threshold, sigma=0.0):
    n, d = out.shape
    if n == 0:
        return
    scale = out.dtype.type(1.0 / 255.0) if X.dtype == np.uint8 else out.dtype.type(1.0)
    if _is_device(X):
        if not _is_device(rows):
            rows = np.asarray(rows)
            # No bounds checks in compiled code: without this a bad index reads stray memory.
            if rows.size and (rows.min() < 0 or rows.max() >= X.shape[0]):
                raise IndexError("gather: row index out of range [0, N)")
        rows_d = _upload_ints("rows", rows)
        src, staged = X, False
    else:  # a host dataset: gather its rows here (IndexError as NumPy's) and copy them over
        rows = np.asarray(rows)
        block = np.ascontiguousarray(np.asarray(X)[rows])
        src = _device_scratch(("block", X.dtype.char), block.size, X.dtype)
        src = src.reshape(block.shape)
        src.copy_to_device(block)
        rows_d = _upload_ints("rows", rows)
        staged = True
    if kind == GAUSSIAN:
        _gaussian_kernel[_blocks(n * d), _TPB](src, rows_d, staged, scale, epoch_key,
                                               float(sigma), out)
    else:
        _gather_kernel[_blocks(n * d), _TPB](src, rows_d, staged, scale, kind, epoch_key,
                                             threshold, out)


def gather(X, rows, out):
    """``out = X[rows]``, scaled by 1/255 when ``X`` is uint8.

    Parameters
    ----------
    X : (N, D) uint8 or float array, the dataset (or cached codes), best on the device.
    rows : (B,) int64 host or device array, sample indices into ``X``.
    out : (B, D) float device array, modified in place.
    """
    _gather(X, rows, out, CLEAN, np.uint64(0), np.uint64(0))


def gather_masked(X, rows, rate, seed, epoch, out):
    """``out = X[rows] * keep``: a gathered batch with masking noise applied.

    Same arguments as :func:`gather`; the mask is ``reference.keep_mask(seed, epoch, rows)``,
    computed on the device. Masked units are set to 0 without rescaling the survivors.
    """
    threshold = np.uint64(noise_threshold(rate))
    _gather(X, rows, out, MASKING, noise_epoch_key(seed, epoch), threshold)


def gather_salt_pepper(X, rows, rate, seed, epoch, out):
    """A gathered batch with salt-and-pepper noise (``reference.gather_salt_pepper``)."""
    threshold = np.uint64(noise_threshold(rate))
    _gather(X, rows, out, SALT_PEPPER, noise_epoch_key(seed, epoch), threshold)


def gather_gaussian(X, rows, sigma, seed, epoch, out):
    """A gathered batch with clipped additive Gaussian noise (``reference.gather_gaussian``)."""
    _gather(X, rows, out, GAUSSIAN, noise_epoch_key(seed, epoch), np.uint64(0), sigma)


# ----------------------------------------------------------------------------------------
# Matrix products: cuBLAS on the GPU, NumPy on the simulator's host-backed arrays.
# ----------------------------------------------------------------------------------------


def _gemm_host(A, B, out, trans_a, trans_b):
    """The simulator's stand-in: ``out = op(A) @ op(B)`` on the wrapped NumPy arrays (2-D, or
    3-D stacks of matrices with the batch first)."""
    a, b = np.asarray(A._ary), np.asarray(B._ary)
    np.matmul(a.swapaxes(-1, -2) if trans_a else a, b.swapaxes(-1, -2) if trans_b else b,
              out=out._ary)


def _layout(a):
    """Device pointer, leading dimension and batch stride (elements) of a row-major 2-D
    device array or 3-D stack of them (stride 0 for 2-D)."""
    iface = a.__cuda_array_interface__
    item = a.dtype.itemsize
    rows, cols = a.shape[-2:]
    strides = iface.get("strides") or tuple(
        int(np.prod(a.shape[i + 1:])) * item for i in range(a.ndim))
    if strides[-1] != item or strides[-2] % item or (a.ndim == 3 and strides[0] % item):
        raise ValueError("cuBLAS needs row-major operands with unit column stride")
    ld = max(1, strides[-2] // item, cols)
    return iface["data"][0], ld, (strides[0] // item if a.ndim == 3 else 0)


def _gemm_args(A, B, out, trans_a, trans_b):
    """The column-major arguments of ``out = op(A) op(B)`` for cuBLAS (see :class:`_Cublas`):
    ``(op of B, op of A, m, n, k, (B, ldb, strideB), (A, lda, strideA), (out, ldc, strideC),
    batch)`` with op 1 = transpose, 0 = none; None when there is nothing to compute."""
    n, m = out.shape[-2:]
    k = A.shape[-2] if trans_a else A.shape[-1]
    if n == 0 or m == 0 or k == 0:
        return None
    batch = out.shape[0] if out.ndim == 3 else 1
    return (1 if trans_b else 0, 1 if trans_a else 0, m, n, k, _layout(B), _layout(A),
            _layout(out), batch)


class _Cublas:
    """cuBLAS ``sgemm``/``dgemm`` (and their strided-batched forms for 3-D stacks) through
    CuPy's low-level bindings, on CuPy's current stream.

    A row-major (r, c) matrix is the column-major (c, r) matrix with the same memory, so
    ``out = op(A) op(B)`` is computed as the column-major ``out^T = op(B)^T op(A)^T``: B goes
    first, and each operand's transpose flag carries over unchanged.
    """

    def __init__(self):
        try:
            import cupy
            from cupy_backends.cuda.libs import cublas
        except ImportError as exc:
            raise BackendError(f"{_HINT}: CuPy is missing ({exc})") from exc
        # CuPy keeps a cuBLAS handle per thread and destroys it when the thread ends
        # (cohorts run cells in threads): ask for the calling thread's at every call.
        self.handle_of_thread = cupy.cuda.device.get_cublas_handle
        self.one = {np.dtype(t).char: np.ones(1, t) for t in (np.float32, np.float64)}
        self.zero = {np.dtype(t).char: np.zeros(1, t) for t in (np.float32, np.float64)}
        self.fn = {"f": cublas.sgemm, "d": cublas.dgemm}
        self.batched = {"f": cublas.sgemmStridedBatched, "d": cublas.dgemmStridedBatched}

    def __call__(self, A, B, out, trans_a, trans_b):
        char = out.dtype.char
        if A.dtype.char != char or B.dtype.char != char or char not in self.fn:
            raise TypeError("matmul operands must share one float32/float64 dtype")
        args = _gemm_args(A, B, out, trans_a, trans_b)
        if args is None:
            if out.size:
                out[...] = 0
            return
        op_b, op_a, m, n, k, (pb, ldb, sb), (pa, lda, sa), (pc, ldc, sc), batch = args
        one, zero = self.one[char].ctypes.data, self.zero[char].ctypes.data
        handle = self.handle_of_thread()
        if out.ndim == 3:
            self.batched[char](handle, op_b, op_a, m, n, k, one, pb, ldb, sb, pa, lda, sa,
                               zero, pc, ldc, sc, batch)
        else:
            self.fn[char](handle, op_b, op_a, m, n, k, one, pb, ldb, pa, lda, zero, pc, ldc)


class _CupyMatmul:
    """``cupy.matmul`` on zero-copy CuPy views of the operands (a second GPU path, to compare)."""

    def __init__(self):
        try:
            import cupy
        except ImportError as exc:
            raise BackendError(f"{_HINT}: CuPy is missing ({exc})") from exc
        self.cupy = cupy

    def __call__(self, A, B, out, trans_a, trans_b):
        cp = self.cupy
        a, b, c = cp.asarray(A), cp.asarray(B), cp.asarray(out)
        cp.matmul(a.swapaxes(-1, -2) if trans_a else a, b.swapaxes(-1, -2) if trans_b else b,
                  out=c)


_gemm_impl = None


def set_gemm(kind):
    """Choose the matrix-product path: ``"cublas"`` (default on a GPU), ``"cupy"`` or ``"host"``
    (the simulator's NumPy stand-in). Returns the previous choice's callable."""
    global _gemm_impl
    previous = _gemm_impl
    if kind == "host":
        if not SIMULATOR:
            raise BackendError("the host GEMM stand-in works on the CUDA simulator only")
        _gemm_impl = _gemm_host
    elif kind == "cublas":
        _gemm_impl = _Cublas()
    elif kind == "cupy":
        _gemm_impl = _CupyMatmul()
    else:
        raise ValueError(f"unknown GEMM path {kind!r}; choose cublas, cupy or host")
    return previous


def _gemm(A, B, out, trans_a, trans_b):
    """``out = op(A) @ op(B)`` where ``op`` transposes when its flag is set: 2-D matrices, or
    3-D stacks of them (one product per leading index, cuBLAS's strided-batched form)."""
    for label, a in (("A", A), ("B", B), ("out", out)):
        if not _is_device(a):
            raise TypeError(
                f"the cuda backend computes on device arrays, but matmul's {label} is a "
                f"{type(a).__name__}: put parameters and workspaces on the device with "
                "to_device/empty/zeros of this backend")
    if _gemm_impl is None:
        set_gemm("host" if SIMULATOR else config.CUDA_GEMM)
    _gemm_impl(A, B, out, trans_a, trans_b)


def matmul(A, B, out):
    """``out = A @ B``: the forward product, (n, k) @ (k, m) -> (n, m)."""
    _gemm(A, B, out, False, False)


def matmul_tn(A, B, out):
    """``out = A.T @ B``: the weight gradient ``H_{l-1}^T delta_l``, (n, k)^T (n, m) -> (k, m)."""
    _gemm(A, B, out, True, False)


def matmul_nt(A, B, out):
    """``out = A @ B.T``: the back-propagated error ``delta_l W_l^T``, (n, m) (k, m)^T -> (n, k)."""
    _gemm(A, B, out, False, True)


# ----------------------------------------------------------------------------------------
# Dense layers.
# ----------------------------------------------------------------------------------------


@cuda.jit(device=True)
def _sigmoid(z, one):
    # The reference's two-branch form, 1 / (1 + e) or e / (1 + e) with e = exp(-|z|) <= 1,
    # as one division: nothing overflows.
    e = math.exp(-abs(z))
    return (one if z >= 0 else e) / (one + e)


@cuda.jit
def _bias_sigmoid_kernel(Z, b, out):
    idx = cuda.grid(1)
    n, d = Z.shape
    if idx < n * d:
        i = idx // d
        j = idx - i * d
        z = Z[i, j] + b[j]
        Z[i, j] = z
        out[i, j] = _sigmoid(z, out.dtype.type(1))


def add_bias_sigmoid(Z, b, out):
    """Add the bias and squash: ``Z += b``; ``out = sigma(Z)``.

    Parameters
    ----------
    Z : (B, D) float device array, pre-activation without bias; modified in place (``Z + b``).
    b : (D,) float device array.
    out : (B, D) float device array, modified in place; may be ``Z`` itself.
    """
    n, d = Z.shape
    if n * d:
        _bias_sigmoid_kernel[_blocks(n * d), _TPB](Z, b, out)


@cuda.jit(device=True)
def _block_sum_f64(acc, tid):
    """Tree sum of the block's ``acc`` (``_RB`` float64 in shared memory); ``acc[0]`` holds it."""
    cuda.syncthreads()
    step = _RB // 2
    while step > 0:
        if tid < step:
            acc[tid] += acc[tid + step]
        cuda.syncthreads()
        step //= 2


@cuda.jit
def _sigmoid_ce_kernel(Z, T, delta, row_loss):
    # One block per row: each thread strides over the row's columns, writing the delta and
    # accumulating its loss terms in float64; the block then sums the threads' partials.
    # ``delta`` may alias ``Z`` or ``T``: every element is read before it is written.
    i = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    n, d = Z.shape
    one = delta.dtype.type(1)
    zero = delta.dtype.type(0)
    Bf = delta.dtype.type(n)
    acc = cuda.shared.array(_RB, float64)
    s = 0.0
    for j in range(tid, d, _RB):
        z = Z[i, j]
        t = T[i, j]
        e = math.exp(-abs(z))
        # softplus(z) - t z in the array's dtype, as the reference forms it.
        s += float64(((z if z > zero else zero) + math.log1p(e)) - t * z)
        y = (one if z >= zero else e) / (one + e)
        delta[i, j] = (y - t) / Bf
    acc[tid] = s
    _block_sum_f64(acc, tid)
    if tid == 0:
        row_loss[i] = acc[0]


def sigmoid_cross_entropy(Z, T, delta):
    """Cross-entropy of sigmoid outputs and its gradient, from pre-activations, in one launch.

    Parameters
    ----------
    Z : (B, D) float device array, output pre-activations (bias included).
    T : (B, D) float device array in [0, 1], targets.
    delta : (B, D) float device array, modified in place: ``(sigma(Z) - T) / B``.

    Returns
    -------
    float, the batch mean of CE summed over output units (synchronises with the device).
    """
    n = Z.shape[0]
    row_loss = _device_scratch("row_loss", n, np.float64)
    if n:
        _sigmoid_ce_kernel[n, _RB](Z, T, delta, row_loss)
    return _row_sums_to_float(row_loss, n) / n


@cuda.jit
def _softmax_ce_kernel(Z, labels, delta, row_loss):
    # One thread per row (the paper's heads have 10 classes). An out-of-range label leaves
    # the row's delta alone and reports -inf, which the host turns into an IndexError.
    i = cuda.grid(1)
    n, c = Z.shape
    if i < n:
        Bf = delta.dtype.type(n)
        one = delta.dtype.type(1)
        y = labels[i]
        if y < 0 or y >= c:
            row_loss[i] = -math.inf
            return
        m = Z[i, 0]
        for k in range(1, c):
            if Z[i, k] > m:
                m = Z[i, k]
        s = delta.dtype.type(0)
        for k in range(c):
            s += math.exp(Z[i, k] - m)
        log_norm = math.log(s)
        row_loss[i] = float64(log_norm - (Z[i, y] - m))
        for k in range(c):
            # exp(shifted - log_norm) as the reference, not exp(shifted) / s.
            p = math.exp((Z[i, k] - m) - log_norm)
            if k == y:
                p -= one
            delta[i, k] = p / Bf


def softmax_cross_entropy(Z, labels, delta):
    """Negative log-likelihood of a softmax classifier and its gradient, in one launch.

    Parameters
    ----------
    Z : (B, C) float device array, logits.
    labels : (B,) integer class indices in [0, C), host or device.
    delta : (B, C) float device array, modified in place: ``(softmax(Z) - onehot(labels)) / B``.

    Returns
    -------
    float, the batch-mean NLL (synchronises with the device).
    """
    n = Z.shape[0]
    labels_d = _upload_ints("labels", labels)
    row_loss = _device_scratch("row_loss", n, np.float64)
    if n:
        _softmax_ce_kernel[_blocks(n), _TPB](Z, labels_d, delta, row_loss)
    host = _host_scratch("partials", n, np.float64)
    if n:
        row_loss.copy_to_host(host)
    if np.isneginf(host).any():
        raise IndexError("softmax_cross_entropy: label out of range [0, C)")
    return float(np.sum(host, dtype=np.float64)) / n


@cuda.jit
def _argmax_rows_kernel(Z, out):
    i = cuda.grid(1)
    n, c = Z.shape
    if i < n:
        best = 0
        m = Z[i, 0]
        if m == m:
            for k in range(1, c):
                v = Z[i, k]
                if v != v:  # np.argmax returns the first NaN
                    best = k
                    break
                if v > m:
                    m = v
                    best = k
        out[i] = best


def softmax_predict(Z, out):
    """``out[n] = argmax_c Z[n, c]``: predicted classes, ``out`` (B,) int64 modified in place."""
    n = Z.shape[0]
    if n:
        _argmax_rows_kernel[_blocks(n), _TPB](Z, out)


@cuda.jit
def _sigmoid_backward_kernel(dH, H, out):
    idx = cuda.grid(1)
    n, d = H.shape
    if idx < n * d:
        i = idx // d
        j = idx - i * d
        h = H[i, j]
        out[i, j] = dH[i, j] * h * (out.dtype.type(1) - h)


def sigmoid_backward(dH, H, out):
    """Through the sigmoid: ``out = dH * H * (1 - H)`` (``out`` may be ``dH``)."""
    n, d = H.shape
    if n * d:
        _sigmoid_backward_kernel[_blocks(n * d), _TPB](dH, H, out)


@cuda.jit
def _column_sum_kernel(delta, out):
    # One thread per column, adding rows in order as NumPy reduces axis 0: the same roundings.
    j = cuda.grid(1)
    n, d = delta.shape
    if j < d:
        s = delta[0, j] if n > 0 else out.dtype.type(0)
        for i in range(1, n):
            s += delta[i, j]
        out[j] = s


def column_sum(delta, out):
    """The bias gradient ``db = sum_n delta[n, :]``; ``out`` (D,) modified in place."""
    d = delta.shape[1]
    if d:
        _column_sum_kernel[_blocks(d), _TPB](delta, out)


# ----------------------------------------------------------------------------------------
# Optimiser: parameters are seen as flat 1-D views (weights and biases alike).
# ----------------------------------------------------------------------------------------


@cuda.jit
def _sum_of_squares_kernel(g, partial):
    # Grid-stride float64 accumulation, then a shared-memory sum per block; the host adds the
    # blocks' partial sums. Squares of float32 are exact in float64.
    tid = cuda.threadIdx.x
    acc = cuda.shared.array(_RB, float64)
    s = 0.0
    start = cuda.blockIdx.x * _RB + tid
    stride = cuda.gridDim.x * _RB
    for i in range(start, g.shape[0], stride):
        x = float64(g[i])
        s += x * x
    acc[tid] = s
    _block_sum_f64(acc, tid)
    if tid == 0:
        partial[cuda.blockIdx.x] = acc[0]


def sum_of_squares(G):
    """``sum(G ** 2)`` as a float, accumulated in float64 (synchronises with the device)."""
    g = _flat(G)
    blocks = max(1, min(_SS_BLOCKS, (g.shape[0] + _RB - 1) // _RB))
    partial = _device_scratch("sum_of_squares", blocks, np.float64)
    if g.shape[0]:
        _sum_of_squares_kernel[blocks, _RB](g, partial)
    else:
        return 0.0
    return _row_sums_to_float(partial, blocks)


def product_sq_norm(A, delta):
    """``||A.T @ delta||_F^2`` from the batch's two (n, n) Gram matrices (see the reference):
    cuBLAS products into one device scratch, copied back at once (one synchronisation) and
    summed on the host in float64."""
    if A.shape[0] != delta.shape[0]:
        raise ValueError(f"product_sq_norm: A has {A.shape[0]} rows but delta {delta.shape[0]}")
    n = A.shape[0]
    grams = _device_scratch("grams", 2 * n * n, A.dtype)
    G_a, G_d = grams[:n * n].reshape(n, n), grams[n * n:].reshape(n, n)
    matmul_nt(A, A, G_a)
    matmul_nt(delta, delta, G_d)
    host = to_host(grams).astype(np.float64)
    return float(np.sum(host[:n * n] * host[n * n:]))


@cuda.jit
def _sgd_kernel(p, g, v, lr, momentum, decay, scale):
    # One pass over P, G, V, with the reference's operations in the reference's order.
    i = cuda.grid(1)
    if i < p.shape[0]:
        vi = momentum * v[i] + lr * (scale * g[i] + decay * p[i])
        v[i] = vi
        p[i] = p[i] - vi


def sgd_update(P, G, V, lr, momentum, decay, scale):
    """MEDAL's SGD step with momentum and weight decay, in place on ``P`` and ``V``.

        V = momentum * V + lr * (scale * G + decay * P)
        P = P - V

    Parameters
    ----------
    P : float device array, the parameter (weights or bias); modified in place.
    G : float device array of P's shape, its gradient.
    V : float device array of P's shape, the velocity; modified in place.
    lr, momentum, decay, scale : float, as in :func:`medalpy.kernels.reference.sgd_update`.
    """
    t = P.dtype.type
    p, g, v = _flat(P), _flat(G), _flat(V)
    if p.shape[0]:
        _sgd_kernel[_blocks(p.shape[0]), _TPB](p, g, v, t(lr), t(momentum), t(decay), t(scale))


def sgd_update_product(A, delta, P, V, lr, momentum, decay, scale):
    """:func:`sgd_update` with ``G = A.T @ delta`` (see the reference): cuBLAS into a
    per-thread device scratch, then the update kernel."""
    shape = (A.shape[1], delta.shape[1])
    if A.shape[0] != delta.shape[0] or not shape == P.shape == V.shape:
        raise ValueError(f"sgd_update_product: A {A.shape}, delta {delta.shape}, weights "
                         f"{P.shape}, velocity {V.shape}")
    G = _device_scratch("gradient", P.size, P.dtype).reshape(P.shape)
    matmul_tn(A, delta, G)
    sgd_update(P, G, V, lr, momentum, decay, scale)


# A phase's steps without per-step host work (recorded once, replayed or captured as CUDA
# graphs), and the same for many networks at once (cohorts); the trainer and medalpy.cohort
# use them where a backend offers them. Imported last: they build on the kernels above.
from medalpy.kernels.cuda_step import DeviceStep  # noqa: E402,F401
from medalpy.kernels.cuda_cohort import CohortStep  # noqa: E402,F401
