"""Register-tiled float32 products for AVX-512 cores: the larger-batch products of a step.

With a batch of a few dozen rows and more, a step's products are (batch, 784-1000) by
(784-1000, 784-1000), shapes at which OpenBLAS, one call per lane on a block of columns,
stays well below its large-GEMM rate (docs/performance.md). These kernels do the same
products with one tile of the output held in registers:

    TILE_ROWS x PANEL = 8 x 48 outputs in 24 sixteen-lane accumulators (f32x16, one AVX-512
    register each). Each step k of the inner loop loads one row of a *panel* (48 floats) as
    three vectors, broadcasts 8 elements of the left operand, and does 24 fused
    multiply-adds.

A panel is 48 columns of the right operand copied row after row into a contiguous buffer
(zeros beyond the operand's last column): the inner loop then reads it sequentially, where
the operand's own rows are thousands of floats apart. A last panel of 32 or 16 columns and
fewer is computed with 16 or 8 accumulators (a batch of 128 rows is two panels and a
32-column one). The loop prefetches its panel :data:`PREFETCH_ROWS` rows ahead into L1. The
left operand is read through a row stride and a step stride (``a[off + r a_rs + k a_ks]``
for tile row r), which lets one tile serve three products:

- ``matmul``: ``C = A B`` (the forward product). Panels of B, one at a time per lane; tiles
  down A's rows. With at most :data:`IN_PLACE_MAX_ROWS` rows of A, the tiles read B's
  columns in place (a last, narrower panel is still packed).
- ``sgd_update_product``: ``G = A^T delta`` applied at once to the weights and velocities,
  as :func:`medalpy.kernels.cpu.sgd_update_product` does. The whole of ``delta`` is packed
  into panels first; tiles go down G's rows, 32 rows of weights at a time (so P and V are
  read and written as streams of whole rows), and their G goes through the SGD step from
  cache and is never stored. Each tile's 8 columns of A are copied first, k by k, into a
  contiguous strip (read in place, every step k would load a new row of A).
- ``matmul_nt``: ``C = delta W^T`` (the back-propagated error), as ``C^T = W delta^T``:
  panels of ``delta^T`` (48 batch rows each, transposed while packed), tiles down W's rows,
  each tile's result written transposed.

Round-off: every output element is one chain of fused multiply-adds over k in order, from
zero, in whichever tile computes it. Row tiles start every 8 rows, the last one moved up to
end at the last row (it recomputes a few rows of the tile before it, to the same bits, and
the update applies only its new rows), so results depend on the shapes alone, never on the
lanes or how the tiles are shared out. They differ from OpenBLAS's (another order of sums)
within the usual ``k eps |A||B|`` bound.

Used by :mod:`medalpy.kernels.lanes` for float32 products of
:data:`medalpy.config.TILED_MIN_ROWS` to ``TILED_MAX_ROWS`` batch rows when the CPU has AVX-512
(:func:`available`); elsewhere the products stay with OpenBLAS (with AVX2 the tile's 24
accumulators would take 48 of the 16 vector registers there are).
"""

import functools

import llvmlite.binding as llvm
import numba
import numpy as np

from medalpy.kernels import denormals
from medalpy.kernels.simd import WIDE, broadcast16, load, load16, muladd, prefetch, store, zeros16

#: Rows of a tile.
TILE_ROWS = 8
#: Columns of a panel (and of a tile): three f32x16 vectors.
PANEL = 3 * WIDE
#: How many panel rows ahead of the one it reads the tile's loop prefetches into L1: a
#: panel of a thousand rows comes from L2, and the hardware's own prefetch left the loop
#: waiting on it (docs/performance.md says how 4 was chosen).
PREFETCH_ROWS = 4
#: Most rows of A for which ``matmul`` reads B's columns in place instead of packing them
#: into panels: with a few row tiles per panel, packing (B's rows are thousands of floats
#: apart, fetched from L3 or memory) cost more than it saved; read in place, the loop
#: prefetches B's rows :data:`IN_PLACE_PREFETCH_ROWS` ahead instead (docs/performance.md).
IN_PLACE_MAX_ROWS = 32
IN_PLACE_PREFETCH_ROWS = 8
#: Row tiles of the weights whose gradient the update forms together, panel by panel of
#: delta, so that each panel read from L2 serves 32 rows (docs/performance.md says how 4
#: was chosen).
UPDATE_TILES = 4

_jit = numba.njit(cache=True, nogil=True, error_model="numpy")
_parallel = numba.njit(cache=True, nogil=True, error_model="numpy", parallel=True)


@functools.cache  # asking LLVM for the host's features takes a fraction of a millisecond
def available():
    """True when Numba compiles for a CPU with AVX-512 (the host, unless ``NUMBA_CPU_NAME``
    names another)."""
    if numba.config.CPU_NAME not in (None, "host"):
        return "+avx512f" in (numba.config.CPU_FEATURES or "")
    return bool(llvm.get_host_cpu_features().get("avx512f", False))


@numba.njit(inline="always", error_model="numpy")
def _row(x, b0, b1, b2, c0, c1, c2, vectors):
    # One row of the tile: c_v += x * b_v for the first ``vectors`` of the three.
    c0 = muladd(x, b0, c0)
    if vectors > 1:
        c1 = muladd(x, b1, c1)
    if vectors > 2:
        c2 = muladd(x, b2, c2)
    return c0, c1, c2


@numba.njit(inline="always", error_model="numpy")
def _store_row(c, o, c0, c1, c2):
    # One row of the tile: c[o:o + 48] = the three vectors.
    store(c, o, c0), store(c, o + WIDE, c1), store(c, o + 2 * WIDE, c2)


@numba.njit(inline="always", error_model="numpy")
def _tile_of(a, a_off, a_rs, a_ks, b, b_off, ldb, ahead, K, c, c_off, ldc, vectors):
    # c[c_off + r ldc + q] = sum over k < K of a[a_off + r a_rs + k a_ks] * b[b_off + k ldb + q]
    # for r < 8, q < 16 vectors (the other columns of the tile are stored as 0): up to 24
    # accumulators, written once at the end. ``vectors`` is a constant where this is
    # inlined (_tile), so the unused accumulators and their multiply-adds compile away.
    # Each step prefetches the four cache lines that may hold b's row ``ahead`` elements on
    # (past b's end near the last k: harmless).
    c00, c01, c02 = zeros16(), zeros16(), zeros16()
    c10, c11, c12 = zeros16(), zeros16(), zeros16()
    c20, c21, c22 = zeros16(), zeros16(), zeros16()
    c30, c31, c32 = zeros16(), zeros16(), zeros16()
    c40, c41, c42 = zeros16(), zeros16(), zeros16()
    c50, c51, c52 = zeros16(), zeros16(), zeros16()
    c60, c61, c62 = zeros16(), zeros16(), zeros16()
    c70, c71, c72 = zeros16(), zeros16(), zeros16()
    for k in range(K):
        p = b_off + k * ldb
        f = p + ahead
        prefetch(b, f), prefetch(b, f + WIDE), prefetch(b, f + 2 * WIDE)
        prefetch(b, f + PANEL - 1)
        b0, b1, b2 = load16(b, p), load16(b, p + WIDE), load16(b, p + 2 * WIDE)
        q = a_off + k * a_ks
        c00, c01, c02 = _row(broadcast16(a, q), b0, b1, b2, c00, c01, c02, vectors)
        c10, c11, c12 = _row(broadcast16(a, q + a_rs), b0, b1, b2, c10, c11, c12, vectors)
        c20, c21, c22 = _row(broadcast16(a, q + 2 * a_rs), b0, b1, b2, c20, c21, c22, vectors)
        c30, c31, c32 = _row(broadcast16(a, q + 3 * a_rs), b0, b1, b2, c30, c31, c32, vectors)
        c40, c41, c42 = _row(broadcast16(a, q + 4 * a_rs), b0, b1, b2, c40, c41, c42, vectors)
        c50, c51, c52 = _row(broadcast16(a, q + 5 * a_rs), b0, b1, b2, c50, c51, c52, vectors)
        c60, c61, c62 = _row(broadcast16(a, q + 6 * a_rs), b0, b1, b2, c60, c61, c62, vectors)
        c70, c71, c72 = _row(broadcast16(a, q + 7 * a_rs), b0, b1, b2, c70, c71, c72, vectors)
    _store_row(c, c_off, c00, c01, c02)
    _store_row(c, c_off + ldc, c10, c11, c12)
    _store_row(c, c_off + 2 * ldc, c20, c21, c22)
    _store_row(c, c_off + 3 * ldc, c30, c31, c32)
    _store_row(c, c_off + 4 * ldc, c40, c41, c42)
    _store_row(c, c_off + 5 * ldc, c50, c51, c52)
    _store_row(c, c_off + 6 * ldc, c60, c61, c62)
    _store_row(c, c_off + 7 * ldc, c70, c71, c72)


@numba.njit(inline="always", error_model="numpy")
def _tile(a, a_off, a_rs, a_ks, panel, K, c, c_off, ldc, columns=PANEL, b_off=0, ldb=PANEL,
          ahead=PREFETCH_ROWS * PANEL):
    # The tile for the first ``columns`` columns of the panel, in as few vectors as hold
    # them: one copy of the loop per vector count, each with its count a constant. A packed
    # panel by default; B's own columns with ``b_off``, ``ldb``, ``ahead`` given.
    if columns > 2 * WIDE:
        _tile_of(a, a_off, a_rs, a_ks, panel, b_off, ldb, ahead, K, c, c_off, ldc, 3)
    elif columns > WIDE:
        _tile_of(a, a_off, a_rs, a_ks, panel, b_off, ldb, ahead, K, c, c_off, ldc, 2)
    else:
        _tile_of(a, a_off, a_rs, a_ks, panel, b_off, ldb, ahead, K, c, c_off, ldc, 1)


@_jit
def _pack(B, j, panel):
    # panel[k PANEL + q] = B[k, j + q] for every row k of B, q < PANEL (0 past B's columns).
    K, N = B.shape
    ld = B.strides[0] // B.itemsize
    width = min(PANEL, N - j)
    if width == PANEL:
        for k in range(K):
            s, d = k * ld + j, k * PANEL
            store(panel, d, load16(B, s))
            store(panel, d + WIDE, load16(B, s + WIDE))
            store(panel, d + 2 * WIDE, load16(B, s + 2 * WIDE))
    else:
        for k in range(K):
            for q in range(PANEL):
                panel[k * PANEL + q] = B[k, j + q] if q < width else np.float32(0.0)


@_jit
def _pack_transposed(D, i, panel):
    # panel[k PANEL + q] = D[i + q, k] for every column k of D, q < PANEL (0 past D's rows).
    # In blocks of 64 columns of D, so that the block's rows of the panel stay in L1.
    M, K = D.shape
    rows = min(PANEL, M - i)
    for k0 in range(0, K, 64):
        k1 = min(k0 + 64, K)
        for q in range(PANEL):
            if q < rows:
                row = D[i + q]
                for k in range(k0, k1):
                    panel[k * PANEL + q] = row[k]
            else:
                for k in range(k0, k1):
                    panel[k * PANEL + q] = np.float32(0.0)


@numba.njit(inline="always")
def panels(n):
    """Panels that cover ``n`` columns."""
    return (n + PANEL - 1) // PANEL


@numba.njit(inline="always")
def row_tiles(n):
    """Row tiles that cover ``n`` rows (``n >= TILE_ROWS``)."""
    return (n + TILE_ROWS - 1) // TILE_ROWS


# -- C = A B -----------------------------------------------------------------------------


@_jit
def _matmul_panels(A, B, C, panel, edge, first, stop):
    # Tiles ``first`` to ``stop - 1`` of C = A B, numbered panel by panel (tile t of panel p
    # is p * row_tiles(M) + t), so that lanes share out tiles evenly, not panels.
    M, K = A.shape
    N = C.shape[1]
    size = A.itemsize
    lda, ldb, ldc = A.strides[0] // size, B.strides[0] // size, C.strides[0] // size
    T = row_tiles(M)
    packed = -1
    for w in range(first, stop):
        p, t = w // T, w % T
        j = p * PANEL
        width = min(PANEL, N - j)
        i = min(t * TILE_ROWS, M - TILE_ROWS)
        if width == PANEL and M <= IN_PLACE_MAX_ROWS:  # same sums, read from B itself
            _tile(A, i * lda, lda, 1, B, K, C, i * ldc + j, ldc, PANEL, j, ldb,
                  IN_PLACE_PREFETCH_ROWS * ldb)
            continue
        if p != packed:
            _pack(B, j, panel)
            packed = p
        if width == PANEL:
            _tile(A, i * lda, lda, 1, panel, K, C, i * ldc + j, ldc)
        else:
            _tile(A, i * lda, lda, 1, panel, K, edge, 0, PANEL, width)
            for r in range(TILE_ROWS):
                for q in range(width):
                    C[i + r, j + q] = edge[r * PANEL + q]


@_parallel
def _matmul_lanes(A, B, C, scratch, lanes):
    n = panels(C.shape[1]) * row_tiles(A.shape[0])
    K = A.shape[1]
    for lane in numba.prange(lanes):
        before = denormals.flush()  # each lane's thread, as the session's (denormals.py)
        _matmul_panels(A, B, C, scratch[lane, :K * PANEL], scratch[lane, K * PANEL:],
                       lane * n // lanes, (lane + 1) * n // lanes)
        denormals.restore(before)


def matmul_scratch_size(K):
    """Floats of one lane's scratch for ``matmul`` with inner dimension ``K``."""
    return K * PANEL + TILE_ROWS * PANEL


def matmul(A, B, C, scratch, lanes):
    """``C = A @ B`` (float32, A (M, K) with M >= 8, B (K, N), C (M, N), rows contiguous) on
    ``lanes`` threads; ``scratch``: (lanes or more, :func:`matmul_scratch_size`) float32."""
    if lanes == 1:
        K = A.shape[1]
        _matmul_panels(A, B, C, scratch[0, :K * PANEL], scratch[0, K * PANEL:], 0,
                       panels(C.shape[1]) * row_tiles(A.shape[0]))
    else:
        _matmul_lanes(A, B, C, scratch, lanes)


# -- C = D W^T ---------------------------------------------------------------------------


@_jit
def _matmul_nt_panels(D, W, C, packed, edge, first, stop):
    # Rows first*TILE_ROWS.. of W (columns of C) against every panel of D^T in ``packed``.
    M, K = D.shape
    n = W.shape[0]
    ldw = W.strides[0] // W.itemsize
    for t in range(first, stop):
        i = min(t * TILE_ROWS, n - TILE_ROWS)
        for p in range(panels(M)):
            b = p * PANEL
            rows = min(PANEL, M - b)
            _tile(W, i * ldw, ldw, 1, packed[p], K, edge, 0, PANEL, rows)
            for q in range(rows):
                out = C[b + q]
                for r in range(TILE_ROWS):
                    out[i + r] = edge[r * PANEL + q]


@_parallel
def _pack_transposed_panels_lanes(D, packed):
    # A panel per thread: unlike the plain copy, the transposing one took long enough to
    # gain from it (one-off timing, 128 x 1000 delta: 0.06 against 0.08 ms).
    for p in numba.prange(packed.shape[0]):
        _pack_transposed(D, p * PANEL, packed[p])


@_parallel
def _matmul_nt_lanes(D, W, C, packed, edges, lanes):
    n = row_tiles(W.shape[0])
    for lane in numba.prange(lanes):
        before = denormals.flush()
        _matmul_nt_panels(D, W, C, packed, edges[lane], lane * n // lanes,
                          (lane + 1) * n // lanes)
        denormals.restore(before)


@_jit
def _pack_transposed_panels(D, packed):
    for p in range(packed.shape[0]):
        _pack_transposed(D, p * PANEL, packed[p])


def matmul_nt(D, W, C, packed, edges, lanes):
    """``C = D @ W.T`` (float32, D (M, K), W (N, K) with N >= 8, C (M, N)) on ``lanes``
    threads; ``packed``: (panels(M), K*PANEL) float32, ``edges``: (lanes or more,
    TILE_ROWS*PANEL) float32."""
    if lanes == 1:
        _pack_transposed_panels(D, packed)
        _matmul_nt_panels(D, W, C, packed, edges[0], 0, row_tiles(W.shape[0]))
    else:
        _pack_transposed_panels_lanes(D, packed)
        _matmul_nt_lanes(D, W, C, packed, edges, lanes)


# -- G = A^T delta, applied to P and V -----------------------------------------------------


@_jit
def _update_tiles(A, packed, P, V, lr, momentum, decay, scale, scratch, first, stop):
    # Row tiles ``first`` to ``stop - 1`` of P, UPDATE_TILES at a time: their rows of G
    # against each panel of delta in turn (a panel, read from L2, serves them all from L1)
    # into ``g`` (UPDATE_TILES * 8 rows of panels(m) * PANEL), then the SGD step of
    # cpu._sgd_kernel along those rows of P and V, except rows an earlier tile updated.
    # Each tile's 8 columns of A are first copied k by k into ``at`` (8 K floats per tile):
    # read in place, every k of the tile's loop would load a new row of A, thousands of
    # floats on, which cost the loop about a tenth of its speed (docs/performance.md).
    K, n = A.shape
    m = P.shape[1]
    lda = A.strides[0] // A.itemsize
    ldg = panels(m) * PANEL
    g, at = scratch[:UPDATE_TILES * TILE_ROWS * ldg], scratch[UPDATE_TILES * TILE_ROWS * ldg:]
    t_ = P.dtype.type
    lr, momentum, decay, scale = t_(lr), t_(momentum), t_(decay), t_(scale)
    for group in range(first, stop, UPDATE_TILES):
        members = range(group, min(group + UPDATE_TILES, stop))
        for t in members:
            i, o = min(t * TILE_ROWS, n - TILE_ROWS), (t - group) * TILE_ROWS * K
            for k in range(K):
                store(at, o + k * TILE_ROWS, load(A, k * lda + i))
        for p in range(panels(m)):
            for t in members:
                _tile(at, (t - group) * TILE_ROWS * K, 1, TILE_ROWS, packed[p], K, g,
                      (t - group) * TILE_ROWS * ldg + p * PANEL, ldg, m - p * PANEL)
        for t in members:
            i = min(t * TILE_ROWS, n - TILE_ROWS)
            for r in range(t * TILE_ROWS - i, TILE_ROWS):  # rows before: the previous tile's
                o = ((t - group) * TILE_ROWS + r) * ldg
                prow, vrow, grow = P[i + r], V[i + r], g[o:o + m]
                for q in range(m):
                    v = momentum * vrow[q] + lr * (scale * grow[q] + decay * prow[q])
                    vrow[q] = v
                    prow[q] = prow[q] - v


@_jit
def _pack_panels(B, packed):
    for p in range(packed.shape[0]):
        _pack(B, p * PANEL, packed[p])


@_parallel
def _update_lanes(A, packed, P, V, lr, momentum, decay, scale, g, lanes):
    n = row_tiles(P.shape[0])
    for lane in numba.prange(lanes):
        before = denormals.flush()
        _update_tiles(A, packed, P, V, lr, momentum, decay, scale, g[lane],
                      lane * n // lanes, (lane + 1) * n // lanes)
        denormals.restore(before)


def update_scratch_size(K, m):
    """Floats of one lane's scratch for ``sgd_update_product`` with ``K`` batch rows and
    ``m`` output columns."""
    return UPDATE_TILES * TILE_ROWS * (panels(m) * PANEL + K)


def sgd_update_product(A, delta, P, V, lr, momentum, decay, scale, packed, g, lanes):
    """The SGD step of ``P``, ``V`` with ``G = A.T @ delta`` (float32; A (K, n) with n >= 8,
    delta (K, m), P and V (n, m) C-contiguous) on ``lanes`` threads; ``packed``:
    (panels(m), K*PANEL) float32, ``g``: (lanes or more, :func:`update_scratch_size` (K, m))
    float32."""
    args = (A, packed, P, V, float(lr), float(momentum), float(decay), float(scale))
    _pack_panels(delta, packed)  # serial: a copy of delta, a few microseconds
    if lanes == 1:
        _update_tiles(*args, g[0], 0, row_tiles(P.shape[0]))
    else:
        _update_lanes(*args, g, lanes)
