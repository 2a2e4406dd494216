"""Matrix products of the cpu backend: NumPy's OpenBLAS called from Numba, on *lanes*.

At the paper's batch sizes (10-20 rows) every product of a training step is skinny, and a
multi-threaded OpenBLAS splits such products badly. Here the output's columns are split into
one block per Numba thread (a lane), and each lane makes one single-threaded BLAS call on its
block (:mod:`medalpy.kernels.blas` explains how the BLAS is reached). The back-propagated
error ``delta W^T`` of a small float32 batch is instead computed as dot products between rows
with explicit 8-lane vectors (:mod:`medalpy.kernels.simd`): each weight row is streamed once,
where OpenBLAS first packs the weights transposed. On AVX-512 CPUs float32 products of
:data:`medalpy.config.TILED_MIN_ROWS` to ``TILED_MAX_ROWS`` batch rows go instead to
medalpy's register-tiled kernels (:mod:`medalpy.kernels.tiles`). Measurements:
``benchmarks/cpu_choices.py``, ``benchmarks/tiled_products.py`` and docs/performance.md.

Lanes are on inside :func:`threads` (the cpu backend's ``session()``, which the trainer and
the evaluation enter), and NumPy's OpenBLAS is single-threaded meanwhile (a multi-threaded
BLAS inside each lane would oversubscribe the cores); importing this module changes
nothing. Outside a session, or without a usable OpenBLAS, products go to ``np.matmul``.
"""

import collections
import contextlib
import threading
import time

import numba
import numpy as np

from medalpy import config
from medalpy.kernels import blas, denormals, simd, tiles

_jit = numba.njit(cache=True, nogil=True, error_model="numpy")


@_jit
def _gemm_parts(A, B, C, trans_a, trans_b, first, stop, parts):
    # C = op(A) op(B), row-major, for parts ``first`` to ``stop - 1`` of C's columns, one
    # single-threaded BLAS call per part. Part boundaries are multiples of 16 columns (64
    # bytes) and depend only on C's width and ``parts``, never on the lanes: OpenBLAS's sums
    # depend on the width of the call, so a fixed split keeps every element's round-off the
    # same whatever the lanes. Leading dimensions come from the row strides, so row slices
    # of workspaces need no copy.
    m, n = C.shape
    k = A.shape[0] if trans_a else A.shape[1]
    size = C.itemsize
    lda, ldb, ldc = A.strides[0] // size, B.strides[0] // size, C.strides[0] // size
    ta = blas.TRANS if trans_a else blas.NO_TRANS
    tb = blas.TRANS if trans_b else blas.NO_TRANS
    units = (n + 15) // 16
    a = A.ctypes.data
    for part in range(first, stop):
        j0 = 16 * (part * units // parts)
        cols = min(n, 16 * ((part + 1) * units // parts)) - j0
        if cols > 0:
            # Column j0 of op(B) starts at row j0 of B when B is transposed.
            b = B.ctypes.data + size * (j0 * ldb if trans_b else j0)
            c = C.ctypes.data + size * j0
            if size == 4:
                blas.sgemm(blas.ROW_MAJOR, ta, tb, m, cols, k, np.float32(1.0), a, lda, b,
                           ldb, np.float32(0.0), c, ldc)
            else:
                blas.dgemm(blas.ROW_MAJOR, ta, tb, m, cols, k, 1.0, a, lda, b, ldb, 0.0, c,
                           ldc)


@numba.njit(cache=True, nogil=True, parallel=True)
def _gemm_lanes(A, B, C, trans_a, trans_b, lanes, parts):
    # The parts of C's columns shared out over ``lanes`` threads, consecutive parts each.
    for lane in numba.prange(lanes):
        before = denormals.flush()  # each lane's thread, as the session's (denormals.py)
        _gemm_parts(A, B, C, trans_a, trans_b, lane * parts // lanes,
                    (lane + 1) * parts // lanes, parts)
        denormals.restore(before)


@numba.njit(error_model="numpy", inline="always")
def _dots_4x3(D, W, C, i, j, M, j_stop, K):
    # C[i:i+4, j:j+3] = D[i:i+4] . W[j:j+3]: 12 dot products along the rows, 8 columns per
    # step, in 12 vector accumulators (with the 3 + 1 loaded vectors, 16 AVX registers; LLVM
    # spills none). K is a multiple of 8. Rows of D from M on, and of W from j_stop on (the
    # end of the caller's range), are clamped to the last one before them: the tile computes
    # and stores that row's results again, bit for bit the same, instead of branching
    # (conditional stores here made the kernel markedly slower).
    i1, i2, i3 = min(i + 1, M - 1), min(i + 2, M - 1), min(i + 3, M - 1)
    j1, j2 = min(j + 1, j_stop - 1), min(j + 2, j_stop - 1)
    drow0, drow1, drow2, drow3 = D[i], D[i1], D[i2], D[i3]
    wrow0, wrow1, wrow2 = W[j], W[j1], W[j2]
    a0, a1, a2 = simd.zeros(), simd.zeros(), simd.zeros()
    b0, b1, b2 = simd.zeros(), simd.zeros(), simd.zeros()
    c0, c1, c2 = simd.zeros(), simd.zeros(), simd.zeros()
    e0, e1, e2 = simd.zeros(), simd.zeros(), simd.zeros()
    for k in range(0, K, simd.WIDTH):
        w0, w1, w2 = simd.load(wrow0, k), simd.load(wrow1, k), simd.load(wrow2, k)
        d = simd.load(drow0, k)
        a0, a1, a2 = simd.muladd(d, w0, a0), simd.muladd(d, w1, a1), simd.muladd(d, w2, a2)
        d = simd.load(drow1, k)
        b0, b1, b2 = simd.muladd(d, w0, b0), simd.muladd(d, w1, b1), simd.muladd(d, w2, b2)
        d = simd.load(drow2, k)
        c0, c1, c2 = simd.muladd(d, w0, c0), simd.muladd(d, w1, c1), simd.muladd(d, w2, c2)
        d = simd.load(drow3, k)
        e0, e1, e2 = simd.muladd(d, w0, e0), simd.muladd(d, w1, e1), simd.muladd(d, w2, e2)
    C[i, j], C[i, j1], C[i, j2] = simd.hsum(a0), simd.hsum(a1), simd.hsum(a2)
    C[i1, j], C[i1, j1], C[i1, j2] = simd.hsum(b0), simd.hsum(b1), simd.hsum(b2)
    C[i2, j], C[i2, j1], C[i2, j2] = simd.hsum(c0), simd.hsum(c1), simd.hsum(c2)
    C[i3, j], C[i3, j1], C[i3, j2] = simd.hsum(e0), simd.hsum(e1), simd.hsum(e2)


@_jit
def _matmul_nt_f32_columns(D, W, C, j_start, j_stop):
    # C[:, j_start:j_stop] = D @ W[j_start:j_stop].T, float32: W's rows (C's columns) in
    # tiles of 3, and for each all of D's rows in tiles of 4. W's rows are read whole and in
    # order (streamed from memory once, then from L1 for D's other row tiles); OpenBLAS first
    # packs W transposed, which made this product slower than the forward one.
    M, K = D.shape
    for j in range(j_start, j_stop, 3):
        for i in range(0, M, 4):
            _dots_4x3(D, W, C, i, j, M, j_stop, K)


@numba.njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _matmul_nt_f32_lanes(D, W, C, lanes):
    # C = D @ W.T, each lane a range of C's columns (a multiple of 3 wide).
    N = W.shape[0]
    per_lane = ((N + lanes - 1) // lanes + 2) // 3 * 3
    for lane in numba.prange(lanes):
        before = denormals.flush()
        _matmul_nt_f32_columns(D, W, C, lane * per_lane, min(N, (lane + 1) * per_lane))
        denormals.restore(before)


_scratch = threading.local()


def scratch(name, size, dtype):
    """A per-thread scratch vector of at least ``size`` elements, by name, allocated once
    (and again only to grow) and reused."""
    name = f"{name}_{np.dtype(dtype).char}"
    buf = getattr(_scratch, name, None)
    if buf is None or buf.size < size:
        buf = np.empty(max(size, 1024), dtype)
        setattr(_scratch, name, buf)
    return buf


def scratch_rows(name, rows, cols):
    """A per-thread float32 scratch of shape (rows, cols), C-contiguous (:func:`scratch`)."""
    return scratch(name, rows * cols, np.float32)[:rows * cols].reshape(rows, cols)


def rows_contiguous(a):
    """Row-major with unit column stride (a row slice of a C array is), non-empty."""
    return a.strides[1] == a.itemsize and a.strides[0] >= a.shape[1] * a.itemsize > 0


def check_shapes(name, A, B, out, trans_a, trans_b):
    # The compiled paths index by these shapes without bounds checks: a mismatch must stop
    # here, as np.matmul would stop it, not read or write past an array.
    n, k = (A.shape[1], A.shape[0]) if trans_a else A.shape
    k_b, m = (B.shape[1], B.shape[0]) if trans_b else B.shape
    if k != k_b or out.shape != (n, m):
        a = f"{A.shape}{'^T' if trans_a else ''}"
        b = f"{B.shape}{'^T' if trans_b else ''}"
        raise ValueError(f"{name}: cannot multiply {a} by {b} into {out.shape}")


class _Shape:
    """A governor's record of one kind and shape of product: calls so far, the last few
    durations on one lane and on all lanes with their means, the lanes chosen, the
    current probe period, the call of the next probe and the confirming probes still due."""

    __slots__ = ("calls", "one", "all", "t_one", "t_all", "choice", "period", "next_probe",
                 "confirm")

    def __init__(self, keep):
        self.calls = 0
        self.one, self.all = collections.deque(maxlen=keep), collections.deque(maxlen=keep)
        self.t_one = self.t_all = self.choice = None
        self.period = self.next_probe = self.confirm = 0


class Governor:
    """Chooses, call by call, whether a product runs on all :data:`LANES` or on one, by
    timing both as training goes.

    Two lanes wait for the slower at the end of every product, so when another process
    keeps a core busy a two-lane step can take several times as long as a one-lane step.
    The governor keeps, for each kind and shape of product, the last :attr:`keep`
    durations on one lane and on all lanes, and uses one lane only while their mean is below
    :attr:`prefer` times that of all lanes (so timing noise does not move a quiet machine off
    its lanes). The mean, not the median: under load a two-lane call is now fast, now several
    times slower, and the slow tail is what costs the time.

    It tries the other choice now and then (a *probe*). After a change of choice the first
    probe comes :attr:`probe_min` calls later, and each scheduled probe doubles the wait for
    the next, up to :attr:`probe` calls while the two are within :attr:`near` of each other
    and :attr:`probe_far` otherwise: a brief burst of load (another program's
    threads still spinning) is undone within tens of calls, while steady load costs a
    probe only every few hundred. A probe that beats the choice is followed at once by
    further probes, until the other's timings are all fresh or one loses, so stale timings
    from a busy spell do not hold it back. Results never depend on the choice (every kernel
    splits its work into the same parts however many lanes run them), so it may change at
    any call.
    """

    probe_min, probe, probe_far, near, prefer, keep = 8, 32, 256, 1.25, 0.9, 5

    def __init__(self):
        self.enabled = True
        self.shapes = {}  # key -> _Shape

    def reset(self):
        self.shapes.clear()

    def _choose(self, t_one, t_all):
        return 1 if t_one < self.prefer * t_all else LANES

    def lanes(self, key):
        """The lanes the next call of ``key`` (a hashable kind and shape) runs on."""
        if LANES == 1 or not self.enabled:
            return LANES
        shape = self.shapes.get(key)
        if shape is None:
            shape = self.shapes[key] = _Shape(self.keep)
        shape.calls += 1
        if shape.choice is None:  # first calls alternate (one compiles)
            return 1 if len(shape.one) < len(shape.all) else LANES
        other = LANES if shape.choice == 1 else 1
        if shape.confirm:
            shape.confirm -= 1
            return other
        if shape.calls >= shape.next_probe:
            near = max(shape.t_one, shape.t_all) <= self.near * min(shape.t_one, shape.t_all)
            shape.period = min(2 * shape.period, self.probe if near else self.probe_far)
            shape.next_probe = shape.calls + shape.period
            return other
        return shape.choice

    def record(self, key, lanes, seconds):
        """Note that a call of ``key`` on ``lanes`` lanes took ``seconds``."""
        shape = self.shapes.get(key)
        if shape is None:
            return
        before = shape.choice
        if before is not None and (lanes == 1) != (before == 1):  # a probe
            t_one, t_all = (seconds, shape.t_all) if lanes == 1 else (shape.t_one, seconds)
            if self._choose(t_one, t_all) == before:
                shape.confirm = 0
            elif not shape.confirm:
                shape.confirm = self.keep - 1
        if lanes == 1:
            shape.one.append(seconds)
            shape.t_one = sum(shape.one) / len(shape.one)
        else:
            shape.all.append(seconds)
            shape.t_all = sum(shape.all) / len(shape.all)
        if len(shape.one) >= 3 and len(shape.all) >= 3:
            shape.choice = self._choose(shape.t_one, shape.t_all)
            if shape.choice != before:
                shape.period, shape.confirm = self.probe_min, 0
                shape.next_probe = shape.calls + self.probe_min

    def run(self, key, one_lane, on_lanes):
        """Call ``one_lane()`` or ``on_lanes(n)``, as :meth:`lanes` says, time it and return
        what it returns."""
        n = self.lanes(key)
        start = time.perf_counter()
        result = one_lane() if n == 1 else on_lanes(n)
        self.record(key, n, time.perf_counter() - start)
        return result


#: The governor of every parallel kernel of the cpu backend.
GOVERNOR = Governor()


def tiled(A, *arrays):
    """True when a product of the batch ``A`` with ``arrays`` goes to :mod:`tiles`: inside a
    session on an AVX-512 CPU, float32, :data:`medalpy.config.TILED_MIN_ROWS` to
    ``TILED_MAX_ROWS`` batch rows, every array non-empty with contiguous rows."""
    return (TILED and config.TILED_MIN_ROWS <= A.shape[0] <= config.TILED_MAX_ROWS
            and A.dtype == np.float32
            and all(a.dtype == np.float32 and a.size and rows_contiguous(a)
                    for a in (A,) + arrays))


def _tiled_matmul(A, B, out):
    work = scratch_rows("tiled_matmul", LANES, tiles.matmul_scratch_size(A.shape[1]))
    GOVERNOR.run(("tiled", A.shape, B.shape), lambda: tiles.matmul(A, B, out, work, 1),
                 lambda n: tiles.matmul(A, B, out, work, n))


def _tiled_matmul_nt(A, B, out):
    packed = scratch_rows("tiled_nt_panels", tiles.panels(A.shape[0]),
                          A.shape[1] * tiles.PANEL)
    edges = scratch_rows("tiled_nt_edges", LANES, tiles.TILE_ROWS * tiles.PANEL)
    GOVERNOR.run(("tiled_nt", A.shape, B.shape),
                 lambda: tiles.matmul_nt(A, B, out, packed, edges, 1),
                 lambda n: tiles.matmul_nt(A, B, out, packed, edges, n))


def _gemm(A, B, out, trans_a, trans_b):
    # Narrow outputs (a 10-class classifier's) are not worth a second thread: one call, on
    # the caller's thread.
    if (READY and out.shape[1] >= config.LANES_MIN_COLUMNS and out.dtype == A.dtype == B.dtype
            and out.dtype in GEMM_DTYPES and A.size and rows_contiguous(A)
            and rows_contiguous(B) and rows_contiguous(out)):
        parts = config.PRODUCT_PARTS
        GOVERNOR.run(("gemm", trans_a, trans_b, A.shape, B.shape),
                     lambda: _gemm_parts(A, B, out, trans_a, trans_b, 0, parts, parts),
                     lambda n: _gemm_lanes(A, B, out, trans_a, trans_b, n, parts))
    else:
        np.matmul(A.T if trans_a else A, B.T if trans_b else B, out=out)


def use_threads(n):
    """Run the cpu backend's products on ``n`` lanes (Numba threads), each calling a
    single-threaded OpenBLAS, until told otherwise: sets NumPy's OpenBLAS to one thread (a
    multi-threaded BLAS inside each lane would oversubscribe the cores). :func:`threads`
    does the same for a block of code and restores everything after it."""
    global LANES, READY, TILED
    numba.set_num_threads(int(n))
    if int(n) != LANES:  # its timings were of the other lane count
        GOVERNOR.reset()
    LANES, READY = int(n), blas.available()
    TILED = READY and tiles.available()
    if READY:
        blas.set_threads(1)


@contextlib.contextmanager
def threads(n=None):
    """Products on ``n`` lanes (default: Numba's thread count, the cores or
    ``NUMBA_NUM_THREADS``) inside the block; the lanes, Numba's thread count and every
    OpenBLAS's thread count are restored when it ends, so nothing outside medalpy's own
    computations (the trainer, evaluation) changes. Denormals are flushed to zero inside
    (:mod:`medalpy.kernels.denormals`). Blocks nest."""
    global LANES, READY, TILED
    # First: its first call in a process starts Numba's compiler, which loads the BLAS that
    # SciPy bundles; taken before the thread counts, that BLAS is set and restored as well.
    mode = denormals.flush()
    before = LANES, READY, TILED, numba.get_num_threads(), blas.get_threads()
    use_threads(n or numba.config.NUMBA_NUM_THREADS)
    try:
        yield
    finally:
        denormals.restore(mode)
        LANES, READY, TILED = before[0], before[1], before[2]
        GOVERNOR.reset()
        numba.set_num_threads(before[3])
        blas.restore_threads(before[4])


GEMM_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
#: LANES: use_threads's count, kept in a global (numba.get_num_threads() is slow enough to
#: show in a profile of a training step). READY: OpenBLAS is single-threaded, so parallel
#: kernels may run; every parallel path checks it first (Numba threads beside a
#: multi-threaded OpenBLAS's spinning ones were many times slower). Off until
#: :func:`threads` (or :func:`use_threads`): outside them products go to ``np.matmul``.
#: TILED: READY on a CPU with AVX-512, where large float32 batches go to :mod:`tiles`.
LANES, READY, TILED = 1, False, False


def matmul(A, B, out):
    """``out = A @ B``: the forward product, (n, k) @ (k, m) -> (n, m)."""
    check_shapes("matmul", A, B, out, False, False)
    if out.shape[1] >= config.LANES_MIN_COLUMNS and tiled(A, B, out):
        _tiled_matmul(A, B, out)
        return
    _gemm(A, B, out, False, False)


def matmul_tn(A, B, out):
    """``out = A.T @ B``: the weight gradient ``H_{l-1}^T delta_l``, (n, k)^T (n, m) -> (k, m)."""
    check_shapes("matmul_tn", A, B, out, True, False)
    _gemm(A, B, out, True, False)



def matmul_nt(A, B, out):
    """``out = A @ B.T``: the back-propagated error ``delta_l W_l^T``, (n, m) (k, m)^T -> (n, k)."""
    check_shapes("matmul_nt", A, B, out, False, True)
    tiled_nt = (A.shape[0] >= config.TILED_NT_MIN_ROWS and out.shape[1] >= config.LANES_MIN_COLUMNS
                and B.shape[0] >= tiles.TILE_ROWS and tiled(A, B, out))
    if (not tiled_nt and A.dtype == B.dtype == out.dtype == np.float32
            and 0 < A.shape[0] <= config.NT_DOTS_MAX_ROWS
            and A.shape[1] % simd.WIDTH == 0 and rows_contiguous(A) and rows_contiguous(B)
            and rows_contiguous(out)):
        if READY:
            GOVERNOR.run(("nt", A.shape, B.shape),
                         lambda: _matmul_nt_f32_columns(A, B, out, 0, B.shape[0]),
                         lambda n: _matmul_nt_f32_lanes(A, B, out, n))
        else:  # no parallel region beside a BLAS that runs its own threads
            _matmul_nt_f32_columns(A, B, out, 0, B.shape[0])
        return
    if tiled_nt:
        _tiled_matmul_nt(A, B, out)
        return
    _gemm(A, B, out, False, True)
