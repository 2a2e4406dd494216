"""Process-wide constants shared by every layer of medalpy, kernels included: dtypes,
backend names, the noise hash, the environment switches and the speed tunables.

Nothing here imports anything heavy: this module is read at ``medalpy --help`` time. The
kernels read the tunables as ``config.NAME`` when they run, so a benchmark may change them.
"""

import os

import numpy as np

#: Floating-point type of weights, activations and workspaces unless asked otherwise.
DEFAULT_DTYPE = np.float32

#: The dtypes a network may be built in.
SUPPORTED_DTYPES = (np.float32, np.float64)

#: Names of the kernel backends, in the order they are documented.
BACKENDS = ("numpy", "cpu", "cuda")

#: Constants of the counter-based noise hash (splitmix64, Steele et al. 2014). Masks are a pure
#: function of (seed, epoch, sample index, feature index), so every backend, batch size and
#: thread count draws the same mask for the same sample.
SPLITMIX_GAMMA = 0x9E3779B97F4A7C15
SPLITMIX_M1 = 0xBF58476D1CE4E5B9
SPLITMIX_M2 = 0x94D049BB133111EB
#: A unit is dropped when the top 53 bits of its hash fall below ``rate * 2**53``.
NOISE_BITS = 53
#: The hash's constants as typed np.uint64, for compiled kernels: Numba types a bare Python
#: int above 2**63 unpredictably and promotes int64 (op) uint64 to float64.
U64_GAMMA, U64_M1, U64_M2 = (np.uint64(c) for c in (SPLITMIX_GAMMA, SPLITMIX_M1, SPLITMIX_M2))
U64_S30, U64_S27, U64_S31 = np.uint64(30), np.uint64(27), np.uint64(31)
U64_SHIFT = np.uint64(64 - NOISE_BITS)

# -- environment switches (read once, here) -----------------------------------------------

#: ``MEDALPY_CPU_GEMM=numpy`` turns the cpu backend's direct calls of NumPy's OpenBLAS off
#: (products through ``np.matmul``; for tests and for comparing the two paths).
CPU_GEMM = os.environ.get("MEDALPY_CPU_GEMM", "lanes")
#: ``MEDALPY_CUDA_GEMM``: the cuda backend's matrix products (``cublas``, or ``cupy``).
CUDA_GEMM = os.environ.get("MEDALPY_CUDA_GEMM", "cublas")
#: ``MEDALPY_CUDA_STEP``: how the cuda backend runs a phase's training steps: ``graph`` (each
#: step's launches recorded once and replayed as a CUDA graph where capture is available,
#: :mod:`medalpy.kernels.cuda_step`), ``replay`` (the same recorded launches, never captured)
#: or ``host`` (``Pass.train_step`` driven from the host, batch by batch).
CUDA_STEP = os.environ.get("MEDALPY_CUDA_STEP", "graph")

# -- speed tunables (benchmarks/cpu_choices.py measures the choices; docs/performance.md) ---

#: Rows per batch of the validation and test passes (memory, not results: the losses are
#: sums over rows).
EVAL_BATCH = 1000
#: A training step forms each weight gradient inside its update (sgd_update_product: dW
#: never written to memory, which saves a full write and read of dW per layer). With
#: normGrad its norm then comes from the batch's Gram matrices (backprop's _sq_norm), whose
#: cost grows as n (n + 1) / 2 (D_in + D_out) multiply-adds: above this many rows a step
#: with normGrad stores dW and takes the norm from it, which was faster at batch 128
#: (docs/performance.md, "Tried and dropped"). Without normGrad nothing needs dW, and
#: forming it inside the update was the faster at batch 128 too (docs/performance.md).
GRAM_MAX_BATCH = 32
#: Narrowest output the cpu backend splits over lanes: a 10-class classifier's products are
#: not worth a second thread.
LANES_MIN_COLUMNS = 64
#: Parts into which the cpu backend splits a product's output columns, each one BLAS call;
#: lanes take consecutive parts. A fixed count makes every element's round-off independent
#: of the lanes (OpenBLAS's sums depend on the width of a call); 4 parts share out evenly
#: over 1, 2 and 4 lanes.
PRODUCT_PARTS = 4
#: Most rows of ``A`` (the batch) for which the cpu backend's ``matmul_nt`` computes float32
#: products as dot products along rows instead of calling OpenBLAS: faster up to here,
#: level at 48-64 rows, slower at 128.
NT_DOTS_MAX_ROWS = 32
#: Rows of the weight gradient the cpu backend's ``sgd_update_product`` forms per BLAS call,
#: for a batch of at most this many rows: a (32, 1000) float32 block is 128 KB, a quarter of
#: a typical core's L2 cache; 16 was no faster and 64 slower (``benchmarks/update_blocks.py``).
PRODUCT_BLOCK_ROWS = 32
#: The same for larger batches: each call packs the whole (batch, m) delta again, so larger
#: blocks pay for it less often. At batch 64-256, 128 rows took 25-35% less time than 32
#: (``benchmarks/update_blocks.py``, docs/performance.md).
PRODUCT_BLOCK_ROWS_LARGE_BATCH = 128
#: Batch rows (from MIN to MAX, both included) for which the cpu backend's float32 products
#: (forward, error, fused gradient + update) use its own register-tiled kernels
#: (:mod:`medalpy.kernels.tiles`) instead of OpenBLAS, on CPUs with AVX-512. Whole steps
#: were 1.10-1.47x as fast with them at 32-256 rows and 1.03-1.12x at 10-20
#: (``benchmarks/tiled_products.py``, docs/performance.md); above 256 rows the tiled error
#: product falls behind OpenBLAS (0.83x at 512 rows).
TILED_MIN_ROWS = 10
TILED_MAX_ROWS = 256
#: Fewest batch rows for which ``matmul_nt`` (the back-propagated error) goes to the tiled
#: kernels rather than the dot-product kernel of ``NT_DOTS_MAX_ROWS``, where both apply
#: (AVX-512): gradual steps at 32 rows were 1.05x as fast with the tiled error, stacked and
#: fine-tuning 1.08x and 1.05x; at 28 rows level, at 10-24 the dot products faster
#: (docs/performance.md).
TILED_NT_MIN_ROWS = 32
#: Fewest batch rows for which the cpu backend's row-by-row element-wise passes (the hidden
#: layers' bias + sigmoid, an ``exp`` per unit; the sigmoid cross-entropy; the gather of a
#: batch with its noise) split their rows over lanes; below it, serial passes
#: (``benchmarks/tiled_products.py``, docs/performance.md).
ELEMENTWISE_LANES_MIN_ROWS = 64


def resolve_dtype(dtype):
    """Return ``dtype`` as a NumPy dtype class, refusing anything but float32/float64."""
    dt = np.dtype(dtype if dtype is not None else DEFAULT_DTYPE).type
    if dt not in SUPPORTED_DTYPES:
        raise ValueError(f"dtype must be float32 or float64, got {np.dtype(dtype).name}")
    return dt


def noise_threshold(rate):
    """Integer threshold for masking noise of probability ``rate`` (0 <= rate < 1)."""
    rate = float(rate)
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"corruption rate must be in [0, 1), got {rate}")
    return int(rate * (1 << NOISE_BITS))


_MASK64 = (1 << 64) - 1


def _splitmix64_int(z):
    """splitmix64 on a Python int (wrapping at 64 bits); no NumPy scalar arithmetic."""
    z = (z + SPLITMIX_GAMMA) & _MASK64
    z = ((z ^ (z >> 30)) * SPLITMIX_M1) & _MASK64
    z = ((z ^ (z >> 27)) * SPLITMIX_M2) & _MASK64
    return z ^ (z >> 31)


def noise_epoch_key(seed, epoch):
    """``mix(mix(seed) ^ epoch)`` as np.uint64: the part of every row's noise key shared by
    a batch (the reference's ``row_keys``, computed once per call by the fast backends)."""
    # np.uint64(...) as the reference: a negative or too large Python int raises there too.
    seed, epoch = int(np.uint64(seed)), int(np.uint64(epoch))
    return np.uint64(_splitmix64_int(_splitmix64_int(seed) ^ epoch))
